"""microclaw.registry: the one lazy name -> class loader behind every family's registry."""

from __future__ import annotations

import sys

import pytest

from microclaw.errors import ConfigError
from microclaw.registry import load_class

REGISTRY = {"json": "json:JSONDecoder", "fractions": "fractions:Fraction"}


def test_imports_only_the_module_named() -> None:
    sys.modules.pop("fractions", None)
    assert load_class(REGISTRY, "json", "x.kind").__name__ == "JSONDecoder"
    assert "fractions" not in sys.modules


def test_unknown_name_names_the_setting_and_lists_known_names_and_aliases() -> None:
    with pytest.raises(ConfigError) as info:
        load_class(REGISTRY, "yaml", "x.kind", aliases=("auto",))
    assert info.value.key == "x.kind"
    assert "'yaml'" in str(info.value)
    assert "known: 'auto', 'json', 'fractions'" in str(info.value)
