"""Labelling through the configured provider (the teacher), with a cache by text hash.

The teacher gets numbered utterances and must call the ``label_utterances`` tool (its JSON
schema: `labels.tool_schema`); a provider that answers with plain text may give the same JSON
object as its text (structured output). Every item is validated with pydantic (`BatchItem`):
a malformed item (unknown class, inconsistent route, extra key, wrong or repeated index) is
rejected and counted, and the utterances still without a valid label are asked again, up to
``max_attempts`` times; what is left is counted as failed and stays unlabelled. Valid labels
go to the cache at once, so an interrupted run resumes where it stopped.

The cache (SQLite, private file) is keyed by the sha256 of the whitespace-normalised text and
the prompt version; each row records the teacher model (``provider:model``) and the prompt
version. `PROMPT_VERSION` changes whenever the prompt or the label set changes, so old labels
are not reused for a new question.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from microclaw.agent.providers.base import BaseProvider, ChatTurn
from microclaw.distill.labels import (
    CONFIRMS,
    INTENTS,
    LABEL_SET_VERSION,
    ROUTE_OF,
    BatchItem,
    RouterLabel,
    tool_schema,
)
from microclaw.private import private_sqlite

PROMPT_VERSION = f"p1/{LABEL_SET_VERSION}"

SYSTEM_PROMPT = f"""You label short spoken requests to a voice terminal for training a small on-device router.
For every numbered utterance give:
- intent, one of: {", ".join(INTENTS)}.
  timer_set/timer_cancel/timer_query: kitchen timers on the terminal; volume_up/volume_down/volume_set/mute:
  the terminal's speaker; stop: stop what the terminal is doing (speech, alarm, sound); time: the local
  time now; confirm: a bare answer to a yes/no question the terminal asked; agent: everything else
  (messages, email, calendar, reminders, search, smart home, other places' time, anything needing the
  assistant or the internet).
