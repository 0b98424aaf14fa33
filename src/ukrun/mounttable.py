"""The mount table (/proc/<pid>/mountinfo) at its lightest: the standard library's `os` alone.

For the container's init, which lists the mount points of its new mount namespace on every `create`
while `create` waits for it (ukrun.host, with pathlib and typing, cost it 18 ms to import); ukrun.host
builds its full records on the same unescaping, so the two never disagree on a name."""

from __future__ import annotations


def unescape(field: str) -> str:
    """A mountinfo field: the kernel escapes space, tab, newline and backslash as \\ooo (octal)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mount_points(pid: str = "self") -> list[str]:
    """Every mount point of the process's mount namespace, in the table's order."""
    with open(f"/proc/{pid}/mountinfo") as f:
        return [unescape(fields[4]) for fields in (line.split() for line in f) if len(fields) > 4]
