"""Exec, files and hardening on the real Docker engine."""

from __future__ import annotations

import pytest

from microclaw.errors import PolicyDenied

pytestmark = pytest.mark.docker


def test_exec_round_trip(make_sandbox) -> None:
    sb = make_sandbox()
    handle = sb.service.ensure("alpha")
    assert handle.created
    result = sb.service.exec(
        "alpha",
        ["sh", "-c", 'cat; echo "$GREETING from $(pwd)"; echo oops >&2; exit 3'],
        stdin=b"in\n",
        env={"GREETING": "hello"},
    )
    assert result.exit_code == 3
    assert result.stdout == b"in\nhello from /workspace/group\n"
    assert result.stderr == b"oops\n"
    assert not result.truncated and not result.timed_out
    assert sb.service.exec("alpha", ["pwd"], workdir="/tmp").stdout == b"/tmp\n"
    assert sb.service.ensure("alpha").created is False  # warm container reused
    execs = sb.audited("sandbox.exec")
    assert execs[0]["exit_code"] == 3 and execs[0]["tool"] == "exec" and execs[0]["group"] == "alpha"
    assert sb.audited("sandbox.start")[0]["container"] == handle.name


def test_missing_command_and_workdir(make_sandbox) -> None:
    sb = make_sandbox()
    assert sb.service.exec("alpha", ["no-such-tool"]).exit_code == 127
    assert sb.service.exec("alpha", ["true"], workdir="/nope").exit_code == 126


def test_timeout_kills_the_whole_process_group(make_sandbox) -> None:
    sb = make_sandbox()
    result = sb.service.exec("alpha", ["sh", "-c", "sleep 30 & sleep 30; echo never"], timeout=0.5)
    assert result.timed_out and result.exit_code == 137
    assert result.duration_ms < 5000
    left = sb.service.exec("alpha", ["sh", "-c", "ps -o comm | grep -c '^sleep' || true"])
    assert left.stdout.strip() == b"0"


def test_output_is_capped_and_truncation_reported(make_sandbox) -> None:
    sb = make_sandbox(max_output_bytes=1024)
    result = sb.service.exec("alpha", ["sh", "-c", "yes | head -c 50000; echo tail >&2"])
    assert result.exit_code == 0
    assert len(result.stdout) == 1024 and result.stdout_bytes == 50000
    assert result.truncated
    assert result.stderr == b"tail\n"
    assert sb.audited("sandbox.exec")[-1]["truncated"] is True


def test_file_operations_stay_in_the_workspace(make_sandbox) -> None:
    sb = make_sandbox()
    assert sb.service.write_file("alpha", "notes/today.md", b"# hi\n") == 5
    assert (sb.config.groups_dir / "alpha" / "notes" / "today.md").read_bytes() == b"# hi\n"
    content = sb.service.read_file("alpha", "/workspace/group/notes/today.md")
    assert content.data == b"# hi\n" and not content.truncated
    assert sb.service.read_file("alpha", "notes/today.md", max_bytes=2).data == b"# "
    names = {(e.name, e.kind) for e in sb.service.list_files("alpha")}
    assert ("notes", "dir") in names
    for bad in ("../../../etc/passwd", "/etc/passwd", "notes/../../x"):
        with pytest.raises(PolicyDenied):
            sb.service.read_file("alpha", bad)
    assert len(sb.audited("sandbox.denied")) == 3


def test_container_is_hardened(make_sandbox, docker_client) -> None:
    sb = make_sandbox(memory="96m", pids_limit=50, cpus=0.5)
    sb.service.ensure("alpha")
    attrs = sb.container(docker_client, "alpha").attrs
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "1000:1000"
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
    assert "/tmp" in host["Tmpfs"]
    assert host["Memory"] == host["MemorySwap"] == 96 * 1024**2
    assert host["NanoCpus"] == 500_000_000 and host["PidsLimit"] == 50
    assert host["NetworkMode"] == "none"
    assert not any("docker.sock" in m["Source"] for m in attrs["Mounts"])

    script = (
        "id -u; grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; "
        "touch /etc/x 2>/dev/null && echo ROOT-WRITABLE; touch /tmp/ok && echo tmp-ok; "
        "ls /var/run/docker.sock /run/docker.sock 2>/dev/null; cat /proc/net/dev | tail -n +3 | cut -d: -f1"
    )
    out = sb.service.exec("alpha", ["sh", "-c", script]).stdout_text
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "1000"
    assert "CapEff:\t0000000000000000" in out and "CapPrm:\t0000000000000000" in out
    assert "NoNewPrivs:\t1" in out
    assert "ROOT-WRITABLE" not in out and "tmp-ok" in lines
    assert "docker.sock" not in out
    assert lines[-1] == "lo"  # the only interface


