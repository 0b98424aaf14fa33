"""Golden plans for a folder rootfs over virtio-fs, and the rule that chooses it over 9p.

Sources of the expectations (facts, not code):
  qemu        docs/system/devices/vhost-user: `-chardev socket,path=` and `-device vhost-user-fs-pci,chardev=,tag=`
              need the guest's RAM shared: `-object memory-backend-memfd,share=on` as the NUMA node's memory
  virtiofsd   `virtiofsd --help` (1.13): --fd (a listening socket), --shared-dir, --sandbox, --cache, --log-level
  linux       Documentation/filesystems/virtiofs.rst and init/do_mounts.c: `root=<tag> rootfstype=virtiofs`
  urunc       its rootfs selection: virtio-fs first when guest, monitor and virtiofsd support it, else 9p;
              only Linux guests read virtio-fs; cloud-hypervisor shares over virtio-fs, firecracker not at all
  unikraft    drivers/virtio: 9p, blk, net; no virtio-fs driver
"""

from __future__ import annotations

import pytest

from tests.unit.test_plan import DIR_ROOT, STATE, facts
from ukrun.errors import PlanError
from ukrun.runtime.plan import Facts, FilesTarget, plan
from ukrun.runtime.shareplan import SHARE_ANNOTATION, VirtiofsdFacts
from ukrun.unikernels.base import RootMode

VFSD = VirtiofsdFacts("/usr/libexec/virtiofsd", True)


def folder(guest: str = "linux", monitor: str = "qemu", *, share: str = "auto", vfsd: VirtiofsdFacts = VFSD,
           annotation: str = "", memory: int = 0) -> Facts:
    f = facts(guest, monitor, rootfs=DIR_ROOT, mount_rootfs=True, initrd="/initrd" if guest == "linux" else "")
    f = f._replace(rootfs_share=share, virtiofsd=vfsd,
                   annotations=((SHARE_ANNOTATION, annotation),) if annotation else ())
    if memory:
        f = f._replace(resources=f.resources._replace(memory_limit=memory << 20))
    return f


def test_linux_on_qemu_from_a_folder_over_virtiofs() -> None:
    p = plan(folder(memory=512))
    assert p.root is RootMode.VIRTIOFS
    assert p.cmdline == ("panic=-1 console=ttyS0 root=fs0 rw rootfstype=virtiofs A=1 quiet loglevel=3 "
                         "ukrun.root=virtiofs:fs0 ukrun.files=9p:ukrun ukrun.process=/.ukrun/process.sh "
                         "init=/app -- run")
    sock = f"{STATE}/virtiofs.sock"
    assert list(p.argv) == [
        "/usr/bin/qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-m", "512", "-smp", "1",
        "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none", "-serial", "stdio", "-monitor", "none",
        "-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-numa", "node,memdev=mem",
        "-kernel", "/views/v/kernel", "-append", p.cmdline, "-initrd", "/views/v/initrd",
        "-fsdev", f"local,id=ukrun,path={STATE}/guest,security_model=none,multidevs=remap,readonly=on",
        "-device", "virtio-9p-pci,fsdev=ukrun,mount_tag=ukrun",
        "-chardev", f"socket,id=vfs0,path={sock}", "-device", "vhost-user-fs-pci,chardev=vfs0,tag=fs0",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x4",
        "-device", "pvpanic-pci", "-action", "panic=exit-failure",
    ]
    assert p.virtiofsd is not None
    assert p.virtiofsd.argv == ("/usr/libexec/virtiofsd", "--fd=3", "--shared-dir=/run/b/c1/rootfs",
                                "--sandbox=namespace", "--cache=always", "--log-level=warn",
                                "--modcaps=-mknod:-setfcap")
    assert (p.virtiofsd.socket, p.virtiofsd.shared_dir) == (sock, "/run/b/c1/rootfs")
    assert p.virtiofsd.log == f"{STATE}/virtiofsd.log"
    # ukrun still writes nothing into the folder: its files go on the read-only 9p share.
    assert p.files_target is FilesTarget.SHARE and [s.tag for s in p.shares] == ["ukrun"]
    assert p.to_json()["virtiofsd"]["socket"] == sock