- route: {", ".join(f"{k} -> {v}" for k, v in ROUTE_OF.items())}.
- confirm: one of {", ".join(CONFIRMS)}; yes/no/cancel only when intent is confirm, otherwise none.
Call the label_utterances tool once with one label per utterance, using its number as index."""


def text_key(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


@dataclass(frozen=True)
class Label:
    text: str
    label: RouterLabel
    teacher: str
    prompt_version: str


@dataclass
class LabelStats:
    requested: int = 0
    cached: int = 0
    labelled: int = 0
    requests: int = 0
    rejected: int = 0  # malformed items (and unusable answers) seen
    retried: int = 0  # utterances asked again after a malformed or missing label
    failed: int = 0  # utterances left without a label after max_attempts
    reasons: dict[str, int] = field(default_factory=dict)

    def merge(self, other: LabelStats) -> None:
        """Add ``other``'s counts (not ``requested``/``cached``, which describe the whole call)."""
        for name in ("labelled", "requests", "rejected", "retried", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n

    def reject(self, reason: str, count: int = 1) -> None:
        self.rejected += count
        self.reasons[reason] = self.reasons.get(reason, 0) + count


class LabelCache:
    """Labels by (text hash, prompt version) in a private SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        private_sqlite(path)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS labels (key TEXT NOT NULL, prompt_version TEXT NOT NULL,"
                " text TEXT NOT NULL, intent TEXT NOT NULL, route TEXT NOT NULL, confirm TEXT NOT NULL,"
                " teacher TEXT NOT NULL, created_ms INTEGER NOT NULL, PRIMARY KEY (key, prompt_version))"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as db, db:
            yield db

    def get(self, texts: Iterable[str], prompt_version: str) -> dict[str, Label]:
        """Cached labels of ``texts`` (by text), for this prompt version."""
        wanted: dict[str, list[str]] = {}
        for t in texts:
            wanted.setdefault(text_key(t), []).append(t)
        out: dict[str, Label] = {}
        with self._connect() as db:
            rows = db.execute(
                "SELECT key, intent, route, confirm, teacher FROM labels WHERE prompt_version = ?",
                (prompt_version,),
            ).fetchall()
        for key, intent, route, confirm, teacher in rows:
            label = RouterLabel(intent=intent, route=route, confirm=confirm)
            for text in wanted.get(key, ()):
                out[text] = Label(text, label, teacher, prompt_version)
        return out

    def put(self, labels: Iterable[Label]) -> None:
        now = int(time.time() * 1000)
        with self._connect() as db:
            db.executemany(
                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        text_key(x.text),
                        x.prompt_version,
                        x.text,
                        x.label.intent,
                        x.label.route,
                        x.label.confirm,
                        x.teacher,
                        now,
                    )
                    for x in labels
                ],
            )

    def count(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM labels").fetchone()[0])


def teacher_name(provider: BaseProvider) -> str:
    return f"{provider.name}:{getattr(provider, 'model', '') or '?'}"


def _answer(completion: Any) -> Any:
    """The tool input of the ``label_utterances`` call, else the text parsed as JSON, else None."""
    for call in completion.tool_calls:
        if call.name == "label_utterances" and call.error is None:
            return call.arguments
    if completion.text:
        try:
            return json.loads(completion.text)
        except ValueError:
            return None
    return None


def label_texts(
    texts: list[str],
    provider: BaseProvider,
    cache: LabelCache,
    *,
    batch_size: int = 25,
    max_attempts: int = 3,
    concurrency: int = 4,
    prompt_version: str = PROMPT_VERSION,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, Label], LabelStats]:
    """Labels for ``texts`` (distinct), from the cache or the teacher, ``concurrency`` batches in
    flight (the SDK clients are thread-safe). Valid labels are cached as each answer arrives; the
    first provider error (after the provider's own retries) stops the batches not yet started
    and propagates once the running ones are done and cached."""
    unique = list(dict.fromkeys(texts))
    stats = LabelStats(requested=len(unique))
    found = cache.get(unique, prompt_version)
    stats.cached = len(found)
    if progress:
        progress(len(found))
    pending = [t for t in unique if t not in found]
    teacher = teacher_name(provider)
    schema = tool_schema()
    lock = threading.Lock()

    def record(new: list[Label], local: LabelStats) -> None:
        with lock:
            cache.put(new)
            for item in new:
                found[item.text] = item
            stats.merge(local)
            stats.labelled += len(new)
            if progress and new:
                progress(len(new))

    def work(batch: list[str]) -> None:
        for attempt in range(max_attempts):
            local = LabelStats(retried=len(batch) if attempt else 0)
            got = _ask(provider, batch, schema, local)
            record([Label(batch[i], label, teacher, prompt_version) for i, label in got.items()], local)
            batch = [t for i, t in enumerate(batch) if i not in got]
            if not batch:
                return
        with lock:
            stats.failed += len(batch)

    batches = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
    if concurrency <= 1 or len(batches) <= 1:
        for batch in batches:
            work(batch)
        return found, stats
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="distill-teacher") as pool:
        futures = [pool.submit(work, batch) for batch in batches]
        error: BaseException | None = None
        for future in as_completed(futures):
            exc = None if future.cancelled() else future.exception()
            if exc is not None and error is None:
                error = exc
                for other in futures:
                    other.cancel()
    if error is not None:
        raise error
    return found, stats


def _ask(
    provider: BaseProvider, batch: list[str], schema: dict[str, Any], stats: LabelStats
) -> dict[int, RouterLabel]:
    """One request for ``batch``: index -> valid label (malformed items counted in ``stats``)."""
    numbered = "\n".join(f"{i}. {json.dumps(text)}" for i, text in enumerate(batch))
    stats.requests += 1
    completion = provider.complete(SYSTEM_PROMPT, [ChatTurn("user", numbered)], [schema])
    answer = _answer(completion)
    items = answer.get("labels") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        stats.reject("no label_utterances call or JSON object with labels")
        return {}
    got: dict[int, RouterLabel] = {}
    for raw in items:
        try:
            item = BatchItem.model_validate(raw)
        except ValidationError as exc:
            stats.reject(exc.errors()[0]["type"] if exc.errors() else "invalid")
            continue
        if not 0 <= item.index < len(batch) or item.index in got:
            stats.reject("index out of range or repeated")
            continue
        got[item.index] = RouterLabel(intent=item.intent, route=item.route, confirm=item.confirm)
    return got
