"""Whether `exec` can start a process in a container's guest, decided at `create` with the rest of the plan.

Only a Linux guest started with ukrun's init contract can: its init starts the image's exec agent
(`/.ukrun/exec-agent`, which `ukrun build` puts in images), and qemu gives the VM `PORTS` virtio-serial
ports, `io.ukrun.exec.<i>`, each served on a Unix socket `<i>` in the container's own `exec` folder (mode
0700, root's: no new way into the host, and nothing listens before the VM runs). Each port carries one
session at a time, so a container serves `PORTS` execs at once; the guest's kernel gives each port
128 pages of receive buffers, which is why there are few. Every other guest gets, instead of ports, the
sentence `exec` answers with: which guest, and what to do instead. Pure: runtime.plan calls it.
"""

from __future__ import annotations

from ukrun.hypervisors.base import Hypervisor, SerialPort
from ukrun.runtime.shareplan import SUN_PATH_MAX
from ukrun.runtime.state import EXEC_FOLDER
from ukrun.tuples import NamedTuple
from ukrun.unikernels.base import GuestRequest, UnikernelType

PORTS = 4
PORT_NAME = "io.ukrun.exec."
AGENT = "/.ukrun/exec-agent"  # in the image


class ExecPlan(NamedTuple):
    ports: tuple[SerialPort, ...]  # empty: no exec
    folder: str = ""
    refusal: str = ""  # why not, for `exec` to answer


def exec_plan(guest: UnikernelType, monitor: Hypervisor, req: GuestRequest, state_dir: str,
              agent: bool) -> ExecPlan:
    folder = f"{state_dir}/{EXEC_FOLDER}"  # the sockets 0..PORTS-1 and their locks <i>.lock
    refusal = _refusal(guest, monitor, req, folder, agent)
    if refusal:
        return ExecPlan((), "", refusal)
    return ExecPlan(tuple(SerialPort(f"{PORT_NAME}{i}", f"{folder}/{i}") for i in range(PORTS)), folder)


def _refusal(guest: UnikernelType, monitor: Hypervisor, req: GuestRequest, folder: str, agent: bool) -> str:
    refusal = guest.exec_refusal(req)
    if refusal:
        return refusal
    if not monitor.serial_ports:
        return (f"exec into a Linux guest goes over virtio-serial ports, which monitor {monitor.name} does not "
                "give it here: run the container on qemu")
    if not agent:
        return (f"its image has no exec agent at {AGENT}: rebuild the image with `ukrun build`, which adds it to "
                "Linux images")
    last = f"{folder}/{PORTS - 1}"
    if len(last.encode()) > SUN_PATH_MAX:
        return (f"its exec sockets' path {last} is over {SUN_PATH_MAX} bytes, a Unix socket's limit: use a "
                "shorter runtime root (--root) or container ID")
    return ""
