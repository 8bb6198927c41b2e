"""Distillation benchmark: the whole pipeline from the label cache, and the model's figures.

First the grammar pool is labelled once through the real ``openai`` SDK against the fake OpenAI
server on 127.0.0.1 (answering with the grammar's labels, as a perfect teacher would), which
fills the cache. Then the timed run: label (every answer from the cache), dataset, train (the
full `TrainConfig`), quantize, export, verify bit for bit in tflite-micro on every test row,
measure the arena, write and verify the signed bundle. Repeated for each ``--seeds`` value.

Printed per seed: held-out accuracy per head fp32 and int8, model and arena bytes, the pipeline's
wall and CPU seconds; then each target with PASS/FAIL:
intent >= 95 %, route >= 98 %, confirm >= 98 % (fp32); int8 within 0.5 points of fp32 on every
head; model <= 64 KB; arena <= 8 KB; pipeline from cache <= 60 s.

Run: ``.venv/bin/python bench/distill.py [--seeds 1,2,3] [--per-template 60]``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from microclaw.agent.providers.openai import OpenAIProvider
from microclaw.distill import bundle, pipeline
from microclaw.distill.report import MAX_ARENA_BYTES, MAX_INT8_DROP, MAX_MODEL_BYTES, TARGETS
from microclaw.distill.train import TrainConfig
from tests.integration.agent.fakes import Call, FakeOpenAI, Step

PIPELINE_BUDGET_S = 60.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def fill_cache(paths: pipeline.Paths) -> tuple[float, int]:
    grammar, _ = pipeline.read_pool(paths)
    labels = {u.text: u.expected for u in grammar}

    def answer(request: dict[str, Any]) -> Step:
        items = []
        for line in request["messages"][-1]["content"].splitlines():
            index, _, quoted = line.partition(". ")
            items.append({"index": int(index), **labels[json.loads(quoted)].model_dump()})
        return Step(calls=[Call("label_utterances", {"labels": items})])

    with FakeOpenAI() as server:
        server.responder = answer
        provider = OpenAIProvider(api_key="k", model="gpt-teacher", base_url=server.base_url, timeout_s=30)
        start = time.perf_counter()
        stats = pipeline.label(paths, provider, batch_size=25)
        return time.perf_counter() - start, stats.requests


def timed_run(paths: pipeline.Paths, seed: int, key: Ed25519PrivateKey, provider: Any) -> dict[str, Any]:
    wall, cpu = time.perf_counter(), _cpu()
    stats = pipeline.label(paths, provider)
    assert stats.requests == 0, "the timed run must label from the cache"
    pipeline.build_dataset(paths)
    metrics = pipeline.train_model(paths, TrainConfig(seed=seed))
    version = f"1.0.{seed}"
    pipeline.make_bundle(paths, version=version, board="esp32s3-box3", key=key)
    bundle.verify_bundle(paths.bundle / version, key.public_key())
    metrics["pipeline_wall_s"] = time.perf_counter() - wall
    metrics["pipeline_cpu_s"] = _cpu() - cpu
    return metrics


def checks(m: dict[str, Any]) -> list[tuple[str, bool]]:
    out = [(f"{h} fp32 {m['fp32'][h]:.2f} % >= {t:g} %", m["fp32"][h] >= t) for h, t in TARGETS.items()]
    out += [
        (
            f"{h} int8 {m['int8'][h]:.2f} % within {MAX_INT8_DROP} of fp32",
            m["fp32"][h] - m["int8"][h] <= MAX_INT8_DROP,
        )
        for h in TARGETS
    ]
    size, arena = m["sizes"]["tflite_bytes"], m["sizes"]["arena_bytes"]
    out.append((f"model {size} B <= {MAX_MODEL_BYTES} B", size <= MAX_MODEL_BYTES))
    out.append((f"arena {arena} B <= {MAX_ARENA_BYTES} B (measured on x86-64)", arena <= MAX_ARENA_BYTES))
    out.append(
        (
            f"pipeline from cache {m['pipeline_wall_s']:.1f} s <= {PIPELINE_BUDGET_S:g} s",
            m["pipeline_wall_s"] <= PIPELINE_BUDGET_S,
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--per-template", type=int, default=60)
    args = parser.parse_args()
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory(prefix="distill-bench-") as tmp:
        paths = pipeline.Paths(Path(tmp))
        pipeline.write_pool(paths, seed=0, per_template=args.per_template)
        cold_s, requests = fill_cache(paths)
        print(f"cold labelling through the openai SDK + fake server: {requests} requests, {cold_s:.1f} s")
        offline = OpenAIProvider(api_key="k", base_url="http://127.0.0.1:9/v1", timeout_s=1, max_retries=0)
        failed = 0
        for seed in (int(s) for s in args.seeds.split(",")):
            m = timed_run(paths, seed, key, offline)
            print(
                f"\nseed {seed}: {m['train_records']} train / {m['test_records']} test records;"
                f" fp32 {m['fp32']}  int8 {m['int8']}"
            )
            print(
                f"  model {m['sizes']['tflite_bytes']} B (.tflite), {m['sizes']['mcm_bytes']} B (.mcm),"
                f" {m['sizes']['parameters']} parameters, arena {m['sizes']['arena_bytes']} B;"
                f" pipeline {m['pipeline_wall_s']:.1f} s wall, {m['pipeline_cpu_s']:.1f} s CPU"
            )
            for text, ok in checks(m):
                print(f"  {'PASS' if ok else 'FAIL'}  {text}")
                failed += not ok
        print(f"\n{failed} target check(s) failed")


if __name__ == "__main__":
    main()
