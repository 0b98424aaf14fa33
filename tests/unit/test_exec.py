"""exec's pure parts: the plan that decides whether a guest serves exec, the wire's checks of what a guest
sends, the OCI process an exec runs, and the flags of runc's verbs as the shim passes them."""

from __future__ import annotations

import pytest

from tests.unit.test_plan import BLOCK_ROOT, DIR_ROOT, EXT2_ROOT, STATE, facts
from ukrun import execwire as wire
from ukrun.errors import UkrunError
from ukrun.runtime.execverb import parse_process
from ukrun.runtime.plan import plan
from ukrun.verbargs import UsageError, parse

# -- the plan ------------------------------------------------------------------------------------------


def test_a_linux_guest_whose_image_carries_the_agent_gets_exec_ports_on_qemu() -> None:
    p = plan(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True)._replace(exec_agent=True))
    assert p.exec.refusal == "" and p.exec.folder == f"{STATE}/exec"
    assert [(port.name, port.socket) for port in p.exec.ports] == [
        (f"io.ukrun.exec.{i}", f"{STATE}/exec/{i}") for i in range(4)]
    assert "ukrun.exec=4" in p.cmdline.split(" -- ")[0].split()
    argv = " ".join(p.argv)
    assert "-device virtio-serial-pci,id=ukserial" in argv
    for i in range(4):
        assert (f"-chardev socket,id=ukport{i},path={STATE}/exec/{i},server=on,wait=off -device "
                f"virtserialport,bus=ukserial.0,chardev=ukport{i},name=io.ukrun.exec.{i}") in argv
    shared = plan(facts("linux", "qemu", rootfs=DIR_ROOT, mount_rootfs=True)._replace(exec_agent=True))
    assert len(shared.exec.ports) == 4 and "ukrun.exec=4" in shared.cmdline


def test_the_exec_socket_path_is_escaped_for_qemu() -> None:
    f = facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True)._replace(exec_agent=True, state_dir="/run/a,b")
    assert "path=/run/a,,b/exec/0,server=on" in " ".join(plan(f).argv)


@pytest.mark.parametrize(("guest", "monitor", "kwargs", "reason"), [
    ("unikraft", "qemu", {}, "a Unikraft unikernel runs a single application and cannot start another process; "
     "to look inside it, read its output (ctr task logs, kubectl logs), probe it over the network (an httpGet or "
     "tcpSocket probe instead of an exec probe), or package the application as a Linux guest"),
    ("mirage", "spt", {}, "a Solo5 unikernel (MirageOS and the like) runs a single application"),
    ("mirage", "hvt", {}, "a Solo5 unikernel (MirageOS and the like) runs a single application"),
    ("rumprun", "hvt", {"rootfs": EXT2_ROOT, "mount_rootfs": True}, "a Rumprun unikernel runs a single"),
    ("hermit", "qemu", {"initrd": "/initrd"}, "a Hermit unikernel runs a single application"),
    ("mewz", "qemu", {}, "a Mewz unikernel runs a single application"),
    ("linux", "qemu", {"initrd": "/initrd"}, "this Linux guest boots from its initrd and runs its process as init"),
    ("linux", "qemu", {"rootfs": BLOCK_ROOT, "mount_rootfs": True, "args": ("/urunit", "/app")},
     "this Linux guest's init is urunit, which serves no exec"),
    ("linux", "firecracker", {"rootfs": BLOCK_ROOT, "mount_rootfs": True},
     "exec into a Linux guest goes over virtio-serial ports, which monitor firecracker does not give it here"),
])
def test_every_other_guest_gets_the_sentence_exec_answers_with(guest: str, monitor: str, kwargs: dict[str, object],
                                                               reason: str) -> None:
    p = plan(facts(guest, monitor, **kwargs)._replace(exec_agent=True))  # type: ignore[arg-type]
    assert p.exec.ports == () and p.exec.refusal.startswith(reason), p.exec.refusal
    assert "ukrun.exec" not in p.cmdline and "virtio-serial" not in " ".join(p.argv)


