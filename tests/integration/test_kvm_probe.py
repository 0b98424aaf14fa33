"""The KVM probe boots a real 512-byte guest under qemu: it must tell a launch that runs from one that cannot, and
an accelerator that runs guest code at the hardware's speed from one that emulates it."""

import shutil

from ukrun import kvm
from ukrun.hypervisors.qemu import Qemu


def test_the_probe_sees_a_guest_run_and_a_launch_fail() -> None:
    qemu = shutil.which(Qemu.binary)
    assert qemu, "qemu is installed by scripts/setup"
    assert kvm.boots(qemu, Qemu.accel_args("tcg"))  # the sector ran and wrote its code to the exit port
    assert not kvm.boots(qemu, ["-accel", "tcg", "-cpu", "no-such-cpu-model"])  # qemu refuses to start
    assert Qemu().kvm_probe_args() == Qemu.accel_args("kvm")  # the probe uses the launch's own flags


def test_an_accelerator_that_runs_guest_code_slowly_does_not_count() -> None:
    """TCG paced to 128 ns an instruction (icount with align) runs the sector's count as slowly as an emulating KVM
    does (seen: 5 s; qemu's plain TCG takes 0.1 s): the sector still reaches its port, but not within the deadline."""
    qemu = shutil.which(Qemu.binary)
    assert qemu, "qemu is installed by scripts/setup"
    paced = ["-accel", "tcg", "-icount", "shift=7,align=on"]
    assert kvm.boots(qemu, paced, timeout=60)  # it runs: only its speed is refused
    assert not kvm.boots(qemu, paced)
