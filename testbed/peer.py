"""The peer runtime beside ukrun: urunc, run as its v0.5.0 needs on a machine like this one, for the side-by-side
benchmark (benchmarks.peer). The project never builds or ships urunc: the operator names its binary.

What urunc v0.5.0 needs, and what this module provides:
- a syslog socket at /dev/log: it exits at start when nothing listens there. `Syslog` binds one (and
  drains it) only when none exists or nothing listens on the one there, and removes only the socket it made;
- its monitors on PATH (it has no configuration file), in the environment containerd starts with, since
  the shim and the runtime inherit it. `monitor_dir` holds the Solo5 tenders and, for qemu, a wrapper:
  urunc always passes `-enable-kvm -cpu host`, which a KVM that cannot run guest kernels aborts on; the
  wrapper drops `-enable-kvm` and turns `-cpu host` into `-cpu max` (TCG, as ukrun runs qemu here). A
  `sh` wrapper costs urunc about a millisecond per start;
- images packed as urunc's tooling packs pre-built unikernels: `/urunc.json` with base64 values, the
  same keys as the image's annotations, and `useDMBlock=false` (urunc v0.5.0 takes a missing value for
  true and would hand a Solo5 guest its rootfs as a block device, then fail to delete it). ukrun reads
  the very same images; the kernel is in one marked layer, as `ukrun build` makes it.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import tempfile
import threading
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

from testbed import guest
from testbed.unikernels import SOLO5, UNIKRAFT
from ukrun.image.build import Entry, ImageBuilder
from ukrun.unikernel import PREFIX, URUNC_JSON

DEV_LOG = Path("/dev/log")
QEMU = "qemu-system-x86_64"
QEMU_TCG = """#!/bin/sh
# urunc passes -enable-kvm -cpu host; this machine's KVM cannot run a guest kernel: TCG with -cpu max.
prev=
for a do
  shift
  if [ "$a" = -enable-kvm ]; then :
  elif [ "$prev" = -cpu ] && [ "$a" = host ]; then set -- "$@" max
  else set -- "$@" "$a"
  fi
  prev=$a
done
exec {qemu} "$@"
"""


class Syslog:
    """A datagram socket at /dev/log that reads and drops what is sent, while in the `with` block; nothing
    is done when /dev/log exists already (the machine's own syslog)."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None

    def __enter__(self) -> Syslog:
        if os.path.lexists(DEV_LOG):
            if _listened(DEV_LOG):
                return self
            DEV_LOG.unlink()  # a socket nobody reads (a run that was killed): urunc would fail on it
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(DEV_LOG))
        self.thread = threading.Thread(target=self._drain, args=(self.sock,), daemon=True)
        self.thread.start()
        return self

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.sock is not None:
            DEV_LOG.unlink(missing_ok=True)
            self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None


