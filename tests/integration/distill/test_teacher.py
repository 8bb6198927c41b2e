"""Teacher labelling through the real anthropic/openai SDKs against wire-level fakes on
127.0.0.1: valid labels, malformed ones (rejected, retried, counted), the cache by text hash,
resuming after a provider error, and `microclaw distill all` end to end with the OpenAI fake as
teacher (published as an OTA model release)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microclaw.agent.providers.anthropic import AnthropicProvider
from microclaw.agent.providers.base import BaseProvider
from microclaw.agent.providers.openai import OpenAIProvider
from microclaw.distill.grammar import generate
from microclaw.distill.teacher import PROMPT_VERSION, LabelCache, label_texts
from microclaw.errors import PermanentProviderError
from tests.conftest import base_env
from tests.integration.agent.fakes import Call, Fail, FakeAnthropic, FakeOpenAI, Step

GRAMMAR = {u.text: u.expected for u in generate(seed=0, per_template=5)}
TEXTS = sorted(GRAMMAR)[:30]


def _numbered(request: dict[str, Any]) -> list[str]:
    """The utterances of one labelling request, by index (either vendor's wire format)."""
    content = request["messages"][-1]["content"]
    if isinstance(content, list):
        content = "".join(block.get("text", "") for block in content)
    texts = []
    for line in content.splitlines():
        index, _, quoted = line.partition(". ")
        assert int(index) == len(texts)
        texts.append(json.loads(quoted))
    return texts


def _valid(texts: list[str]) -> list[dict[str, Any]]:
    return [{"index": i, **GRAMMAR[t].model_dump()} for i, t in enumerate(texts)]


def oracle(request: dict[str, Any]) -> Step:
    return Step(calls=[Call("label_utterances", {"labels": _valid(_numbered(request))})])


@pytest.fixture(params=["anthropic", "openai"])
def teacher(request: pytest.FixtureRequest) -> Iterator[tuple[FakeAnthropic | FakeOpenAI, BaseProvider]]:
    if request.param == "anthropic":
        server: FakeAnthropic | FakeOpenAI = FakeAnthropic().start()
        provider: BaseProvider = AnthropicProvider(
            api_key="k", model="claude-teacher", base_url=server.base_url, timeout_s=5, max_retries=0
        )
    else:
        server = FakeOpenAI().start()
        provider = OpenAIProvider(
            api_key="k", model="gpt-teacher", base_url=server.base_url, timeout_s=5, max_retries=0
        )
    try:
        yield server, provider
    finally:
        server.stop()


def test_valid_labels_are_cached_with_teacher_and_prompt_version(teacher, tmp_path: Path) -> None:
    server, provider = teacher
    server.responder = oracle
    cache = LabelCache(tmp_path / "labels.db")
    labels, stats = label_texts(TEXTS, provider, cache, batch_size=10)
    assert (stats.requests, stats.labelled, stats.rejected, stats.failed) == (3, 30, 0, 0)
    assert {t: labels[t].label for t in TEXTS} == {t: GRAMMAR[t] for t in TEXTS}
    model = "claude-teacher" if isinstance(server, FakeAnthropic) else "gpt-teacher"
    rows = (
        sqlite3.connect(tmp_path / "labels.db")
        .execute("SELECT teacher, prompt_version FROM labels")
        .fetchall()
    )
    assert set(rows) == {(f"{provider.name}:{model}", PROMPT_VERSION)} and len(rows) == 30
    sent = server.requests[0]
    if isinstance(server, FakeAnthropic):
        schema = sent["tools"][0]["input_schema"]
    else:
        schema = sent["tools"][0]["function"]["parameters"]
    assert schema["properties"]["labels"]["items"]["properties"]["intent"]["enum"][0] == "timer_set"
    # Again: everything from the cache, no request; a reworded prompt version asks again.
    _, again = label_texts([*TEXTS, " " + TEXTS[0] + "  "], provider, cache, batch_size=10)
    assert (again.cached, again.requests, len(server.requests)) == (31, 0, 3)
    _, new_prompt = label_texts(TEXTS[:5], provider, cache, prompt_version="p2/test")
    assert new_prompt.requests == 1 and new_prompt.cached == 0


def test_malformed_labels_are_rejected_retried_and_counted(teacher, tmp_path: Path) -> None:
    server, provider = teacher
    calls: list[int] = []

    def sloppy(request: dict[str, Any]) -> Step:
        texts = _numbered(request)
        calls.append(len(texts))
        if len(calls) > 1:
            return oracle(request)
        good = _valid(texts)
        bad = [
            {**good[0], "intent": "launch_rockets"},  # unknown class
            {**good[1], "route": "host" if good[1]["route"] != "host" else "device"},  # contradicts intent
            {**good[2], "mood": "happy"},  # extra key
            {**good[3], "confirm": "yes" if good[3]["intent"] != "confirm" else "none"},
            {key: value for key, value in good[4].items() if key != "route"},  # missing key
            {**good[5], "index": 99},  # no such utterance
            good[6],
            {**good[7], "index": 6},  # repeated index
        ]
        return Step(calls=[Call("label_utterances", {"labels": bad + good[8:]})])

    server.responder = sloppy
    cache = LabelCache(tmp_path / "labels.db")
    labels, stats = label_texts(TEXTS[:12], provider, cache, batch_size=12)
    assert stats.rejected == 7 and stats.reasons["index out of range or repeated"] == 2
    assert stats.retried == 7 and stats.failed == 0 and stats.labelled == 12
    assert calls == [12, 7]  # the second request asks only for the seven without a valid label
    assert {t: labels[t].label for t in TEXTS[:12]} == {t: GRAMMAR[t] for t in TEXTS[:12]}
    assert len(cache.get(TEXTS[:12], PROMPT_VERSION)) == 12


def test_unusable_answers_fail_after_max_attempts_and_cache_nothing(tmp_path: Path) -> None:
    answers: list[Step] = [
        Step(calls=[Call("label_utterances", '{"labels": [{"index": 0, "intent": "stop"')]),  # broken JSON
        Step(text="I think the first one is a timer."),  # prose, no tool call
        Step(calls=[Call("other_tool", {"labels": []})]),  # the wrong tool
    ]
    with FakeOpenAI() as server:
        server.add(*answers)
        provider = OpenAIProvider(api_key="k", base_url=server.base_url, timeout_s=5, max_retries=0)
        cache = LabelCache(tmp_path / "labels.db")
        labels, stats = label_texts(TEXTS[:3], provider, cache, max_attempts=3)
    assert labels == {} and stats.failed == 3 and stats.rejected == 3 and stats.requests == 3
    assert cache.count() == 0


def test_a_json_text_answer_counts_as_structured_output(tmp_path: Path) -> None:
    with FakeOpenAI() as server:
        server.responder = lambda request: Step(text=json.dumps({"labels": _valid(_numbered(request))}))
        provider = OpenAIProvider(api_key="k", base_url=server.base_url, timeout_s=5, max_retries=0)
        labels, stats = label_texts(TEXTS[:4], provider, LabelCache(tmp_path / "labels.db"))
    assert stats.labelled == 4 and stats.rejected == 0 and len(labels) == 4


def test_a_provider_error_keeps_what_was_labelled_and_a_rerun_resumes(tmp_path: Path) -> None:
    cache = LabelCache(tmp_path / "labels.db")
    with FakeAnthropic() as server:
        provider = AnthropicProvider(api_key="k", base_url=server.base_url, timeout_s=5, max_retries=0)
        state = {"n": 0}

        def flaky(request: dict[str, Any]) -> Step | Fail:
            state["n"] += 1
            return Fail(400, "bad request") if state["n"] == 2 else oracle(request)

        server.responder = flaky
        with pytest.raises(PermanentProviderError, match="bad request"):
            label_texts(TEXTS[:20], provider, cache, batch_size=10)
        assert cache.count() == 10
        _, stats = label_texts(TEXTS[:20], provider, cache, batch_size=10)
    assert (stats.cached, stats.labelled, stats.requests) == (10, 10, 1)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("microclaw")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=env["MICROCLAW_DATA_DIR"].rsplit("/", 1)[0],
    )


