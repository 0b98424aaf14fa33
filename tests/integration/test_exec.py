"""`ctr task exec` into a running Linux guest, through containerd's stock shim and ukrun: the process runs
inside the VM (ukrun's exec agent, started by the guest's init), with its arguments, environment, working
folder and user, a terminal when asked, its output and exit code back, signals delivered, and an end
(an error, never a hang) when the guest dies under it."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

from testbed import containerd as ctd
from testbed import guest
from tests.integration.conftest import APP, SNAPSHOTTER, arm_file
from tests.integration.runner import UKRUN, Runner


def _exec(r: Runner, cid: str, eid: str, *cmd: str, flags: tuple[str, ...] = (), stdin: str = "",
          timeout: float = 120) -> subprocess.CompletedProcess[str]:
    args = [str(r.daemon.bin_dir / "ctr"), "--address", r.daemon.address, "--namespace", r.ns, "task", "exec",
            "--exec-id", eid, "--fifo-dir", str(r.fifo_dir), *flags, cid, *cmd]
    return subprocess.run(args, capture_output=True, text=True, env=r.daemon.env(), timeout=timeout, input=stdin)


def _background(r: Runner, cid: str, eid: str, *cmd: str) -> subprocess.Popen[str]:
    args = [str(r.daemon.bin_dir / "ctr"), "--address", r.daemon.address, "--namespace", r.ns, "task", "exec",
            "--exec-id", eid, "--fifo-dir", str(r.fifo_dir), cid, *cmd]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, env=r.daemon.env())


def _running(r: Runner, cid: str) -> float:
    """Runs the guest until its application is up (under TCG the boot takes seconds); returns how long."""
    log = r.fifo_dir.parent / f"{cid}.log"
    t0 = time.monotonic()
    proc = r.run(cid, "/bin/sh", "/app/run.sh", "sleep",
                 flags=("--detach", "--env", "GREETING=hi", "--log-uri", f"file://{log}"))
    assert proc.returncode == 0, proc.stderr
    r.wait_status(cid, "RUNNING")
    assert ctd.wait_for(lambda: log.exists() and "guest sleeping" in log.read_text(), timeout=120, interval=0.2)
    return time.monotonic() - t0


def _not_started(bundle: Path, execs: list[subprocess.Popen[str]]) -> str:
    """Which background execs have no pid file yet, and what those that ended said."""
    told = []
    for i, proc in enumerate(execs):
        if (bundle / f"p{i}.pid").exists():
            continue
        if proc.poll() is None:
            told.append(f"p{i}: no pid file, its ctr still waits")
        else:
            told.append(f"p{i}: no pid file, ctr ended with {proc.returncode}: {proc.communicate()[1].strip()}")
    return "; ".join(told)


def _guest_has(r: Runner, cid: str, args: str) -> bool:
    """Whether a process with those arguments runs in the guest (asked by an exec, whose own grep's
    arguments do not match: `[x]` is no x)."""
    pattern = f"[{args[0]}]{args[1:]}"
    proc = _exec(r, cid, f"look-{time.monotonic_ns()}", "/bin/sh", "-c",
                 f"/bin/busybox ps -o args | /bin/busybox grep -q '{pattern}'")
    return proc.returncode == 0


def test_exec_runs_in_the_guest_with_its_process_and_returns_output_and_exit_code(runner: Runner) -> None:
    boot = _running(runner, "x1")
    t0 = time.monotonic()
    proc = _exec(runner, "x1", "e1", "/bin/sh", "-c",
                 "echo out $GREETING $(/bin/busybox id -u):$(/bin/busybox id -g) $PWD $(/bin/busybox uname -r); "
                 "echo err >&2; exit 3", flags=("--cwd", "/app", "--user", "1000:1001"))
    first = time.monotonic() - t0
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.split()[:4] == ["out", "hi", "1000:1001", "/app"], proc.stdout
    assert proc.stderr.strip() == "err", proc.stderr
    # stdin reaches the process and its end closes the process's stdin
    echoed = _exec(runner, "x1", "e2", "/bin/busybox", "cat", stdin="line one\nline two\n")
    assert (echoed.returncode, echoed.stdout) == (0, "line one\nline two\n"), echoed.stderr
    # a process the guest cannot start: the guest's reason, as ctr shows runc's
    missing = _exec(runner, "x1", "e3", "/no/such/program")
    assert missing.returncode != 0
    assert ("x1's guest could not start the process: cannot run /no/such/program in the guest: No such file or "
            "directory") in missing.stderr, missing.stderr
    # ps lists the container's own processes: the init and the monitor (and no exec's any more)
    pids = runner.ctr("task", "ps", "x1")
    assert pids.returncode == 0, pids.stderr
    listed = [int(line.split()[0]) for line in pids.stdout.splitlines()[1:]]
    qemu = [p for p in runner.monitors() if p in listed]
    assert len(qemu) == 1 and len(listed) == 2, (listed, runner.monitors())
    folder = runner.runc_root / runner.ns / "x1" / "exec"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == 0
    assert sorted(p.name for p in folder.iterdir() if p.is_socket()) == ["0", "1", "2", "3"]
    print(f"guest up after {boot:.1f} s; first exec, whole ctr call: {first:.2f} s")


def test_a_terminal_exec_gets_a_pty_in_the_guest(runner: Runner) -> None:
    _running(runner, "x2")
    command = " ".join([str(runner.daemon.bin_dir / "ctr"), "--address", runner.daemon.address, "--namespace",
                        runner.ns, "task", "exec", "-t", "--exec-id", "t1", "--fifo-dir", str(runner.fifo_dir), "x2",
                        "/bin/sh", "-c", "'/bin/busybox tty; for i in $(/bin/busybox seq 100); do "
                        "s=$(/bin/busybox stty size 2>&1); [ \"$s\" = \"31 97\" ] && break; /bin/busybox sleep 0.1; "
                        "done; echo size $s; exit 5'"])
    proc = subprocess.run(["script", "-qec", f"stty cols 97 rows 31; {command}", "/dev/null"], capture_output=True,
                          text=True, timeout=120, env=runner.daemon.env())
    # script passes the end of its own stdin (it has none here) as a NUL, which a terminal echoes as ^@: the
    # same happens with runc when the process lives long enough to read it
    lines = proc.stdout.replace("\r", "").replace("^@", "").split("\n")
    # ctr sets the size once the exec runs: the shim resizes the master, the host process gets SIGWINCH
    assert "/dev/pts/0" in lines and "size 31 97" in lines, proc.stdout + proc.stderr
    assert proc.returncode == 5, proc.stdout + proc.stderr


def test_a_signal_reaches_the_exec_in_the_guest_and_sigkill_ends_it_there_too(runner: Runner) -> None:
    _running(runner, "x3")
    sleeper = _background(runner, "x3", "s1", "/bin/busybox", "sleep", "301")
    assert ctd.wait_for(lambda: _guest_has(runner, "x3", "sleep 301"), timeout=60, interval=0.5)
    assert runner.ctr("task", "kill", "--exec-id", "s1", "x3").returncode == 0  # SIGTERM, forwarded into the guest
    sleeper.wait(timeout=60)
    assert sleeper.returncode == 143, sleeper.communicate()
    assert not _guest_has(runner, "x3", "sleep 301")
    # SIGKILL cannot be forwarded: it kills the exec's host process, and the guest kills what it ran
    sleeper = _background(runner, "x3", "s2", "/bin/busybox", "sleep", "302")
    assert ctd.wait_for(lambda: _guest_has(runner, "x3", "sleep 302"), timeout=60, interval=0.5)
    assert runner.ctr("task", "kill", "--exec-id", "s2", "--signal", "SIGKILL", "x3").returncode == 0
    sleeper.wait(timeout=60)
    assert sleeper.returncode == 137
    assert ctd.wait_for(lambda: not _guest_has(runner, "x3", "sleep 302"), timeout=30, interval=0.5)


def test_an_exec_ends_with_an_error_when_the_guest_dies_under_it(runner: Runner) -> None:
    _running(runner, "x4")
    sleeper = _background(runner, "x4", "d1", "/bin/busybox", "sleep", "303")
    assert ctd.wait_for(lambda: _guest_has(runner, "x4", "sleep 303"), timeout=60, interval=0.5)
    t0 = time.monotonic()
    panic = _exec(runner, "x4", "d2", "/bin/sh", "-c", "echo c > /proc/sysrq-trigger")  # the guest's kernel panics
    _, err = sleeper.communicate(timeout=60)
    took = time.monotonic() - t0
    for code, stderr in ((panic.returncode, panic.stderr), (sleeper.returncode, err)):
        assert code == 137, (code, stderr)
        assert "container x4's guest stopped while this exec ran" in stderr, stderr
    runner.wait_status("x4", "STOPPED")
    assert runner.ctr("task", "delete", "x4").returncode == 0
    print(f"both execs ended {took:.1f} s after the panic began")


def test_the_shims_exec_flags_never_reach_a_parser_error(runner: Runner, tmp_path: Path) -> None:
    _running(runner, "x6")
    log = tmp_path / "log.json"
    root = str(runner.runc_root / runner.ns)
    argv = [UKRUN, "--root", root, "--log", str(log), "--log-format", "json", "exec", "--process",
            str(tmp_path / "missing.json"), "--detach", "--pid-file", str(tmp_path / "e.pid"), "--bogus", "x6"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={**os.environ})
    assert proc.returncode == 1 and "usage" not in (proc.stdout + proc.stderr).lower()
    assert '"level": "error"' in log.read_text() and "unknown flag --bogus" in log.read_text()


def test_an_exec_killed_while_the_guest_boots_takes_its_host_process_along(runner: Runner) -> None:
    # exec killed at once: its host process, waiting for the guest to boot and answer, dies with it
    # (PR_SET_PDEATHSIG) instead of holding an exec port and a place in the container's cgroup meanwhile
    proc = runner.run("x8", "/bin/sh", "/app/run.sh", "sleep", flags=("--detach",))
    assert proc.returncode == 0, proc.stderr
    runner.wait_status("x8", "RUNNING")
    arm_file(runner.daemon.dir).write_text("exec-after-fork")
    assert _exec(runner, "x8", "k1", "/bin/busybox", "sleep", "306").returncode != 0
    assert not arm_file(runner.daemon.dir).exists()
    time.sleep(2)  # the guest is still booting (seconds under TCG): a surviving host process would still wait
    pids = runner.ctr("task", "ps", "x8").stdout.splitlines()[1:]
    assert len(pids) == 2, pids


def test_execs_beyond_the_guests_ports_are_refused_and_a_killed_exec_leaves_nothing(runner: Runner) -> None:
    _running(runner, "x7")
    sleepers = [_background(runner, "x7", f"p{i}", "/bin/busybox", "sleep", f"31{i}") for i in range(4)]
    # the shim's pid file of an exec exists once the guest has started its process
    bundle = runner.daemon.dir / "state" / "io.containerd.runtime.v2.task" / runner.ns / "x7"
    started = ctd.wait_for(lambda: all((bundle / f"p{i}.pid").exists() for i in range(4)), timeout=120, interval=0.5)
    assert started, _not_started(bundle, sleepers)
    fifth = _exec(runner, "x7", "p4", "/bin/true")
    assert fifth.returncode != 0
    assert "container x7 already runs 4 execs, as many as its guest serves at once: wait for one to end" in fifth.stderr
    for i, sleeper in enumerate(sleepers):
        runner.ctr("task", "kill", "--exec-id", f"p{i}", "--signal", "SIGKILL", "x7")
        sleeper.wait(timeout=60)
    # exec killed after the guest started its process, before it wrote the pid file: its host process dies
    # with it (PR_SET_PDEATHSIG), and the guest kills what that process held
    arm_file(runner.daemon.dir).write_text("exec-before-pid-file")
    assert _exec(runner, "x7", "k1", "/bin/busybox", "sleep", "305").returncode != 0
    assert not arm_file(runner.daemon.dir).exists()
    assert ctd.wait_for(lambda: not _guest_has(runner, "x7", "sleep 305"), timeout=30, interval=0.5)
    pids = runner.ctr("task", "ps", "x7").stdout.splitlines()[1:]
    assert len(pids) == 2, pids  # the init and qemu: no exec's host process stayed


HOSTILE_AGENT = """#!/bin/sh
# Answers any exec with the header of a 2 GiB stdout frame, then nothing.
b=/bin/busybox
for i in $($b seq 200); do
  for d in /sys/class/virtio-ports/*; do
    [ "$($b cat $d/name 2>/dev/null)" = io.ukrun.exec.0 ] && port=/dev/${d##*/}
  done
  [ -n "$port" ] && break
  $b sleep 0.05
