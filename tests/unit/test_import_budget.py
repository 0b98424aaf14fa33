"""What the shim's verbs import: every container pays it on every call (issue: start latency). Each
module listed here once cost a verb several milliseconds; these tests keep them out."""

import subprocess
import sys
from pathlib import Path

from ukrun.runtime import state as st

HOT_FORBIDDEN = ("typing", "dataclasses", "logging", "argparse", "tomllib", "ukrun.config", "ukrun.containerd")
# hashlib loads OpenSSL's libcrypto (4-6 ms) for the few names ukrun hashes: ukrun.digest hashes them instead.
CREATE_FORBIDDEN = ("dataclasses", "inspect", "logging", "argparse", "tomllib", "datetime", "shutil", "subprocess",
                    "platform", "tempfile", "pyroute2", "asyncio", "grpc", "google.protobuf", "hashlib", "_hashlib")
# What create imports, from the shim's call to the monitor's argv (runtime.create imports the rest lazily).
CREATE_PATH = ("ukrun.fast", "ukrun.config", "ukrun.runtime.create", "ukrun.runtime.plan", "ukrun.runtime.facts",
               "ukrun.artifacts.store", "ukrun.containerd.client", "ukrun.launcher", "ukrun.runtime.rootfs",
               "ukrun.hypervisors", "ukrun.unikernels", "ukrun.network.netlink")


# os brings _collections_abc and posixpath (1.2 ms), and `from __future__` imports a module (0.3 ms): the paths
# that import little else do without them (runtime.state).
NO_OS = ("os", "posixpath", "_collections_abc", "__future__")


