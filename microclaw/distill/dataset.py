"""The dataset: grammar utterances plus opt-in traces, labelled by the teacher; dedup, split, card.

Each record: ``text``, the teacher's ``intent``/``route``/``confirm``, ``source`` (``grammar`` or
``trace``), ``split`` (``train`` or ``test``), ``teacher`` and ``prompt_version``, and for grammar
utterances the grammar's ``expected`` intent. Rules:

- dedup by normalised text (`teacher.text_key`); a text in both splits stays only in train, so the
  test split holds only phrasings the model never saw;
- grammar utterances keep the grammar's split (held-out templates and slot values are test);
  traces are split per teacher intent (stratified), deterministically by text hash, `TRACE_TEST`
  of each intent to test;
- utterances the teacher could not label are left out (and counted in the card).

The card (``card.json``) counts records per split x source x label of every head, the teacher's
disagreements with the grammar, and the labelling statistics. Output is sorted, so the same
inputs give the same files.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from microclaw.distill.grammar import Utterance
from microclaw.distill.teacher import Label, LabelStats, text_key

TRACE_TEST = 0.2


@dataclass(frozen=True)
class Record:
    text: str
    intent: str
    route: str
    confirm: str
    source: str
    split: str
    teacher: str
    prompt_version: str
    expected: str | None = None


def build(
    grammar: list[Utterance], traces: list[str], labels: dict[str, Label]
) -> tuple[list[Record], dict[str, Any]]:
    """Records and the card's counts (labelling statistics are added by the caller)."""
    records: dict[str, Record] = {}
    unlabelled = Counter[str]()

    def add(text: str, source: str, split: str, expected: str | None) -> None:
        key = text_key(text)
        label = labels.get(text)
        if label is None:
            unlabelled[source] += 1
            return
        old = records.get(key)
        if old is not None and (old.split == "train" or split == "test"):
            return  # first one wins; a train copy always wins over a test copy
        records[key] = Record(
            text=" ".join(text.split()),
            intent=label.label.intent,
            route=label.label.route,
            confirm=label.label.confirm,
            source=source,
            split=split,
            teacher=label.teacher,
            prompt_version=label.prompt_version,
            expected=expected,
        )

    for u in sorted(grammar, key=lambda u: (u.split != "train", u.text)):
        add(u.text, "grammar", u.split, u.expected.intent)
    by_intent: dict[str, list[str]] = defaultdict(list)
    for text in traces:
        label = labels.get(text)
        if label is None:
            unlabelled["trace"] += 1
            continue
        by_intent[label.label.intent].append(text)
    for texts in by_intent.values():
        ordered = sorted(set(texts), key=text_key)
        n_test = int(len(ordered) * TRACE_TEST)
        for i, text in enumerate(ordered):
            add(text, "trace", "test" if i < n_test else "train", None)
    out = sorted(records.values(), key=lambda r: (r.split, r.source, r.text))
    return out, card(out, unlabelled)


def card(records: list[Record], unlabelled: Counter[str]) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    for head in ("intent", "route", "confirm"):
        table: dict[str, dict[str, int]] = defaultdict(dict)
        for (split, source, value), n in sorted(
            Counter((r.split, r.source, getattr(r, head)) for r in records).items()
        ):
            table[f"{split}/{source}"][value] = n
        counts[head] = dict(table)
    disagreements = Counter(
        f"{r.expected}->{r.intent}" for r in records if r.expected is not None and r.expected != r.intent
    )
    return {
        "records": len(records),
        "per_split_source": dict(sorted(Counter(f"{r.split}/{r.source}" for r in records).items())),
        "counts": counts,
        "teacher_vs_grammar_disagreements": dict(sorted(disagreements.items())),
        "unlabelled": dict(sorted(unlabelled.items())),
        "teachers": dict(sorted(Counter(f"{r.teacher} ({r.prompt_version})" for r in records).items())),
    }


def write(
    directory: Path, records: list[Record], card_data: dict[str, Any], stats: LabelStats | None
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "dataset.jsonl").open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(asdict(record), sort_keys=True) + "\n")
    full = dict(card_data)
    if stats is not None:
        full["labelling"] = asdict(stats)
    (directory / "card.json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read(directory: Path) -> list[Record]:
    path = directory / "dataset.jsonl"
    with path.open(encoding="utf-8") as handle:
        return [Record(**json.loads(line)) for line in handle if line.strip()]