done
$b printf 'O\\177\\377\\377\\377' > "$port"
exec $b sleep 1000 < "$port"
"""


def test_what_a_hostile_guest_sends_back_ends_the_exec_at_once(runner: Runner, image_dir: Path) -> None:
    from ukrun.image.build import Entry

    image = "ukrun/hostile-agent:1"
    tar = guest.linux_image(image_dir / "guest", image, APP,
                            above=[[Entry("/.ukrun/exec-agent", data=HOSTILE_AGENT.encode(), mode=0o755)]])
    runner.daemon.import_image(runner.ns, tar, SNAPSHOTTER)
    log = runner.fifo_dir.parent / "h1.log"
    proc = runner.run("h1", "/bin/sh", "/app/run.sh", "sleep", image=image,
                      flags=("--detach", "--log-uri", f"file://{log}"))
    assert proc.returncode == 0, proc.stderr
    assert ctd.wait_for(lambda: log.exists() and "guest sleeping" in log.read_text(), timeout=120, interval=0.2)
    t0 = time.monotonic()
    refused = _exec(runner, "h1", "e1", "/bin/true", timeout=60)
    took = time.monotonic() - t0
    assert refused.returncode != 0 and "container h1: the guest sent a O frame of 2147483647 bytes" in refused.stderr, (
        refused.stderr)
    assert took < 30, took  # never the wait for a payload that will not come
    assert len(runner.ctr("task", "ps", "h1").stdout.splitlines()[1:]) == 2
