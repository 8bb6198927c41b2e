"""microclaw.safefs on real files: links at any component, special files, sizes, swaps."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from microclaw import safefs
from microclaw.errors import PolicyDenied, UnsafePath

SECRET = b"MICROCLAW_FAKE_SECRET=hunter2-do-not-leak"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """``root/g/CLAUDE.md`` (a real file) and ``outside/secret`` (what attacks point at)."""
    (tmp_path / "root" / "g").mkdir(parents=True)
    (tmp_path / "root" / "g" / "CLAUDE.md").write_bytes(b"real memory")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_bytes(SECRET)
    (tmp_path / "outside" / "CLAUDE.md").write_bytes(SECRET)
    return tmp_path


def test_a_regular_file_is_read_and_a_missing_one_is_none(tree: Path) -> None:
    root = tree / "root"
    assert safefs.read_file(root, ["g", "CLAUDE.md"], max_bytes=100) == b"real memory"
    assert safefs.read_file(root, ["g", "absent.md"], max_bytes=100) is None
    assert safefs.read_file(root, ["absent", "CLAUDE.md"], max_bytes=100) is None


def test_a_symlink_at_the_leaf_is_refused_and_never_read(tree: Path) -> None:
    root = tree / "root"
    (root / "g" / "CLAUDE.md").unlink()
    (root / "g" / "CLAUDE.md").symlink_to(tree / "outside" / "secret")
    with pytest.raises(UnsafePath) as info:
        safefs.read_file(root, ["g", "CLAUDE.md"], max_bytes=1000)
    assert (info.value.path, info.value.problem) == ("g/CLAUDE.md", "is a symbolic link")
    assert isinstance(info.value, PolicyDenied) and "hunter2" not in str(info.value)


def test_proc_self_environ_behind_a_link_is_refused(tree: Path) -> None:
    root = tree / "root"
    (root / "g" / "CLAUDE.md").unlink()
    (root / "g" / "CLAUDE.md").symlink_to("/proc/self/environ")
    with pytest.raises(UnsafePath):
        safefs.read_file(root, ["g", "CLAUDE.md"], max_bytes=1 << 20)


def test_a_symlink_at_an_intermediate_component_is_refused(tree: Path) -> None:
    root = tree / "root"
    (root / "linked").symlink_to(tree / "outside")  # the group folder itself
    (root / "g" / "sub").symlink_to(tree / "outside")  # a directory inside it
    for parts in (["linked", "CLAUDE.md"], ["g", "sub", "secret"]):
        with pytest.raises(UnsafePath) as info:
            safefs.read_file(root, parts, max_bytes=1000)
        assert info.value.problem == "is a symbolic link"
        assert info.value.path == "/".join(parts[:-1])


def test_a_relative_symlink_climbing_out_is_refused(tree: Path) -> None:
    root = tree / "root"
    (root / "g" / "up").symlink_to("../../outside")
    with pytest.raises(UnsafePath):
        safefs.read_file(root, ["g", "up", "secret"], max_bytes=1000)


def test_a_file_where_a_directory_is_expected_is_refused(tree: Path) -> None:
    with pytest.raises(UnsafePath) as info:
        safefs.read_file(tree / "root", ["g", "CLAUDE.md", "x"], max_bytes=10)
    assert info.value.problem == "is not a directory"


def test_a_fifo_at_the_leaf_is_refused_without_blocking(tree: Path) -> None:
    fifo = tree / "root" / "g" / "CLAUDE.md"
    fifo.unlink()
    os.mkfifo(fifo)  # no writer: a plain open() for reading would block forever
    with pytest.raises(UnsafePath) as info:
        safefs.read_file(tree / "root", ["g", "CLAUDE.md"], max_bytes=10)
    assert info.value.problem == "is not a regular file or directory"


def test_a_device_at_the_leaf_is_refused_without_being_opened(tree: Path) -> None:
    leaf = tree / "root" / "g" / "CLAUDE.md"
    leaf.unlink()
    try:
        os.mknod(leaf, stat.S_IFCHR | 0o600, os.makedev(1, 8))  # /dev/random's numbers
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    with pytest.raises(UnsafePath):
        safefs.read_file(tree / "root", ["g", "CLAUDE.md"], max_bytes=10)
    socket_dir = tree / "root" / "g"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(socket_dir / "s.sock"))
        with pytest.raises(UnsafePath):
            safefs.read_file(tree / "root", ["g", "s.sock"], max_bytes=10)


def test_an_oversized_file_is_read_only_up_to_the_cap(tree: Path) -> None:
    big = tree / "root" / "g" / "big.md"
    with open(big, "wb") as out:
        out.truncate(64 * 1024 * 1024)  # sparse: 64 MiB on paper
    data = safefs.read_file(tree / "root", ["g", "big.md"], max_bytes=1000)
    assert data == b"\0" * 1000


def test_a_hard_link_is_read_like_the_file_it_names(tree: Path) -> None:
    # Decision: accepted. link(2) cannot cross mounts, so a container can only hard-link files
    # inside its own mount; writes never open an existing name, so they cannot go through one.
    os.link(tree / "root" / "g" / "CLAUDE.md", tree / "root" / "g" / "alias.md")
    assert safefs.read_file(tree / "root", ["g", "alias.md"], max_bytes=100) == b"real memory"
    assert not safefs.write_new_file(tree / "root", ["g", "alias.md"], b"overwrite")
    assert (tree / "root" / "g" / "CLAUDE.md").read_bytes() == b"real memory"


def test_a_directory_swapped_for_a_link_after_opening_changes_nothing(tree: Path) -> None:
    root = tree / "root"
    dir_fd = safefs.open_dir(root, ["g"])
    try:
        # The attacker swaps the group folder for a link to the secrets after the host opened it.
        (root / "g").rename(root / "g-moved")
        (root / "g").symlink_to(tree / "outside")
        assert safefs.read_file_at(dir_fd, "CLAUDE.md", max_bytes=100) == b"real memory"
    finally:
        os.close(dir_fd)
    with pytest.raises(UnsafePath):  # and the next open by path refuses the link
        safefs.read_file(root, ["g", "CLAUDE.md"], max_bytes=100)


def test_write_new_file_creates_directories_and_never_overwrites(tree: Path) -> None:
    root = tree / "archive"
    assert safefs.write_new_file(root, ["g", "a", "t.md"], b"one")
    assert not safefs.write_new_file(root, ["g", "a", "t.md"], b"two")
    assert (root / "g" / "a" / "t.md").read_bytes() == b"one"
    assert stat.S_IMODE((root / "g" / "a" / "t.md").stat().st_mode) == 0o600


def test_write_new_file_never_writes_through_a_link(tree: Path) -> None:
    root = tree / "root"
    (root / "g" / "conversations").symlink_to(tree / "outside")
    with pytest.raises(UnsafePath):
        safefs.write_new_file(root, ["g", "conversations", "t.md"], b"transcript")
    (root / "g" / "dangling.md").symlink_to(tree / "outside" / "new-file")
    assert not safefs.write_new_file(root, ["g", "dangling.md"], b"x")  # exists (as a link)
    assert sorted(p.name for p in (tree / "outside").iterdir()) == ["CLAUDE.md", "secret"]


def test_ensure_dir_creates_missing_levels_and_refuses_links(tree: Path) -> None:
    root = tree / "groups"
    safefs.ensure_dir(root, ["new", "logs"])
    assert (root / "new" / "logs").is_dir()
    safefs.ensure_dir(root, ["new", "logs"])  # idempotent
    (root / "new" / "evil").symlink_to(tree / "outside")
    with pytest.raises(UnsafePath):
        safefs.ensure_dir(root, ["new", "evil", "deeper"])
    assert not (tree / "outside" / "deeper").exists()
    (root / "dangling").symlink_to(tree / "nowhere")
    with pytest.raises(UnsafePath):
        safefs.ensure_dir(root, ["dangling"])
    assert not (tree / "nowhere").exists()


def test_walk_lists_files_and_never_enters_links(tree: Path) -> None:
    g = tree / "root" / "g"
    (g / "logs").mkdir()
    (g / "logs" / "run.log").write_bytes(b"log")
    (g / "into-outside").symlink_to(tree / "outside")
    (g / "file-link").symlink_to(tree / "outside" / "secret")
    os.mkfifo(g / "pipe")
    seen = {e.rel: e.kind for e in safefs.walk(tree / "root", ["g"])}
    assert seen == {
        ("CLAUDE.md",): "file",
        ("file-link",): "link",
        ("into-outside",): "link",
        ("logs", "run.log"): "file",
        ("pipe",): "other",
    }


def test_components_must_be_single_names(tree: Path) -> None:
    for bad in (["g/CLAUDE.md"], ["..", "x"], ["", "x"], ["."]):
        with pytest.raises(ValueError):
            safefs.read_file(tree / "root", bad, max_bytes=1)
