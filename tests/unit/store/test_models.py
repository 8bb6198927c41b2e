"""store.models and the store package: typed tables, and one owner listed for every table.

(That the migrations create exactly these models is tests/unit/store/test_migrations.py.)
"""

from __future__ import annotations

import importlib
import re

from sqlalchemy import Table

import microclaw.store
from microclaw.store.models import Base, Run, table_of


def test_table_of_is_the_models_table_typed_as_one() -> None:
    assert isinstance(table_of(Run), Table)
    assert table_of(Run) is Run.__table__


def test_every_table_has_an_owner_in_the_package_docstring() -> None:
    doc = microclaw.store.__doc__ or ""
    listing = doc.split("owner\n", 1)[1].split("\n\n", 1)[0]  # the table, up to its first blank line
    missing = [name for name in Base.metadata.tables if not re.search(rf"\b{name}\b", listing)]
    assert missing == []
    for owner in set(re.findall(r"\bstore\.(\w+)", listing)):  # each owner named is a real module
        importlib.import_module(f"microclaw.store.{owner}")