def test_auto_is_uruncs_rule_and_falls_back_to_9p() -> None:
    assert plan(folder()).root is RootMode.VIRTIOFS
    p = plan(folder(vfsd=VirtiofsdFacts()))
    assert p.root is RootMode.SHARED and p.virtiofsd is None
    assert any("no virtiofsd is configured" in n for n in p.notes)
    p = plan(folder("unikraft"))  # Unikraft has no virtio-fs driver
    assert p.root is RootMode.SHARED and any("no virtio-fs driver" in n for n in p.notes)
    assert "-chardev" not in p.argv and "memory-backend-memfd" not in " ".join(p.argv)
    p = plan(folder(vfsd=VFSD._replace(confined=False)))  # a machine whose system calls fsguard does not know
    assert p.root is RootMode.SHARED and any("cannot confine virtiofsd" in n for n in p.notes)


def test_9p_by_config_and_virtiofs_by_annotation() -> None:
    assert plan(folder(share="9p")).root is RootMode.SHARED
    assert plan(folder(share="9p", annotation="virtiofs")).root is RootMode.VIRTIOFS
    assert plan(folder(share="virtiofs", annotation="9p")).root is RootMode.SHARED
    # 9p never looks at virtiofsd, even a broken one
    assert plan(folder(share="9p", vfsd=VirtiofsdFacts("/nope", False))).root is RootMode.SHARED


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"share": "virtiofs", "vfsd": VirtiofsdFacts()}, "configure [extra_binaries.virtiofsd] path"),
    ({"annotation": "virtiofs", "vfsd": VirtiofsdFacts("/opt/vfsd", False)}, "'/opt/vfsd' is not an executable"),
    ({"vfsd": VirtiofsdFacts("/opt/vfsd", False)}, "install virtiofsd there"),  # auto: refused, not passed over
    ({"annotation": "nfs"}, "is not one of auto, 9p, virtiofs"),
])
def test_virtiofs_that_cannot_run_is_refused_naming_the_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan(folder(**kwargs))  # type: ignore[arg-type]


def test_unikraft_chosen_over_virtiofs_is_refused() -> None:
    with pytest.raises(PlanError, match=r"unikraft guest has no virtio-fs driver.*set io\.ukrun\.rootfs\.share=9p"):
        plan(folder("unikraft", annotation="virtiofs"))


def test_monitors_without_virtiofs_here() -> None:
    # firecracker has no virtio-fs device; cloud-hypervisor has `--fs` but no 9p for ukrun's files share.
    for monitor in ("firecracker", "cloud-hypervisor"):
        with pytest.raises(PlanError, match=f"monitor {monitor} cannot share folders"):
            plan(folder(monitor=monitor, annotation="virtiofs"))


def test_virtiofsd_options_add_to_and_replace_ukruns() -> None:
    p = plan(folder(vfsd=VFSD._replace(options="--cache auto --sandbox=chroot --xattr")))
    assert p.virtiofsd is not None
    assert p.virtiofsd.argv[3:] == ("--log-level=warn", "--modcaps=-mknod:-setfcap", "--cache", "auto",
                                    "--sandbox=chroot", "--xattr")
    with pytest.raises(PlanError, match="--shared-dir, --socket-path, which ukrun sets"):
        plan(folder(vfsd=VFSD._replace(options="--socket-path=/x --shared-dir /y")))


def test_a_socket_path_over_the_unix_limit_is_refused() -> None:
    f = folder()._replace(state_dir="/run/" + "x" * 100)
    with pytest.raises(PlanError, match="Unix socket's limit: use a shorter runtime root"):
        plan(f)
