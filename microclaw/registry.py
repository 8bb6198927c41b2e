"""Name -> ``"module:Class"`` registries, imported lazily so unused SDKs never load."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from microclaw.errors import ConfigError


def load_class(registry: Mapping[str, str], name: str, setting: str, *, aliases: tuple[str, ...] = ()) -> Any:
    """Import the class registered under ``name``; `ConfigError` naming ``setting`` if unknown.

    ``aliases`` are the other names the caller resolves before looking up (e.g. ``auto``); the
    error lists them with the registered ones.
    """
    try:
        target = registry[name]
    except KeyError:
        known = ", ".join(repr(k) for k in (*aliases, *registry) if k)
        raise ConfigError(f"{setting}: unknown name {name!r}; known: {known}", key=setting) from None
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