def test_an_image_without_the_agent_or_a_root_too_long_for_sockets_gets_no_ports() -> None:
    no_agent = plan(facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True))
    assert no_agent.exec.refusal.startswith("its image has no exec agent at /.ukrun/exec-agent: rebuild the image "
                                            "with `ukrun build`")
    deep = facts("linux", "qemu", rootfs=BLOCK_ROOT, mount_rootfs=True)._replace(
        exec_agent=True, state_dir="/run/" + "r" * 100)
    assert "over 107 bytes, a Unix socket's limit" in plan(deep).exec.refusal


# -- the wire -------------------------------------------------------------------------------------------

NONCE = b"12345678"


def _started(pid: int = 42, nonce: bytes = NONCE) -> bytes:
    return b"P" + (12).to_bytes(4, "big") + nonce + pid.to_bytes(4, "big")


def test_frames_before_this_sessions_answer_are_an_earlier_sessions_and_dropped() -> None:
    r = wire.Reader(NONCE)
    stale = wire.frame(b"O", b"old output") + wire.frame(b"X", b"\0\0\0\0\1") + _started(7, b"87654321")
    assert r.feed(stale) == []
    out = r.feed(_started(42) + wire.frame(b"O", b"new")[:6])  # the second frame arrives in two reads
    assert out == [(wire.STARTED, NONCE + (42).to_bytes(4, "big"))]
    assert r.feed(wire.frame(b"O", b"new")[6:]) == [(wire.STDOUT, b"new")]


@pytest.mark.parametrize(("data", "message"), [
    (b"Z\0\0\0\0", "unknown exec frame type 90"),
    (b"O\x7f\xff\xff\xff", "a O frame of 2147483647 bytes"),  # refused on its header, before any payload
    (b"P\0\0\0\x0d" + b"x" * 13, "a P frame of 13 bytes"),
    (b"F\0\0\x08\x00", "a F frame of 2048 bytes"),
    (b"X\0\0\0\x04abcd", "a X frame of 4 bytes"),
])
def test_what_no_agent_sends_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(wire.ProtocolError, match=message):
        wire.Reader(NONCE).feed(data)


def test_an_answer_twice_and_impossible_exits_are_refused() -> None:
    r = wire.Reader(NONCE)
    r.feed(_started())
    with pytest.raises(wire.ProtocolError, match="answered the same exec twice"):
        r.feed(_started())
    assert wire.exit_status(b"\0\0\0\0\x07") == (False, 7)
    assert wire.exit_status(b"\1\0\0\0\x0f") == (True, 15)
    for bad in (b"\0\0\0\1\0", b"\1\0\0\0\0", b"\1\0\0\0\x41", b"\2\0\0\0\1"):
        with pytest.raises(wire.ProtocolError, match="impossible exit"):
            wire.exit_status(bad)


def test_the_guests_words_reach_a_log_as_one_short_printable_line() -> None:
    assert wire.text(b"no such\nfile\x1b[31m \xff") == "no such?file?[31m \ufffd"
    assert len(wire.text(b"a" * 5000)) == wire.MAX_MESSAGE


def test_start_carries_the_process_as_the_agent_reads_it() -> None:
    p = wire.Process(["/bin/sh", "-c", "x"], ["A=1"], "/app", uid=1000, gid=1001, groups=(5, 6), terminal=True,
                     rows=31, cols=97)
    data = wire.start(NONCE, p)
    assert data[:1] == b"S" and int.from_bytes(data[1:5], "big") == len(data) - 5
    body = data[5:]
    assert body[:4] == b"UKX1" and body[4:12] == NONCE
    fields = [int.from_bytes(body[i:i + 4], "big") for i in range(12, 28, 4)]
    assert fields == [1000, 1001, wire.NO_UMASK, 1]
    assert (int.from_bytes(body[28:30], "big"), int.from_bytes(body[30:32], "big")) == (31, 97)
    assert [int.from_bytes(body[i:i + 4], "big") for i in range(32, 44, 4)] == [2, 3, 1]
    assert body[44:52] == b"\0\0\0\5\0\0\0\6"
    assert body[52:].split(b"\0") == [b"/app", b"/bin/sh", b"-c", b"x", b"A=1", b""]


