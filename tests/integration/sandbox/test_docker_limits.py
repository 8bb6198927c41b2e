"""Resource limits hold on the real engine: a fork bomb and a memory hog stay inside."""

from __future__ import annotations

import subprocess

import pytest

from microclaw.errors import PolicyDenied

pytestmark = pytest.mark.docker

FORK_BOMB = "bomb() { bomb | bomb & }; bomb; sleep 5"
MEMORY_HOG = "chunks = []\nwhile True:\n    chunks.append(bytearray(8 * 1024 * 1024))\n"


def host_can_fork() -> bool:
    return subprocess.run(["true"], check=False).returncode == 0


def test_fork_bomb_is_contained_by_the_pids_limit(make_sandbox, docker_client) -> None:
    sb = make_sandbox(pids_limit=48)
    sb.service.ensure("alpha")
    result = sb.service.exec("alpha", ["sh", "-c", FORK_BOMB], timeout=3)
    assert result.timed_out or result.exit_code != 0
    assert sb.container(docker_client, "alpha").attrs["HostConfig"]["PidsLimit"] == 48
    assert host_can_fork()
    # The bomb's process group was killed at the timeout; the sandbox is usable again.
    after = sb.service.exec("alpha", ["sh", "-c", "echo alive; ps | wc -l"], timeout=10)
    assert after.ok and after.stdout.startswith(b"alive"), after
    assert int(after.stdout.split()[-1]) < 20


def test_memory_hog_is_killed_and_the_host_is_fine(make_sandbox) -> None:
    sb = make_sandbox(memory="64m")
    result = sb.service.exec("alpha", ["python3", "-c", MEMORY_HOG], timeout=20)
    assert result.exit_code == 137 and not result.timed_out  # SIGKILL from the cgroup OOM killer
    assert host_can_fork()
    # Either the executor survived or the container was replaced; the next call works.
    assert sb.service.exec("alpha", ["echo", "fine"]).stdout == b"fine\n"


def test_commands_volunteer_first_for_the_oom_killer_not_the_executor(make_sandbox) -> None:
    sb = make_sandbox()
    result = sb.service.exec("alpha", ["sh", "-c", "cat /proc/self/oom_score_adj; cat /proc/1/oom_score_adj"])
    command, pid1 = result.stdout_text.split()
    assert command == "1000"  # inherited from the exec's preexec
    assert int(pid1) < 1000


def test_the_exec_socket_folder_takes_no_writes_once_started(make_sandbox) -> None:
    sb = make_sandbox()
    result = sb.service.exec("alpha", ["sh", "-c", "head -c 1000 /dev/zero > /run/microclaw/exec/junk"])
    assert result.exit_code != 0 and "ermission denied" in result.stderr_text
    assert [p.name for p in (sb.root / "run" / "x").rglob("*") if p.is_file() or p.is_socket()] == [
        "exec.sock"
    ]
    assert sb.service.exec("alpha", ["true"]).ok  # the socket still serves


def test_the_group_quota_bounds_write_file_and_any_single_file(make_sandbox) -> None:
    sb = make_sandbox(group_quota="1m")
    assert sb.service.write_file("alpha", "a.bin", b"x" * 600_000) == 600_000
    with pytest.raises(PolicyDenied, match="quota of 1048576 bytes would be exceeded"):
        sb.service.write_file("alpha", "b.bin", b"x" * 600_000)
    assert sb.service.write_file("alpha", "a.bin", b"y" * 700_000) == 700_000  # replacing counts the old size
    denied = sb.audited("sandbox.denied")
    assert len(denied) == 1 and denied[0]["action"] == "sandbox.write_file"
    # A command cannot write one file past the quota anywhere (RLIMIT_FSIZE).
    big = sb.service.exec("alpha", ["sh", "-c", "head -c 2000000 /dev/zero > /workspace/group/big"])
    assert big.exit_code != 0
    size = sb.service.exec("alpha", ["stat", "-c", "%s", "/workspace/group/big"]).stdout_text.strip()
    assert int(size) <= 1048576
