"""The KVM probe boots a real 512-byte guest under qemu: it must tell a launch that runs from one that cannot."""

import shutil

from ukrun import kvm
from ukrun.hypervisors.qemu import Qemu


def test_the_probe_sees_a_guest_run_and_a_launch_fail() -> None:
    qemu = shutil.which(Qemu.binary)
    assert qemu, "qemu is installed by scripts/setup"
    assert kvm.boots(qemu, Qemu.accel_args("tcg"))  # the sector ran and wrote its code to the exit port
    assert not kvm.boots(qemu, ["-accel", "tcg", "-cpu", "no-such-cpu-model"])  # qemu refuses to start
    assert Qemu().kvm_probe_args() == Qemu.accel_args("kvm")  # the probe uses the launch's own flags