def test_distill_all_with_the_openai_fake_as_teacher_then_publish(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_file = tmp_path / "keys" / "ota.key"
    key_file.parent.mkdir(mode=0o700)
    key = Ed25519PrivateKey.generate()
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    everything = {u.text: u.expected for u in generate(seed=0, per_template=10)}

    def answer(request: dict[str, Any]) -> Step:
        texts = _numbered(request)
        return Step(
            calls=[
                Call(
                    "label_utterances",
                    {"labels": [{"index": i, **everything[t].model_dump()} for i, t in enumerate(texts)]},
                )
            ]
        )

    with FakeOpenAI() as server:
        server.responder = answer
        env = base_env(
            tmp_path,
            MICROCLAW_AGENT__PROVIDER="openai",
            MICROCLAW_AGENT__MODEL="gpt-teacher",
            MICROCLAW_AGENT__BASE_URL=server.base_url,
            OPENAI_API_KEY="k",
            MICROCLAW_OTA__KEY_FILE=str(key_file),
        )
        done = _cli(
            env,
            "distill",
            "all",
            "--per-template",
            "10",
            "--epochs",
            "10",
            "--batch-size",
            "50",
            "--version",
            "1.0.0",
            "--board",
            "box3",
            "--publish",
        )
        assert done.returncode == 0, done.stdout + done.stderr
        requests = len(server.requests)
    assert requests > 0 and "published: release 1" in done.stdout, done.stdout
    bundle_dir = tmp_path / "data" / "distill" / "bundle" / "1.0.0"
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["teacher"].startswith("openai:gpt-teacher") and manifest["board"] == "box3"
    report = _cli(env, "distill", "report")
    assert report.returncode == 0 and "held-out accuracy" in report.stdout and "confusion" in report.stdout
    # Labels come from the cache now: the server is gone, the labelling stage needs no request.
    again = _cli(env, "distill", "label", "--per-template", "10")
    assert again.returncode == 0 and "0 labelled in 0 request(s)" in again.stdout.replace("\n", " ")
    work = tmp_path / "data" / "distill"
    for private in (work / "labels.db", work / "pool.json", work, work / "dataset", work / "model"):
        assert os.stat(private).st_mode & 0o077 == 0, private


def test_label_without_a_configured_teacher_says_what_to_set(tmp_path: Path) -> None:
    done = _cli(base_env(tmp_path), "distill", "label", "--per-template", "2")
    assert done.returncode == 1 and "no teacher model" in done.stderr and "Traceback" not in done.stderr
    later = _cli(base_env(tmp_path), "distill", "train")
    assert later.returncode == 1 and "missing" in later.stderr and "Traceback" not in later.stderr