def _listened(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            return False
        except OSError:
            return True  # not ours to judge (another kind of file): left alone
    return True


def real_qemu() -> str:
    found = subprocess.run(["sh", "-c", f"command -v {QEMU}"], capture_output=True, text=True).stdout.strip()
    if not found:
        raise RuntimeError(f"{QEMU} is not installed")
    return found


def monitor_dir(folder: Path, qemu: str) -> Path:
    """A folder for the front of containerd's PATH: the TCG wrapper as qemu, and the Solo5 tenders."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / QEMU
    wrapper.write_text(QEMU_TCG.format(qemu=qemu))
    wrapper.chmod(0o755)
    for tender in ("solo5-spt", "solo5-hvt"):
        link = folder / tender
        link.unlink(missing_ok=True)
        link.symlink_to(SOLO5 / tender)
    return folder


def version(urunc: str) -> str:
    out = subprocess.run([urunc, "--version"], capture_output=True, text=True, timeout=30).stdout
    first = out.splitlines()[0].strip() if out.strip() else "unknown"
    return first.removeprefix("urunc version ").strip()


TITLES = {"unikraft-qemu": "Unikraft helloworld on qemu (TCG)", "solo5-spt": "Solo5 test_hello on spt",
          "solo5-hvt": "Solo5 test_hello on hvt", "linux-qemu": "linux guest on qemu (TCG), block rootfs"}


class PeerImage(NamedTuple):
    """An image both runtimes run, and how to tell that it ran."""

    key: str  # short name in the tables (TITLES)
    name: str  # the image reference
    tar: Path
    expect: str  # in the container's output
    urunc: bool = True  # urunc v0.5.0 runs this guest type (it has no linux guest)
    args: tuple[str, ...] = ()


def _urunc_json(config: dict[str, str]) -> bytes:
    return json.dumps({PREFIX + k: base64.b64encode(v.encode()).decode() for k, v in config.items()}).encode()


def unikernel_tar(workdir: Path, name: str, kernel: Path, config: dict[str, str]) -> Path:
    """A pre-built unikernel packed as urunc's tooling packs it: the kernel and /urunc.json in one
    (marked) layer, the same keys, plain, as the manifest's annotations and the configuration's labels."""
    out = workdir / f"{name.replace('/', '_').replace(':', '_')}.tar"
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        b = ImageBuilder(name, Path(tmp))
        path = "/" + config["binary"].lstrip("/")
        b.add_layer([Entry(path, source=kernel), Entry(URUNC_JSON, data=_urunc_json(config))],
                    mark=[path, URUNC_JSON])
        b.write(out, {PREFIX + k: v for k, v in config.items()})
    return out


def images(workdir: Path, variant: str) -> list[PeerImage]:
    """The peer images; `variant` goes into their cmdline, so that each variant's artifact layer (and so
    ukrun's view of it) is its own: a variant's first container is the first of its image."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = []
    hello = UNIKRAFT / "ukrun-hello_qemu-x86_64"
    if hello.exists():
        name = f"peer/unikraft-hello-{variant}:1"
        cfg = {"unikernelType": "unikraft", "hypervisor": "qemu", "binary": "/unikernel/kernel",
               "cmdline": f"hello-{variant}", "unikernelVersion": "0.16.3", "useDMBlock": "false"}
        out.append(PeerImage("unikraft-qemu", name,
                             unikernel_tar(workdir, name, hello, cfg), "Hello from Unikraft"))
    for monitor in ("spt", "hvt"):
        kernel = SOLO5 / f"test_hello.{monitor}"
        if kernel.exists() and (SOLO5 / f"solo5-{monitor}").exists():
            name = f"peer/solo5-hello-{monitor}-{variant}:1"
            cfg = {"unikernelType": "mirage", "hypervisor": monitor, "binary": "/unikernel/kernel",
                   "cmdline": f"hello-{variant}", "useDMBlock": "false"}
            out.append(PeerImage(f"solo5-{monitor}", name,
                                 unikernel_tar(workdir, name, kernel, cfg), "Hello, World"))
    return out


LINUX_APP = "#!/bin/sh\ncase \"$1\" in sleep) exec /bin/busybox sleep 600 ;; esac\necho linux guest ran\n"


def linux_image(workdir: Path, variant: str) -> PeerImage:
    """ukrun's linux guest (block rootfs, ukrun's init contract); urunc v0.5.0 has no linux guest type."""
    name = f"peer/linux-{variant}:1"
    tar = guest.linux_image(workdir / "linux", name, f"{LINUX_APP}# {variant}\n")  # below the artifacts
    return PeerImage("linux-qemu", name, tar, "linux guest ran",
                     urunc=False)


def busybox_image(workdir: Path) -> PeerImage:
    """runc's floor: a busybox container."""
    from testbed import images as tbimages

    name = "peer/busybox:1"
    tar = tbimages.raw_image(workdir, name, [[Entry("/bin/busybox", source=guest.BUSYBOX, mode=0o755),
                                              Entry("/bin/sh", symlink="busybox")]])
    return PeerImage("busybox", name, tar, "busybox ran", urunc=False,
                     args=("/bin/busybox", "echo", "busybox ran"))
