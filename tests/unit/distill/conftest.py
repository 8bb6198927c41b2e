"""A small distilled model shared by the distillation tests: the real pipeline (grammar oracle
as the teacher, the same code path as a provider), a reduced training config so it takes about a
second. The full config runs in bench/distill.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from microclaw.distill import pipeline
from microclaw.distill.train import TrainConfig

SMALL = TrainConfig(dim=512, hidden=32, epochs=25, seed=7)


@dataclass(frozen=True)
class Built:
    paths: pipeline.Paths
    config: TrainConfig
    metrics: dict


def build(root: Path, config: TrainConfig = SMALL) -> Built:
    paths = pipeline.Paths(root)
    pipeline.write_pool(paths, seed=0, per_template=25)
    pipeline.label(paths, None)
    pipeline.build_dataset(paths)
    return Built(paths, config, pipeline.train_model(paths, config))


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(tmp_path_factory.mktemp("distill"))
