"""The KVM probe boots a real 512-byte guest under qemu: it must tell a launch that runs from one that cannot, and
an accelerator that runs guest code at the hardware's speed from one that emulates it."""

import json
import os
import shutil
from pathlib import Path

import pytest

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


def test_an_answer_cached_by_an_earlier_probe_is_asked_again(tmp_path: Path) -> None:
    """A node upgraded within a boot: the earlier ukrun's probe (a sector that only exited) said yes where KVM
    emulates. Its cached answer, keyed without the question, must not be reused: the probe runs again."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        pytest.skip("no usable /dev/kvm: the probe is never run and nothing is cached")
    qemu = shutil.which(Qemu.binary)
    assert qemu, "qemu is installed by scripts/setup"
    refused = ["-accel", "tcg", "-cpu", "no-such-cpu-model"]  # qemu refuses to start: a fresh probe says no
    old_key = f"{kvm._boot_id()} {qemu} {' '.join(refused)}"
    (tmp_path / "kvm-probe.json").write_text(json.dumps({"key": old_key, "kvm": True}))
    assert not kvm.kvm_works(qemu, refused, tmp_path)
    assert json.loads((tmp_path / "kvm-probe.json").read_text())["kvm"] is False  # the new answer is kept
