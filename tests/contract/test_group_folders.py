"""Contract §7.1 and checklist 11.10: group folder names and their resolution under a base dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from microclaw.core.groups import is_valid_group_folder, resolve_group_folder_path


@pytest.mark.parametrize(
    "folder",
    [
        "main",
        "whatsapp_family-chat",
        "telegram_dev-team",
        "A",
        "0",
        "a" * 64,
        "Group_1-x",
        "globalx",
        "my-global",
    ],
)
def test_valid_folders(folder: str) -> None:
    assert is_valid_group_folder(folder) is True


@pytest.mark.parametrize(
    "folder",
    [
        "",
        "a" * 65,  # too long
        "_main",  # must start with a letter or digit
        "-main",
        " main",  # must equal its trimmed form
        "main ",
        "main\n",
        "a/b",
        "a\\b",
        "..",
        "a..b",
        "../etc",
        ".hidden",
        "a.b",
        "with space",
        "émoji",  # ASCII only
        "global",  # reserved, case-insensitively
        "Global",
        "GLOBAL",
    ],
)
def test_invalid_folders(folder: str) -> None:
    assert is_valid_group_folder(folder) is False


def test_resolve_gives_the_folder_under_the_base(tmp_path: Path) -> None:
    assert resolve_group_folder_path("whatsapp_main", tmp_path) == tmp_path / "whatsapp_main"


def test_resolve_is_absolute_and_normalized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_group_folder_path("g1", Path("groups")) == tmp_path / "groups" / "g1"
    assert resolve_group_folder_path("g1", tmp_path / "x" / ".." / "groups") == tmp_path / "groups" / "g1"


@pytest.mark.parametrize("folder", ["../escape", "..", "a/../../b", "/etc", "global", "", "a b"])
def test_resolve_rejects_invalid_or_escaping_folders(tmp_path: Path, folder: str) -> None:
    with pytest.raises(ValueError):
        resolve_group_folder_path(folder, tmp_path)


def test_resolve_does_not_touch_the_filesystem(tmp_path: Path) -> None:
    path = resolve_group_folder_path("new_group", tmp_path / "missing")
    assert path == tmp_path / "missing" / "new_group"
    assert not (tmp_path / "missing").exists()
