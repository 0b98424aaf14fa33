"""The Solo5 manifest parser: real Solo5 test unikernels (when scripts/build-unikernels built them, cross-checked
with Solo5's own `solo5-elftool query-manifest`), and small ELF files built here for the malformed and hostile
cases: whatever the bytes, a ManifestError, bounded reads, no crash and no hang."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from testbed.unikernels import SOLO5
from ukrun.runtime import facts
from ukrun.unikernel import UnikernelConfig
from ukrun.unikernels import solo5_manifest as mft
from ukrun.unikernels.solo5_manifest import Device, DeviceType, Manifest

BLOCK, NET = DeviceType.BLOCK, DeviceType.NET
ABI1 = 0x31494241  # Solo5's other note type ("ABI1"): not a manifest


def entry(name: bytes, kind: int, *, attached: int = 0) -> bytes:
    data = bytearray(name.ljust(68, b"\0")[:68] + struct.pack("<I", kind) + bytes(32))
    data[96] = attached
    return bytes(data)


def note(devices: list[tuple[bytes, int]], *, version: int = 1, count: int | None = None, first: bytes | None = None,
         owner: bytes = b"Solo5\0", n_type: int = mft.MFT1, descsz: int | None = None) -> bytes:
    entries = [first if first is not None else entry(b"", mft.RESERVED_FIRST)] + [entry(n, k) for n, k in devices]
    body = struct.pack("<II", version, len(entries) if count is None else count) + b"".join(entries)
    desc = bytes(4) + body
    head = struct.pack("<III", len(owner), len(desc) if descsz is None else descsz, n_type) + owner.ljust(8, b"\0")
    return head + desc


def elf(*notes: bytes, ident: bytes = b"\x7fELF\x02\x01\x01", phentsize: int = 56, phnum: int | None = None,
        phoff: int = 64) -> bytes:
    """An ELF64 header, a PT_LOAD and one PT_NOTE per note, then the notes."""
    headers = [(1, 0, 64)] + [(4, 0, len(n)) for n in notes]
    offset = 64 + 56 * len(headers)
    table, data = b"", b""
    for p_type, _, size in headers:
        at = 0 if p_type == 1 else offset + len(data)
        table += struct.pack("<IIQQQQQQ", p_type, 4, at, 0, 0, size, size, 4)
        if p_type == 4:
            data += notes[len(table) // 56 - 2]
    header = struct.pack("<16sHHIQQQIHHHHHH", ident.ljust(16, b"\0"), 2, 62, 1, 0x100000, phoff, 0, 0, 64, phentsize,
                         len(headers) if phnum is None else phnum, 64, 0, 0)
    return header + table + data


def test_a_hand_built_manifest_is_read_in_its_order_without_the_reserved_entry() -> None:
    found = mft.from_bytes(elf(note([(b"disk1", 1), (b"service", 2), (b"storage", 1)])))
    assert found == Manifest((Device("disk1", BLOCK), Device("service", NET), Device("storage", BLOCK)))
    assert found.names(BLOCK) == ("disk1", "storage") and found.names(NET) == ("service",)
    assert mft.from_bytes(elf(note([]))) == Manifest(())


def test_only_a_solo5_mft1_note_counts_and_the_first_one_wins() -> None:
    other = note([(b"nope", 1)], n_type=ABI1)
    gnu = note([(b"nope", 1)], owner=b"GNU\0")
    assert mft.from_bytes(elf(other, gnu, note([(b"a", 2)]), note([(b"b", 2)]))).names(NET) == ("a",)
    with pytest.raises(mft.NotSolo5Unikernel, match="no Solo5 manifest note"):
        mft.from_bytes(elf(other, gnu))


@pytest.mark.parametrize(("data", "why"), [
    (b"", "shorter than an ELF header"),
    (b"MZ" + bytes(200), "not an ELF file"),
    (elf(note([]), ident=b"\x7fELF\x01\x01\x01"), "not a 64-bit little-endian ELF file"),
    (elf(note([]), ident=b"\x7fELF\x02\x02\x01"), "not a 64-bit little-endian ELF file"),
])
def test_what_is_not_a_solo5_unikernel_says_so(data: bytes, why: str) -> None:
    with pytest.raises(mft.NotSolo5Unikernel, match=why):
        mft.from_bytes(data)


GOOD = elf(note([(b"storage", 1)]))


@pytest.mark.parametrize(("data", "why"), [
    (GOOD[:100], "program headers lie beyond the end"),
    (GOOD[:-200], "manifest lies beyond the end"),
    (GOOD[:64 + 112 + 10], "note segment 1 lies beyond the end"),
    (elf(note([]), phentsize=32), "program headers of 32 bytes"),
    (elf(note([]), phnum=65535), "65535 program headers, over 1024"),
    (elf(note([]), phoff=(1 << 64) - 1), "program headers lie beyond the end"),
    (elf(note([]), phnum=1000), "program headers lie beyond the end"),
    (elf(note([], descsz=(1 << 32) - 1)), r"size \(4294967295 bytes\) is out of bounds"),
    (elf(note([], descsz=0)), "out of bounds"),
    (elf(note([(b"storage", 1)], descsz=500)), "out of bounds"),  # more than its segment holds
    (elf(note([(b"a", 1)], count=(1 << 32) - 1)), "4294967295 manifest entries"),
    (elf(note([(b"a", 1)], count=3)), "cannot hold 3 entries"),
    (elf(note([], count=0)), "0 manifest entries"),
    (elf(note([], version=2)), "manifest version 2"),
    (elf(note([], first=entry(b"x", mft.RESERVED_FIRST))), "first manifest entry is not Solo5's reserved one"),
    (elf(note([], first=entry(b"", 1))), "first manifest entry is not Solo5's reserved one"),
    (elf(note([(b"x" * 68, 1)])), "entry 1 has an unterminated name"),
    (elf(note([(b"a=b", 1)])), "not 1 to 67 letters and digits"),
    (elf(note([(b"", 2)])), "not 1 to 67 letters and digits"),
    (elf(note([(b"a", 3)])), "type 3, which is neither block"),
    (elf(note([(b"a", mft.RESERVED_FIRST)])), "neither block"),
    (elf(note([(b"a", 1), (b"a", 1)])), "block device 'a' is declared twice"),
])
def test_a_malformed_or_hostile_manifest_is_refused_with_the_reason(data: bytes, why: str) -> None:
    with pytest.raises(mft.MalformedManifest, match=why):
        mft.from_bytes(data)


def test_an_entry_marked_attached_is_refused() -> None:
    data = bytearray(elf(note([(b"a", 1)])))
    data[-104 + 96] = 1
    with pytest.raises(mft.MalformedManifest, match="marked attached"):
        mft.from_bytes(bytes(data))


def test_a_hostile_file_costs_bounded_reads() -> None:
    # 1024 program headers, 1022 of them notes that nearly match, and a manifest claiming Solo5's largest size.
    miss = note([(b"a", 1)], n_type=ABI1)
    data = elf(*([miss] * 1022), note([(b"a", 1)], count=64, descsz=mft.MAX_DESCRIPTOR))
    asked: list[int] = []

    def read(offset: int, length: int) -> bytes:
        asked.append(length)
        return data[offset:offset + length]

    with pytest.raises(mft.MalformedManifest):
        mft.parse(read, len(data))
    assert max(asked) == 1024 * 56 and sum(asked) < 96 * 1024 and len(asked) == 2 + 1023


REAL = [("test_net", [Device("service0", NET)]), ("test_blk", [Device("storage", BLOCK)]), ("test_hello", [])]


@pytest.mark.parametrize("target", ["hvt", "spt"])
@pytest.mark.parametrize(("test", "devices"), REAL)
def test_a_real_solo5_unikernel_agrees_with_solo5_elftool(test: str, devices: list[Device], target: str) -> None:
    binary = SOLO5 / f"{test}.{target}"
    if not binary.exists():
        pytest.skip(f"{binary} is absent: scripts/build-unikernels builds Solo5's test unikernels")
    found = mft.from_bytes(binary.read_bytes())
    assert list(found.devices) == devices
    elftool = SOLO5 / "solo5-elftool"
    if not elftool.exists() and not shutil.which("solo5-elftool"):
        pytest.skip(f"{elftool} is absent: no cross-check with Solo5's own reader")
    out = subprocess.run([str(elftool), "query-manifest", str(binary)], capture_output=True, text=True, check=True)
    theirs = [(d["name"], d["type"]) for d in json.loads(out.stdout)["devices"]]
    assert theirs == [(d.name, f"{d.type.name}_BASIC") for d in found.devices]


def test_create_reads_the_manifest_for_solo5_monitors_only_and_names_the_images_path(tmp_path: Path) -> None:
    kernel = tmp_path / "kernel"
    kernel.write_bytes(elf(note([(b"service0", 2)])))
    config = UnikernelConfig("mirage", "hvt", "/unikernel/kernel")
    assert facts.solo5_manifest(config, str(kernel)) == Manifest((Device("service0", NET),))
    assert facts.solo5_manifest(UnikernelConfig("mirage", "qemu", "/unikernel/kernel"), str(kernel)) is None
    kernel.write_bytes(elf(note([(b"a", 1)], n_type=ABI1)))  # an ELF executable with no manifest
    found = facts.solo5_manifest(config, str(kernel))
    assert isinstance(found, mft.NotSolo5Unikernel) and str(found) == (
        "the kernel /unikernel/kernel is not a Solo5 unikernel (no Solo5 manifest note), and monitor hvt runs only "
        "Solo5 unikernels: use a kernel built for solo5-hvt, or set com.urunc.unikernel.hypervisor to the monitor "
        "it was built for")
    kernel.write_bytes(elf(note([(b"a", 9)])))
    found = facts.solo5_manifest(config, str(kernel))
    assert isinstance(found, mft.MalformedManifest)
    assert re.fullmatch(r"the kernel /unikernel/kernel carries a malformed Solo5 manifest \(.*\): rebuild it with "
                        "Solo5's toolchain", str(found)), found
    found = facts.solo5_manifest(config, str(tmp_path / "gone"))
    assert isinstance(found, mft.ManifestError) and str(found).startswith("the kernel /unikernel/kernel cannot be read")