def test_docker_exec_transport_works_too(make_sandbox) -> None:
    sb = make_sandbox(exec_transport="docker")
    result = sb.service.exec("alpha", ["sh", "-c", "cat; echo err >&2"], stdin=b"via docker exec\n")
    assert result.stdout == b"via docker exec\n" and result.stderr == b"err\n"
    assert sb.service.exec("alpha", ["sleep", "10"], timeout=0.3).timed_out


def test_vanished_container_is_replaced_on_next_call(make_sandbox, docker_client) -> None:
    sb = make_sandbox()
    first = sb.service.ensure("alpha", is_main=True)
    sb.container(docker_client, "alpha").remove(force=True)
    assert sb.service.exec("alpha", ["echo", "back"]).stdout == b"back\n"
    assert sb.container(docker_client, "alpha").id != first.id
    assert sb.container(docker_client, "alpha").labels["microclaw.main"] == "1"


def test_changed_spec_replaces_the_container(make_sandbox, docker_client) -> None:
    sb = make_sandbox()
    first = sb.service.ensure("alpha", is_main=False)
    second = sb.service.ensure("alpha", is_main=True)
    assert second.created and second.id != first.id
    assert sb.service.stop("alpha") is True
    assert sb.service.stop("alpha") is False
    assert sb.audited("sandbox.stop")[0]["reason"] == "requested"


def test_a_swapped_exec_socket_is_never_trusted(make_sandbox, caplog) -> None:
    """A container that could replace its exec socket with a link to a host socket (here the
    engine's) must not get anything sent there: the host checks the peer is in the container.

    The folder is read-only for the container once it started, so the swap is refused; a
    sandbox user with the host user's uid could still do it, which the host simulates here."""
    sb = make_sandbox()
    swap = "rm /run/microclaw/exec/exec.sock && ln -s /var/run/docker.sock /run/microclaw/exec/exec.sock"
    assert not sb.service.exec("alpha", ["sh", "-c", swap]).ok
    (sock,) = (sb.root / "run" / "x").rglob("exec.sock")
    sock.parent.chmod(0o777)  # the host owns the folder
    sock.unlink()
    sock.symlink_to("/var/run/docker.sock")
    with caplog.at_level("WARNING", logger="microclaw.sandbox.docker"):
        result = sb.service.exec("alpha", ["echo", "still isolated"])
    assert result.stdout == b"still isolated\n"
    assert "peer is not a process of this container" in caplog.text


# Lists the processes of the container other than init and the executor: pid, session, argv.
LIST_PROCS = r"""
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  [ "$pid" = 1 ] && continue
  cmd=$(tr '\0' ' ' < $p/cmdline 2>/dev/null)
  case "$cmd" in *executor.py*|"") continue;; esac
  echo "$pid $cmd"
done
"""


@pytest.mark.parametrize(
    "script",
    [
        "setsid sh -c 'sleep 1001' & sleep 30",  # a new session: out of the process group
        "(setsid sh -c 'sleep 1002' &) ; sleep 30",  # double fork: the orphan leaves the tree
        "setsid sh -c 'setsid sleep 1003 & sleep 1004' & sleep 30",
    ],
)
@pytest.mark.parametrize("transport", ["socket", "docker"])
def test_a_timed_out_exec_leaves_no_process_behind(make_sandbox, script, transport) -> None:
    sb = make_sandbox(exec_transport=transport)
    result = sb.service.exec("alpha", ["sh", "-c", script], timeout=1.0)
    assert result.timed_out
    left = sb.service.exec("alpha", ["sh", "-c", LIST_PROCS]).stdout_text
    survivors = [line for line in left.splitlines() if "sleep" in line]
    assert survivors == [], left