# -- the process ------------------------------------------------------------------------------------------


def test_the_oci_process_of_an_exec() -> None:
    p = parse_process({"args": ["/bin/ls", "-l"], "env": ["PATH=/bin"], "cwd": "/data", "terminal": True,
                       "consoleSize": {"height": 24, "width": 80},
                       "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20], "umask": 18}}, "p.json")
    assert (p.args, p.env, p.cwd, p.terminal, p.rows, p.cols) == (["/bin/ls", "-l"], ["PATH=/bin"], "/data", True,
                                                                  24, 80)
    assert (p.uid, p.gid, p.groups, p.umask) == (1000, 100, (10, 20), 0o22)


@pytest.mark.parametrize(("doc", "message"), [
    ({"args": "ls"}, "args must be a list of strings"),
    ({"args": ["ls"], "env": [1]}, "env must be a list of strings"),
    ({"args": ["ls"], "user": {"uid": -1}}, "user.uid -1 is not a number"),
    ({"args": ["ls"], "user": {"uid": True}}, "user.uid True is not a number"),
    ({"args": ["ls"], "terminal": "yes"}, "terminal must be a bool"),
    ({"args": ["ls"], "user": {"additionalGids": 5}}, "additionalGids must be a list"),
])
def test_a_malformed_process_is_refused_naming_the_field(doc: dict[str, object], message: str) -> None:
    with pytest.raises(UkrunError, match=message):
        parse_process(doc, "p.json")


# -- runc's flags ---------------------------------------------------------------------------------------


def test_the_shims_exec_and_ps_command_lines_parse() -> None:
    args = parse("exec", ["--process", "/tmp/runc-process1", "--console-socket", "/tmp/pty.sock", "--detach",
                          "--pid-file", "/b/e1.pid", "c1"])
    assert (args.id, args.value("--process"), args.value("--pid-file"), args.has("--detach")) == (
        "c1", "/tmp/runc-process1", "/b/e1.pid", True)
    by_hand = parse("exec", ["-t", "-e", "A=1", "--env=B=2", "c1", "ls", "-l", "--color"])
    assert (by_hand.flags["--env"], by_hand.has("--tty")) == (["A=1", "B=2"], True)
    assert by_hand.rest == ["ls", "-l", "--color"]
    ps = parse("ps", ["--format", "json", "c1"])
    assert (ps.value("--format"), ps.id, ps.rest) == ("json", "c1", [])
    assert parse("ps", ["c1", "-o", "pid,args"]).rest == ["-o", "pid,args"]
    assert parse("update", ["--resources", "-", "c1"]).value("--resources") == "-"
    assert not parse("exec", ["--detach=false", "c1", "ls"]).has("--detach")


@pytest.mark.parametrize(("verb", "argv", "message"), [
    ("exec", ["--bogus", "c1"], "exec: unknown flag --bogus"),
    ("exec", ["--pid-file"], "exec: flag --pid-file needs a value"),
    ("pause", [], "pause needs a container ID"),
    ("exec", ["--tty=yes", "c1"], "exec: switch --tty takes no value"),
])
def test_a_bad_command_line_is_one_sentence(verb: str, argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(verb, argv)


def test_every_guest_type_names_itself_in_exec_s_sentence() -> None:
    from ukrun.unikernels import base

    base.get("linux")  # imports every guest type
    for name, cls in sorted(base.REGISTRY.items()):
        assert getattr(cls, "label", ""), f"guest type {name} has no label for exec's sentence"
