"""microclaw/runtime/wiring.py, bootstrap_database: the data directory and the databases other
libraries create in it are private, whatever the umask (see microclaw/private.py)."""

from __future__ import annotations

import pytest

from microclaw.config import Settings
from microclaw.runtime.wiring import bootstrap_database
from tests.conftest import file_mode


@pytest.mark.usefixtures("umask_022")
def test_bootstrap_makes_the_data_dir_private_and_precreates_other_libraries_databases(
    settings: Settings,
) -> None:
    settings.data_dir.mkdir(mode=0o755)  # as an older version or `mkdir data` left it
    bootstrap_database(settings)
    assert file_mode(settings.data_dir) == 0o700
    for name in ("microclaw.db", "broker.db", "sandbox-results.db"):
        assert file_mode(settings.data_dir / name) == 0o600, name
