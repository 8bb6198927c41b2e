"""Training, quantization, export and verification: reproducible bytes, int8 bit-exact in
tflite-micro, accuracy floors on held-out phrasings (reduced config), sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from microclaw.distill import dataset as ds
from microclaw.distill import export, features, quantize, verify
from microclaw.distill.labels import HEADS
from microclaw.distill.pipeline import Paths, train_model
from microclaw.distill.train import TrainConfig
from tests.unit.distill.conftest import SMALL, Built


def _copy_dataset(src: Paths, root: Path) -> Paths:
    paths = Paths(root)
    paths.dataset.mkdir(parents=True)
    for name in ("dataset.jsonl", "card.json"):
        (paths.dataset / name).write_bytes((src.dataset / name).read_bytes())
    return paths


def test_same_seed_same_bytes_other_seed_other_bytes(small_model: Built, tmp_path: Path) -> None:
    again = _copy_dataset(small_model.paths, tmp_path / "again")
    train_model(again, SMALL)
    for name in ("model.tflite", "model.mcm", "golden.json"):
        assert (again.model / name).read_bytes() == (small_model.paths.model / name).read_bytes(), name
    other = _copy_dataset(small_model.paths, tmp_path / "other")
    train_model(other, TrainConfig(**{**SMALL.as_dict(), "seed": SMALL.seed + 1}))
    assert (other.model / "model.tflite").read_bytes() != (
        small_model.paths.model / "model.tflite"
    ).read_bytes()


def test_int8_is_bit_exact_in_tflite_micro_on_every_row(small_model: Built) -> None:
    tflite = (small_model.paths.model / "model.tflite").read_bytes()
    records = ds.read(small_model.paths.dataset)
    x = features.matrix([r.text for r in records], SMALL.dim)
    qmodel = _requantized(small_model)
    assert export.to_tflite(qmodel) == tflite  # the reference rebuilt from the same data and seed
    got = verify.check_bit_exact(tflite, qmodel, x)  # every record, train and test
    assert got.shape == (len(records), sum(len(n) for n in HEADS.values()))
    golden = json.loads((small_model.paths.model / "golden.json").read_text())
    for item in golden:
        row = np.zeros((1, SMALL.dim), np.int8)
        row[0, item["buckets"]] = 1
        assert item["buckets"] == features.buckets(item["text"], SMALL.dim)
        assert verify.run_tflm(tflite, row)[0].tolist() == item["logits"]


def test_a_reference_that_differs_in_one_bit_is_caught(small_model: Built) -> None:
    """The check is real: perturbing one bias by one makes `check_bit_exact` fail."""
    records = ds.read(small_model.paths.dataset)
    x = features.matrix([r.text for r in records[:200]], SMALL.dim)
    tflite = (small_model.paths.model / "model.tflite").read_bytes()
    qmodel = _requantized(small_model)
    verify.check_bit_exact(tflite, qmodel, x)
    qmodel.layers[1].bias[0] += 1 << 12
    with pytest.raises(verify.NotBitExact, match="rows differ"):
        verify.check_bit_exact(tflite, qmodel, x)


def _requantized(built: Built) -> quantize.QuantModel:
    from microclaw.distill import train
    from microclaw.distill.pipeline import CALIBRATION_ROWS, _targets, one_thread

    records = [r for r in ds.read(built.paths.dataset) if r.split == "train"]
    with one_thread():
        x_train = features.matrix([r.text for r in records], built.config.dim)
        model = train.train(x_train, _targets(records), built.config)
    step = max(1, len(records) // CALIBRATION_ROWS)
    return quantize.quantize(model, x_train[::step])


def test_held_out_accuracy_floors_and_sizes(small_model: Built) -> None:
    m = small_model.metrics
    # Floors for the reduced test config (the full config's targets are printed by bench/distill.py).
    assert m["fp32"]["intent"] >= 85 and m["fp32"]["route"] >= 88 and m["fp32"]["confirm"] >= 95, m["fp32"]
    for head in HEADS:
        assert m["fp32"][head] - m["int8"][head] <= 2.0, (head, m["fp32"], m["int8"])
    assert m["sizes"]["tflite_bytes"] <= 64 * 1024 and m["sizes"]["arena_bytes"] <= 8 * 1024
    assert m["test_records"] > 100 and set(m["by_source"]) == {"grammar"}


def test_quantize_multiplier_matches_tflite_definition() -> None:
    assert quantize.quantize_multiplier(0.5) == (1 << 30, 0)
    assert quantize.quantize_multiplier(1.0) == (1 << 30, 1)
    assert quantize.quantize_multiplier(0.0) == (0, 0)
    m, s = quantize.quantize_multiplier(0.0123)
    assert abs(m * 2.0 ** (s - 31) - 0.0123) < 1e-9 and (1 << 30) <= m < (1 << 31)
    # x * 0.25 with TFLM's two roundings (high multiply, then divide by 2): 5 -> 3 -> 2, not 1;
    # ties of the second rounding go away from zero, the first rounding's nudge is asymmetric.
    acc = np.array([5, -5, 6, -6, 7, -7], np.int64)
    got = quantize.multiply_by_quantized_multiplier(acc, np.full(6, 1 << 30), np.full(6, -1))
    assert got.tolist() == [2, -1, 2, -2, 2, -2]
