"""Group isolation and extra-mount policy on the real Docker engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microclaw.sandbox.mounts import MountRequest

pytestmark = pytest.mark.docker


def test_a_group_cannot_see_another_groups_folder(make_sandbox) -> None:
    sb = make_sandbox()
    sb.service.write_file("alpha", "secret-plan.txt", b"alpha only")
    probe = "ls /workspace; ls /workspace/group; find / -name secret-plan.txt 2>/dev/null; echo done"
    out = sb.service.exec("beta", ["sh", "-c", probe]).stdout_text
    assert "secret-plan.txt" not in out
    assert out.strip().endswith("done")
    assert sb.service.exec("alpha", ["cat", "secret-plan.txt"]).stdout == b"alpha only"


def test_non_main_cannot_write_global_but_main_can(make_sandbox) -> None:
    sb = make_sandbox()
    global_dir = sb.config.global_dir
    global_dir.mkdir(parents=True)
    (global_dir / "CLAUDE.md").write_text("shared memory\n")
    (global_dir / "CLAUDE.md").chmod(0o666)  # so only the read-only mount can stop a write
    sb.service.ensure("alpha", is_main=False)
    sb.service.ensure("boss", is_main=True)
    assert sb.service.exec("alpha", ["cat", "/workspace/global/CLAUDE.md"]).stdout == b"shared memory\n"
    denied = sb.service.exec("alpha", ["sh", "-c", "echo x >> /workspace/global/CLAUDE.md"])
    assert denied.exit_code != 0 and b"Read-only file system" in denied.stderr, denied
    assert sb.service.exec("boss", ["sh", "-c", "echo from-main >> /workspace/global/CLAUDE.md"]).ok
    assert (global_dir / "CLAUDE.md").read_text() == "shared memory\nfrom-main\n"


@pytest.fixture
def mount_setup(make_sandbox, tmp_path: Path):
    home = tmp_path / "home"
    projects = home / "projects"
    (projects / "app").mkdir(parents=True)
    (projects / "app" / "README").write_text("app readme\n")
    (projects / "app").chmod(0o777)  # so only the mount mode decides writes
    (projects / ".ssh").mkdir()
    (projects / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (projects / "innocent").symlink_to(projects / ".ssh")
    (home / "outside").mkdir()
    allowlist = tmp_path / "mount-allowlist.json"
    allowlist.write_text(
        json.dumps(
            {
                "allowedRoots": [{"path": str(projects), "allowReadWrite": True}],
                "blockedPatterns": ["password"],
                "nonMainReadOnly": True,
            }
        )
    )
    return make_sandbox(mount_allowlist_path=allowlist), projects, home


def test_refused_mounts_are_audited_and_absent(mount_setup) -> None:
    sb, projects, home = mount_setup
    requests = [
        MountRequest(str(projects / ".ssh"), "keys"),
        MountRequest(str(projects / "innocent"), "innocent"),  # symlink into a blocked dir
        MountRequest(str(projects / "app"), "app:/etc"),
        MountRequest(str(projects / "app"), "../escape"),
        MountRequest(str(projects / "app" / ".." / ".ssh"), "dots"),
        MountRequest(str(home / "outside"), "outside"),
        MountRequest(str(projects / "app"), "app"),  # the one that is fine
    ]
    sb.service.ensure("alpha", extra_mounts=requests)
    decisions = sb.audited("sandbox.mount")
    assert [d["allowed"] for d in decisions] == [False, False, False, False, False, False, True]
    assert all(d["group"] == "alpha" and d["reason"] for d in decisions)
    out = sb.service.exec(
        "alpha",
        [
            "sh",
            "-c",
            "ls -a /workspace/extra; cat /workspace/extra/app/README; "
            "grep -rl PRIVATE /workspace /tmp /etc /home /opt /run 2>/dev/null",
        ],
    ).stdout_text
    assert out.split()[:3] == [".", "..", "app"] and "app readme" in out
    assert "PRIVATE" not in out and "id_ed25519" not in out


def test_extra_mounts_are_read_only_by_default_and_for_non_main(mount_setup) -> None:
    sb, projects, _ = mount_setup
    sb.service.ensure("alpha", extra_mounts=[MountRequest(str(projects / "app"), "app", readonly=False)])
    sb.service.ensure(
        "boss", is_main=True, extra_mounts=[MountRequest(str(projects / "app"), "app", readonly=False)]
    )
    assert not sb.service.exec("alpha", ["touch", "/workspace/extra/app/x"]).ok  # nonMainReadOnly
    assert sb.service.exec("boss", ["touch", "/workspace/extra/app/x"]).ok
    assert (projects / "app" / "x").exists()
