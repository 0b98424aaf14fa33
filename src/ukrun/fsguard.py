"""A seccomp filter that keeps a process from making set-user-ID or set-group-ID files and device nodes:
for virtiofsd, which writes into the container's rootfs folder on the host whatever the guest asks.

virtiofsd runs as root so that the guest's files keep their owners; dropping capabilities (its
`--modcaps=-mknod:-setfcap`, see runtime.shareplan) stops device nodes and file capabilities, but no
capability stops an owner (root, for the guest's root) from setting the set-ID bits of its own file. So
the container's init installs this filter in virtiofsd's process before it runs it (filters are kept
across execve and inherited by every thread and child, and virtiofsd's own filter only adds to it):
- chmod, fchmod, fchmodat with a mode holding S_ISUID or S_ISGID: EPERM;
- open, openat, creat that create a file (O_CREAT, O_TMPFILE) with such a mode: EPERM;
- mknod, mknodat of a character or block device, or with such a mode: EPERM;
- openat2 and fchmodat2, whose mode it cannot see (inside a struct, or new), and io_uring_setup: ENOSYS,
  so that virtiofsd uses openat and fchmodat (it probes openat2 at start and falls back);
- a system call of another ABI (i386 through int 0x80, x32): the process is killed.
The guest then gets EPERM for what it asked. Known for x86_64 and aarch64; `supported()` says where.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from ukrun.tuples import NamedTuple

PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_NO_NEW_PRIVS = 22, 2, 38
RET_ALLOW, RET_KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
LD_ABS, JEQ, JSET, JGE, AND, RET = 0x20, 0x15, 0x45, 0x35, 0x54, 0x06
SETID = 0o6000  # S_ISUID | S_ISGID
CREATES = 0o100 | 0o20000000  # O_CREAT | __O_TMPFILE
S_IFMT, S_IFCHR, S_IFBLK = 0o170000, 0o020000, 0o060000
X32 = 0x40000000


class Abi(NamedTuple):
    """One architecture's audit number and system call numbers (None: it has no such call)."""

    audit: int
    calls: dict[str, int | None]


ABIS = {
    "x86_64": Abi(0xC000003E, {"chmod": 90, "fchmod": 91, "fchmodat": 268, "open": 2, "openat": 257, "creat": 85,
                               "mknod": 133, "mknodat": 259, "openat2": 437, "fchmodat2": 452,
                               "io_uring_setup": 425}),
    "aarch64": Abi(0xC00000B7, {"chmod": None, "fchmod": 52, "fchmodat": 53, "open": None, "openat": 56,
                                "creat": None, "mknod": None, "mknodat": 33, "openat2": 437, "fchmodat2": 452,
                                "io_uring_setup": 425}),
}
# Which argument holds the mode (and the open flags) of each call.
MODE_ARG = {"chmod": 1, "fchmod": 1, "fchmodat": 2, "creat": 1}
OPEN_ARGS = {"open": (1, 2), "openat": (2, 3)}  # (flags, mode)
MKNOD_ARG = {"mknod": 1, "mknodat": 2}
HIDDEN = ("openat2", "fchmodat2", "io_uring_setup")


def supported(machine: str = os.uname().machine) -> bool:
    return machine in ABIS


def _arg(i: int) -> int:
    return 16 + 8 * i  # the low 32 bits of seccomp_data.args[i] (little-endian)


def program(machine: str = os.uname().machine) -> list[tuple[int, int, int, int]]:
    """The filter, as (code, jt, jf, k) instructions."""
    abi = ABIS[machine]
    eperm, enosys = RET_ERRNO | errno.EPERM, RET_ERRNO | errno.ENOSYS
    out = [(LD_ABS, 0, 0, 4), (JEQ, 1, 0, abi.audit), (RET, 0, 0, RET_KILL_PROCESS), (LD_ABS, 0, 0, 0)]
    if machine == "x86_64":
        out += [(JGE, 0, 1, X32), (RET, 0, 0, RET_KILL_PROCESS)]

    def block(name: str, body: list[tuple[int, int, int, int]]) -> None:
        """`body` for call `name`, skipped (the number still loaded) for any other; it ends in a return."""
        nr = abi.calls[name]
        if nr is not None:
            out.extend([(JEQ, 0, len(body), nr), *body])

    for name in HIDDEN:
        block(name, [(RET, 0, 0, enosys)])
    for name, i in MODE_ARG.items():
        block(name, [(LD_ABS, 0, 0, _arg(i)), (JSET, 0, 1, SETID), (RET, 0, 0, eperm), (RET, 0, 0, RET_ALLOW)])
    for name, (flags, mode) in OPEN_ARGS.items():
        block(name, [(LD_ABS, 0, 0, _arg(flags)), (JSET, 0, 3, CREATES), (LD_ABS, 0, 0, _arg(mode)),
                     (JSET, 0, 1, SETID), (RET, 0, 0, eperm), (RET, 0, 0, RET_ALLOW)])
    for name, i in MKNOD_ARG.items():
        block(name, [(LD_ABS, 0, 0, _arg(i)), (JSET, 4, 0, SETID), (AND, 0, 0, S_IFMT), (JEQ, 2, 0, S_IFCHR),
                     (JEQ, 1, 0, S_IFBLK), (RET, 0, 0, RET_ALLOW), (RET, 0, 0, eperm)])
    return [*out, (RET, 0, 0, RET_ALLOW)]


def install(machine: str = os.uname().machine) -> None:
    """Installs the filter on this process, and no_new_privs (nothing it runs may gain privileges through
    execve; a root process keeps what it has): it holds for all the process runs after."""
    code = b"".join(struct.pack("=HBBI", *ins) for ins in program(machine))
    buffer = ctypes.create_string_buffer(code, len(code))

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = Prog(len(code) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if (libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            or libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0):
        err = ctypes.get_errno()
        raise OSError(err, f"cannot install ukrun's seccomp filter: {os.strerror(err)}")
