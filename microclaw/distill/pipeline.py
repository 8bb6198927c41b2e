"""The distillation stages in order, over one work directory (default ``<data_dir>/distill``).

``pool.json`` (what to label: grammar utterances with their split, scrubbed traces) ->
``labels.db`` (the teacher's cache) -> ``dataset/`` (records and card) -> ``model/``
(``model.tflite``, ``model.mcm``, ``metrics.json``, ``golden.json``) -> ``bundle/`` (signed).
Each stage reads the previous one's files, so stages can be re-run one at a time; ``microclaw
distill all`` runs them all. The work directory and its subdirectories are private (0700): the
pool and the dataset may hold (scrubbed) traces. ``progress(stage, done, total)`` reports each
stage's advance. numpy runs on one BLAS thread (threadpoolctl): on two cores a second thread made
training ten times slower, and one thread keeps the arithmetic order, so the bytes, the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microclaw.distill import dataset as ds
from microclaw.distill.features import buckets
from microclaw.distill.grammar import GrammarOracle, Utterance, generate
from microclaw.distill.labels import HEADS, LABEL_SET_VERSION, label_map
from microclaw.distill.teacher import PROMPT_VERSION, LabelCache, LabelStats, label_texts
from microclaw.distill.train import TrainConfig
from microclaw.private import private_dir, write_private

if TYPE_CHECKING:
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from microclaw.agent.providers.base import BaseProvider

Progress = Callable[[str, int, int], None]
GOLDEN_ROWS = 16
CALIBRATION_ROWS = 400


def _quiet(stage: str, done: int, total: int) -> None:
    pass


@contextmanager
def one_thread() -> Iterator[None]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def pool(self) -> Path:
        return self.root / "pool.json"

    @property
    def cache(self) -> Path:
        return self.root / "labels.db"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"


# --- pool and labels ------------------------------------------------------------------------


def write_pool(
    paths: Paths, *, seed: int = 0, per_template: int = 60, traces: list[str] | None = None
) -> None:
    grammar = generate(seed, per_template)
    private_dir(paths.root)
    data = {
        "grammar": [
            {"text": u.text, "key": u.template, "expected": u.expected.model_dump(), "split": u.split}
            for u in grammar
        ],
        "traces": traces or [],
    }
    write_private(paths.pool, json.dumps(data, indent=1, sort_keys=True))


def read_pool(paths: Paths) -> tuple[list[Utterance], list[str]]:
    from microclaw.distill.labels import RouterLabel

    data = json.loads(paths.pool.read_text(encoding="utf-8"))
    grammar = [
        Utterance(g["text"], RouterLabel(**g["expected"]), g["split"], g["key"]) for g in data["grammar"]
    ]
    return grammar, list(data["traces"])


def label(
    paths: Paths,
    provider: BaseProvider | None,
    *,
    batch_size: int = 25,
    max_attempts: int = 3,
    concurrency: int = 4,
    progress: Progress = _quiet,
) -> LabelStats:
    """Label the pool (``provider`` None: the grammar's own labels through `GrammarOracle`)."""
    grammar, traces = read_pool(paths)
    texts = [u.text for u in grammar] + traces
    teacher: Any = provider if provider is not None else GrammarOracle(grammar)
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        progress("label", done, len(set(texts)))

    _, stats = label_texts(
        texts,
        teacher,
        LabelCache(paths.cache),
        batch_size=batch_size,
        max_attempts=max_attempts,
        concurrency=concurrency,
        progress=step,
    )
    (paths.root / "label-stats.json").write_text(json.dumps(asdict(stats), indent=2, sort_keys=True) + "\n")
    return stats


def build_dataset(paths: Paths, progress: Progress = _quiet) -> dict[str, Any]:
    grammar, traces = read_pool(paths)
    labels = LabelCache(paths.cache).get([u.text for u in grammar] + traces, PROMPT_VERSION)
    records, card = ds.build(grammar, traces, labels)
    stats_file = paths.root / "label-stats.json"
    stats = LabelStats(**json.loads(stats_file.read_text())) if stats_file.exists() else None
    ds.write(private_dir(paths.dataset), records, card, stats)
    progress("dataset", 1, 1)
    return card


# --- training, quantization, export, verification -------------------------------------------


def _targets(records: list[ds.Record]) -> dict[str, np.ndarray]:
    import numpy as np

    return {head: np.array([names.index(getattr(r, head)) for r in records]) for head, names in HEADS.items()}


def _accuracy(pred: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> dict[str, float]:
    return {
        head: round(float((pred[head] == want[head]).mean()) * 100, 2) if len(want[head]) else 0.0
        for head in HEADS
    }


def _confusion(pred: np.ndarray, want: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for w, p in zip(want.tolist(), pred.tolist(), strict=True):
        row = out.setdefault(names[w], {})
        row[names[p]] = row.get(names[p], 0) + 1
    return out


def train_model(
    paths: Paths, config: TrainConfig | None = None, progress: Progress = _quiet
) -> dict[str, Any]:
    """Train, quantize, export, verify in tflite-micro; write ``model/``; the metrics."""
    config = config or TrainConfig()
    import numpy as np

    from microclaw.distill import export, features, quantize, train, verify

    records = ds.read(paths.dataset)
    train_rows = [r for r in records if r.split == "train"]
    test_rows = [r for r in records if r.split == "test"]
    if not train_rows or not test_rows:
        raise ValueError("the dataset needs train and test records (run `microclaw distill dataset`)")
    with one_thread():
        x_train = features.matrix([r.text for r in train_rows], config.dim)
        x_test = features.matrix([r.text for r in test_rows], config.dim)
        progress("train", 0, 4)
        model = train.train(x_train, _targets(train_rows), config)
        progress("train", 1, 4)
        step = max(1, len(train_rows) // CALIBRATION_ROWS)
        qmodel = quantize.quantize(model, x_train[::step])
        progress("train", 2, 4)
        tflite = export.to_tflite(qmodel)
        blob = export.to_blob(qmodel)
        want = _targets(test_rows)
        fp32 = train.predict(model.logits(x_test))
        q_logits = verify.check_bit_exact(tflite, qmodel, x_test)  # every test row, bit for bit
        int8 = train.predict(q_logits.astype(np.int32))
        progress("train", 3, 4)
        arena = verify.measure_arena(tflite, config.dim)
    golden_rows = _golden_indices(test_rows)
    golden = [
        {
            "text": test_rows[i].text,
            "buckets": buckets(test_rows[i].text, config.dim),
            "logits": [int(v) for v in q_logits[i]],
        }
        for i in golden_rows
    ]
    by_source = {}
    for source in sorted({r.source for r in test_rows}):
        idx = np.array([i for i, r in enumerate(test_rows) if r.source == source])
        by_source[source] = {
            "n": len(idx),
            "fp32": _accuracy({h: p[idx] for h, p in fp32.items()}, {h: w[idx] for h, w in want.items()}),
            "int8": _accuracy({h: p[idx] for h, p in int8.items()}, {h: w[idx] for h, w in want.items()}),
        }
    metrics = {
        "config": config.as_dict(),
        "label_set": LABEL_SET_VERSION,
        "train_records": len(train_rows),
        "test_records": len(test_rows),
        "fp32": _accuracy(fp32, want),
        "int8": _accuracy(int8, want),
        "by_source": by_source,
        "confusion_int8": {h: _confusion(int8[h], want[h], names) for h, names in HEADS.items()},
        "sizes": {
            "tflite_bytes": len(tflite),
            "mcm_bytes": len(blob),
            "arena_bytes": arena,
            "parameters": int(sum(w.size for w in (model.w1, model.b1, model.w2, model.b2))),
        },
        "misses_int8": [
            {"text": r.text, "want": r.intent, "got": HEADS["intent"][int(p)]}
            for r, p in zip(test_rows, int8["intent"], strict=True)
            if HEADS["intent"][int(p)] != r.intent
        ][:50],
    }
    private_dir(paths.model)
    (paths.model / "model.tflite").write_bytes(tflite)
    (paths.model / "model.mcm").write_bytes(blob)
    (paths.model / "golden.json").write_text(json.dumps(golden, sort_keys=True) + "\n")
    (paths.model / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    progress("train", 4, 4)
    return metrics


def _golden_indices(rows: list[ds.Record]) -> list[int]:
    """One test row per intent first, then others, `GOLDEN_ROWS` at most, deterministic."""
    seen: set[str] = set()
    first: list[int] = []
    rest: list[int] = []
    for i, r in enumerate(rows):
        (rest if r.intent in seen else first).append(i)
        seen.add(r.intent)
    return sorted((first + rest[:: max(1, len(rest) // GOLDEN_ROWS)])[:GOLDEN_ROWS])


# --- bundle ---------------------------------------------------------------------------------


def make_bundle(
    paths: Paths, *, version: str, board: str, key: Ed25519PrivateKey, progress: Progress = _quiet
) -> dict[str, Any]:
    from microclaw.distill import bundle

    metrics = json.loads((paths.model / "metrics.json").read_text())
    records = ds.read(paths.dataset)
    teachers = sorted({r.teacher for r in records})
    config = metrics["config"]
    private_dir(paths.bundle)
    manifest = bundle.build(
        paths.bundle / version,
        files={name: (paths.model / name).read_bytes() for name in ("model.tflite", "model.mcm")},
        version=version,
        board=board,
        arena_bytes=int(metrics["sizes"]["arena_bytes"]) + _arena_margin(),
        labels=label_map(),
        features={
            "dim": config["dim"],
            "hash": "fnv1a32",
            "grams": ["w1", "w2", "c3"],
            "input": "int8 0/1",
            "label_set": LABEL_SET_VERSION,
        },
        golden=json.loads((paths.model / "golden.json").read_text()),
        teacher=f"{', '.join(teachers)} ({PROMPT_VERSION})",
        key=key,
    )
    progress("bundle", 1, 1)
    return manifest


def _arena_margin() -> int:
    from microclaw.distill.verify import ARENA_MARGIN

    return ARENA_MARGIN
