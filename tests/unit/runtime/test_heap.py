"""`heap.freeze`: start-up's objects leave the collector's generations."""

from __future__ import annotations

import gc

from microclaw.runtime import heap


def test_freeze_moves_live_objects_out_of_the_collected_generations() -> None:
    kept = [object() for _ in range(1000)]  # noqa: F841 - alive across the freeze
    try:
        frozen = heap.freeze()
        assert frozen == gc.get_freeze_count() > 1000
        assert sum(len(gc.get_objects(generation)) for generation in range(3)) < 100
    finally:
        gc.unfreeze()  # other tests in this process get the collector back as it was
