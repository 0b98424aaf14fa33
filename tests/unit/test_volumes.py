"""Which mounts of a block volume in other mount namespaces an unmount of its source leaves in place
(runtime.volumes.staying): the kernel's umount propagation, read from mount tables (mountinfo)."""

from __future__ import annotations

from ukrun.host import MountEntry, parse_mountinfo
from ukrun.runtime.volumes import staying

VOL = "7:3"
# The host: / is shared (peer group 1), the volume is mounted at /srv/vol.
HOST = parse_mountinfo(
    "1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "100 1 7:3 / /srv/vol rw,relatime shared:9 - ext4 /dev/loop3 rw,errors=remount-ro\n"
)
SOURCE = HOST[1]


def ns(*lines: str) -> list[MountEntry]:
    return parse_mountinfo("\n".join(lines) + "\n")


def test_the_tags_and_the_file_systems_options_are_read() -> None:
    assert (SOURCE.parent_id, SOURCE.peer, SOURCE.master, SOURCE.super_options) == (1, 9, 0, "rw,errors=remount-ro")
    (slave,) = ns("5 4 0:5 / /x rw master:3 shared:8 propagate_from:2 unbindable - tmpfs t rw")
    assert (slave.peer, slave.master, slave.propagation) == (8, 3, "shared")


def test_a_slave_copy_goes_with_the_unmount_a_private_one_stays() -> None:
    slave = ns("10 0 8:1 / / rw master:1 - ext4 /dev/sda1 rw", "11 10 7:3 / /srv/vol rw master:9 - ext4 /dev/loop3 rw")
    private = ns("20 0 8:1 / / rw - ext4 /dev/sda1 rw", "21 20 7:3 / /srv/vol rw - ext4 /dev/loop3 rw")
    peer = ns("30 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw", "31 30 7:3 / /srv/vol rw shared:9 - ext4 /dev/loop3 rw")
    got = staying(HOST, SOURCE, {1010: slave, 2020: private, 3030: peer})
    assert got == [(2020, private[1])]


def test_a_slave_of_a_slave_receives_it_too() -> None:
    # A namespace made from a shared slave (a container's, made shared again), and one made from that.
    middle = ns("40 0 8:1 / / rw master:1 shared:5 - ext4 /dev/sda1 rw",
                "41 40 7:3 / /srv/vol rw master:9 shared:6 - ext4 /dev/loop3 rw")
    inner = ns("50 0 8:1 / / rw master:5 - ext4 /dev/sda1 rw", "51 50 7:3 / /srv/vol rw master:6 - ext4 /dev/loop3 rw")
    assert staying(HOST, SOURCE, {4040: middle, 5050: inner}) == []


def test_a_copy_elsewhere_or_with_a_mount_on_it_stays() -> None:
    # A bind of the volume somewhere else in a receiving namespace, and a copy something is mounted on.
    moved = ns("60 0 8:1 / / rw master:1 - ext4 /dev/sda1 rw", "61 60 7:3 / /data rw master:9 - ext4 /dev/loop3 rw")
    covered = ns("70 0 8:1 / / rw master:1 - ext4 /dev/sda1 rw",
                 "71 70 7:3 / /srv/vol rw master:9 - ext4 /dev/loop3 rw",
                 "72 71 0:40 / /srv/vol/tmp rw - tmpfs tmpfs rw")
    assert staying(HOST, SOURCE, {6060: moved, 7070: covered}) == [(6060, moved[1]), (7070, covered[1])]


def test_nothing_propagates_from_a_private_parent() -> None:
    host = parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n100 1 7:3 / /srv/vol rw - ext4 /dev/loop3 rw\n")
    copy = ns("10 0 8:1 / / rw - ext4 /dev/sda1 rw", "11 10 7:3 / /srv/vol rw - ext4 /dev/loop3 rw")
    other_fs = ns("12 0 8:1 / / rw - ext4 /dev/sda1 rw", "13 12 7:4 / /srv/vol rw - ext4 /dev/loop4 rw")
    assert staying(host, host[1], {1010: copy, 1212: other_fs}) == [(1010, copy[1])]
    assert copy[1].device == VOL