def _launched(code: str, env: dict[str, str] | None = None) -> set[str]:
    """The modules `code` loads in the interpreter as ukrun's launcher starts it (-I -S)."""
    import ukrun

    src = str(Path(ukrun.__file__).parent.parent)
    out = subprocess.run([sys.executable, "-I", "-S", "-c",
                          f"import sys\nsys.path.insert(0, {src!r})\n{code}\nprint('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True, env=env or {}).stdout
    return set(out.split())


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def _hits(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))


def test_state_start_and_kill_import_only_the_standard_library_basics(tmp_path: Path) -> None:
    (tmp_path / "c1").mkdir()
    st.save(tmp_path, st.ContainerState(id="c1", bundle="/b", pid=1, pid_start=st.process_start(1), created="x"))
    for verb in ("state c1", "kill c1 0"):  # kill 0: a signal that checks, never one that acts
        argv = ["--root", str(tmp_path), *verb.split()]
        loaded = _loaded(f"import os, sys\nsys.argv = ['ukrun', *{argv!r}]\nfrom ukrun import fast\n"
                         "code = fast.run(sys.argv[1:])\nassert code == 0, code")
        assert _hits(loaded, HOT_FORBIDDEN) == [], verb


def test_a_bare_delete_imports_only_the_standard_library_basics(tmp_path: Path) -> None:
    """A container that holds nothing but its processes, cgroups and state folder (runtime.hot.bare) is deleted
    in the shim's ukrun: without the configuration, pathlib (re, urllib, enum) or contextlib, which made the
    full delete's imports about 25 ms, nor os."""
    (tmp_path / "c1").mkdir()
    st.save(tmp_path, st.ContainerState(id="c1", bundle="/b", created="x", acquired=False))
    loaded = _launched(f"from ukrun import fast\ncode = fast.run(['--root', {str(tmp_path)!r}, 'delete', 'c1'])\n"
                       "assert code == 0, code")
    assert not (tmp_path / "c1").exists()
    forbidden = (*HOT_FORBIDDEN, *NO_OS, "pathlib", "contextlib", "json", "signal", "ukrun.runtime.verbs")
    assert _hits(loaded, forbidden) == []


def test_start_and_kill_load_no_json_signal_or_re(tmp_path: Path) -> None:
    """Their record is marshal's and their timings are written by hand: json, signal and re (with enum) were
    most of what `start` cost, and os most of the rest."""
    (tmp_path / "c1").mkdir()
    log = tmp_path / "timing.jsonl"
    st.save(tmp_path, st.ContainerState(id="c1", bundle="/b", pid=1, pid_start=st.process_start(1), created="x",
                                        timing_log=str(log)))
    loaded = _launched(f"from ukrun import fast, timing\n"
                       f"assert fast.run(['--root', {str(tmp_path)!r}, 'kill', 'c1', '0']) == 0\n"
                       f"t = timing.Timer({str(log)!r}, 'c1', 'start')\nt.mark('x')\nt.flush()")
    assert _hits(loaded, ("json", "signal", "enum", "re", "ukrun.logs", *NO_OS)) == []
    assert '"phase": "x"' in log.read_text()


def test_the_relayed_zygote_loads_no_json_typing_pathlib_socket_or_ctypes() -> None:
    """With a helper, the zygote (forked by the shim's ukrun, or started by the compiled front) imports the launcher
    while the worker works, and create waits for it at "go": these were 20-25 ms of a 35 ms create, and ctypes' Python
    half 3 ms of the front's zygote. The init it becomes forwards signals through signal's C half: signal itself
    imports enum (2.5 ms), and collections cost it 1.4 ms."""
    loaded = _loaded("from ukrun import fast, relay, launcher\nlauncher.forwarded()")
    assert _hits(loaded, ("json", "typing", "pathlib", "socket", "signal", "re", "dataclasses", "enum",
                          "collections", "ctypes")) == []


def test_a_relayed_call_and_a_forced_delete_of_a_container_gone_import_no_os(tmp_path: Path) -> None:
    """posix, not os, on these paths, in the interpreter as the launcher starts it (-I -S): os, with
    _collections_abc and posixpath, was 1.2 ms of each such call."""
    (tmp_path / "none.sock").touch()  # the relay tries it and runs nothing: nobody listens
    loaded = _launched(f"from ukrun import fast\n"
                       f"assert fast.run(['--root', {str(tmp_path)!r}, 'delete', '--force', 'gone']) == 0\n"
                       f"assert fast._relayed('delete', ['delete', 'c1'], {str(tmp_path)!r}, 'c1') is None",
                       env={"UKRUN_HELPER": str(tmp_path / "none.sock")})
    assert "ukrun.relay" in loaded and _hits(loaded, NO_OS) == []


def test_creates_path_loads_no_dataclasses_cli_or_heavy_library() -> None:
    loaded = _loaded("\n".join(f"import {m}" for m in CREATE_PATH))
    assert _hits(loaded, CREATE_FORBIDDEN) == []


# What a create whose artifacts are read in place (no containerd View: Solo5, Unikraft) imports, with every guest
# type and monitor registered.
IN_PLACE_CREATE = ("ukrun.fast", "ukrun.config", "ukrun.runtime.create", "ukrun.runtime.plan", "ukrun.runtime.facts",
                   "ukrun.runtime.spec", "ukrun.artifacts.source", "ukrun.runtime.startnet", "ukrun.runtime.zygote")


def test_a_create_that_reads_in_place_loads_no_typing_socket_or_pickle() -> None:
    """A create without a helper, as the launcher starts it (-I -S): typing (1.7 ms), socket (1.5 ms) and pickle
    (2.8 ms, against 1.1 for the C half that startnet uses) were its imports alone."""
    loaded = _launched("\n".join(f"import {m}" for m in IN_PLACE_CREATE) + "\n"
                       "from ukrun.hypervisors.base import get\nfrom ukrun.unikernels.base import get as guest\n"
                       "get('qemu'), get('hvt'), guest('unikraft')")
    assert _hits(loaded, ("typing", "socket", "selectors", "pickle")) == []


def test_exec_refused_by_a_guest_imports_no_plan_guest_types_or_typing(tmp_path: Path) -> None:
    """An exec probe on a unikernel answers at once, and costs its node little: its sentence is in the record."""
    (tmp_path / "u1").mkdir()
    st.save(tmp_path, st.ContainerState(id="u1", bundle="/b", pid=1, pid_start=st.process_start(1), created="x",
                                        exec_refusal="a Unikraft unikernel runs a single application"))
    argv = ["--root", str(tmp_path), "--log", str(tmp_path / "log.json"), "--log-format", "json", "exec", "--process",
            str(tmp_path / "p.json"), "--detach", "--pid-file", str(tmp_path / "e.pid"), "u1"]
    loaded = _loaded(f"import os, sys\nsys.argv = ['ukrun', *{argv!r}]\nfrom ukrun import fast\n"
                     "code = fast.run(sys.argv[1:])\nassert code == 1, code")
    heavy = ("ukrun.unikernels", "ukrun.hypervisors", "ukrun.runtime.plan", "ctypes")
    assert _hits(loaded, (*HOT_FORBIDDEN, *heavy)) == []
    assert "exec is not possible in container u1: a Unikraft unikernel" in (tmp_path / "log.json").read_text()
# What releasing does not need: acquire's modules, and shutil (bz2, lzma) for a few files.
DELETE_FORBIDDEN = (*CREATE_FORBIDDEN, "ukrun.artifacts.store", "ukrun.artifacts.layers", "ukrun.image",
                    "ukrun.unikernel")


def test_deletes_teardown_loads_nothing_that_only_acquiring_needs(tmp_path: Path) -> None:
    loaded = _loaded(f"""
from pathlib import Path
from ukrun import config
from ukrun.runtime import state as st, verbs
root = Path({str(tmp_path)!r})
(root / "c1").mkdir()
st.save(root, st.ContainerState(id="c1", bundle="/b", namespace="ns"))
verbs.delete(verbs.Context(root=root, config=config.Config(state_root=root / "state"), argv=[]), "c1", False)
assert not (root / "c1").exists()
""")
    assert _hits(loaded, DELETE_FORBIDDEN) == []
