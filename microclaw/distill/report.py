"""``microclaw distill report``: per-head accuracy fp32 vs int8, confusion matrices, sizes, the
dataset card's counts, and whether the targets hold. Reads ``model/metrics.json`` and
``dataset/card.json``; renders with rich.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table

from microclaw.distill.labels import HEADS

TARGETS = {"intent": 95.0, "route": 98.0, "confirm": 98.0}
MAX_INT8_DROP = 0.5
MAX_MODEL_BYTES = 64 * 1024
MAX_ARENA_BYTES = 8 * 1024


def target_failures(metrics: dict[str, Any]) -> list[str]:
    """Targets the model misses (empty: all met)."""
    out = []
    for head, floor in TARGETS.items():
        if metrics["fp32"][head] < floor:
            out.append(f"{head} fp32 {metrics['fp32'][head]} % < {floor} %")
        if metrics["fp32"][head] - metrics["int8"][head] > MAX_INT8_DROP:
            out.append(
                f"{head} int8 {metrics['int8'][head]} % is more than {MAX_INT8_DROP} points below fp32"
            )
    sizes = metrics["sizes"]
    if sizes["tflite_bytes"] > MAX_MODEL_BYTES:
        out.append(f"model {sizes['tflite_bytes']} bytes > {MAX_MODEL_BYTES}")
    if sizes["arena_bytes"] > MAX_ARENA_BYTES:
        out.append(f"arena {sizes['arena_bytes']} bytes > {MAX_ARENA_BYTES}")
    return out


def render(metrics: dict[str, Any], card: dict[str, Any] | None) -> Group:
    parts: list[Any] = []
    acc = Table(title=f"held-out accuracy ({metrics['test_records']} test, {metrics['train_records']} train)")
    acc.add_column("head")
    acc.add_column("fp32 %", justify="right")
    acc.add_column("int8 %", justify="right")
    acc.add_column("target %", justify="right")
    for head in HEADS:
        acc.add_row(
            head, f"{metrics['fp32'][head]:.2f}", f"{metrics['int8'][head]:.2f}", f">= {TARGETS[head]:g}"
        )
    parts.append(acc)
    for head, names in HEADS.items():
        confusion = metrics["confusion_int8"][head]
        table = Table(title=f"{head} confusion (int8; rows: teacher label, columns: model)")
        table.add_column("")
        for name in names:
            table.add_column(name[:8], justify="right")
        for want in names:
            row = confusion.get(want, {})
            table.add_row(want, *(str(row.get(got, "")) for got in names))
        parts.append(table)
    sizes = Table(title="sizes")
    sizes.add_column("what")
    sizes.add_column("bytes", justify="right")
    for key, value in metrics["sizes"].items():
        sizes.add_row(key, str(value))
    parts.append(sizes)
    if card is not None:
        counts = Table(title="dataset card: records per split/source")
        counts.add_column("split/source")
        counts.add_column("records", justify="right")
        for key, value in card["per_split_source"].items():
            counts.add_row(key, str(value))
        parts.append(counts)
    failures = target_failures(metrics)
    parts.append("targets: all met" if not failures else "targets missed: " + "; ".join(failures))
    return Group(*parts)
