"""A Solo5 unikernel's device manifest, parsed from its ELF file: the names and types of the block and
network devices it declares, which its tender (solo5-hvt, solo5-spt) attaches by name and only by name.

The manifest is an ELF note (owner `Solo5`, type `MFT1`) that Solo5's toolchain links into the binary.
The tenders look for it only at the start of a PT_NOTE segment, so this parser does the same. Its
descriptor holds 4 bytes of alignment padding, then a little-endian `version` (1) and entry count, then
that many 104-byte entries: a NUL-terminated name in 68 bytes, a type at offset 68 (1 block, 2 net; the
first entry is a reserved one of type 1<<30 with an empty name), and tender-private fields that must be
unused in the file (the `attached` flag at offset 96 must be 0). At most 64 entries.

What must stay true: the image is untrusted. The parser is pure; it asks a reader for byte ranges and
checks every offset and length against the file's size before it asks, reads only the ELF header, the
program header table (at most MAX_PROGRAM_HEADERS entries), the first note header of each PT_NOTE
segment and at most one manifest (MAX_DESCRIPTOR bytes): a hostile file costs at most a few tens of
KiB of reads and a loop bounded by MAX_PROGRAM_HEADERS. Every problem is a ManifestError.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable

from ukrun.errors import ImageError
from ukrun.tuples import NamedTuple

Reader = Callable[[int, int], bytes]  # (offset, length) -> the file's bytes there (up to length)

ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")  # e_ident .. e_shstrndx of an ELF64 header
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")  # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, ...
NOTE_HEADER = struct.Struct("<III8s")  # n_namesz, n_descsz, n_type, "Solo5\0" padded to 8
PT_NOTE = 4
NOTE_OWNER = b"Solo5\0"
MFT1 = 0x3154464D  # "MFT1"
MANIFEST_OFFSET = 24  # the manifest starts 8-byte aligned after the 20-byte note header
MANIFEST_HEADER = struct.Struct("<II")  # version, entries
ENTRY_SIZE = 104
NAME_SIZE = 68
ATTACHED = 96  # the tender's flag: 0 in the file
MAX_ENTRIES = 64
VERSION = 1
RESERVED_FIRST = 1 << 30
MAX_DESCRIPTOR = MANIFEST_OFFSET - NOTE_HEADER.size + MANIFEST_HEADER.size + MAX_ENTRIES * ENTRY_SIZE
MAX_PROGRAM_HEADERS = 1024


class DeviceType(enum.Enum):
    BLOCK = 1
    NET = 2


class Device(NamedTuple):
    name: str
    type: DeviceType


class Manifest(NamedTuple):
    devices: tuple[Device, ...]  # in the manifest's order, without the reserved first entry

    def names(self, kind: DeviceType) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices if d.type is kind)


class ManifestError(ImageError):
    """The kernel carries no usable Solo5 manifest."""


class NotSolo5Unikernel(ManifestError):
    """Not a 64-bit little-endian ELF file, or no Solo5 manifest note in it."""


class MalformedManifest(ManifestError):
    """A Solo5 manifest note is there, but its content breaks Solo5's rules."""


def from_bytes(data: bytes) -> Manifest:
    return parse(lambda offset, length: data[offset:offset + length], len(data))


def parse(read: Reader, size: int) -> Manifest:
    """The manifest of the ELF file of `size` bytes that `read` reads."""
    header = _read(read, size, 0, ELF_HEADER.size, NotSolo5Unikernel, "shorter than an ELF header")
    ident, _type, _machine, _version, _entry, phoff, _shoff, _flags, _ehsize, phentsize, phnum = (
        ELF_HEADER.unpack(header)[:11])
    if ident[:4] != b"\x7fELF":
        raise NotSolo5Unikernel("not an ELF file")
    if ident[4] != 2 or ident[5] != 1:
        raise NotSolo5Unikernel("not a 64-bit little-endian ELF file")
    if phentsize != PROGRAM_HEADER.size:
        raise MalformedManifest(f"program headers of {phentsize} bytes, not {PROGRAM_HEADER.size}")
    if phnum > MAX_PROGRAM_HEADERS:
        raise MalformedManifest(f"{phnum} program headers, over {MAX_PROGRAM_HEADERS}")
    table = _read(read, size, phoff, phnum * PROGRAM_HEADER.size, MalformedManifest,
                  "its program headers lie beyond the end of the file")
    for i in range(phnum):
        p_type, _flags, p_offset, _vaddr, _paddr, p_filesz, _memsz, _align = PROGRAM_HEADER.unpack_from(
            table, i * PROGRAM_HEADER.size)
        if p_type != PT_NOTE or p_filesz < NOTE_HEADER.size:
            continue
        note = _read(read, size, p_offset, NOTE_HEADER.size, MalformedManifest,
                     f"note segment {i} lies beyond the end of the file")
        namesz, descsz, n_type, owner = NOTE_HEADER.unpack(note)
        if namesz != len(NOTE_OWNER) or owner[:namesz] != NOTE_OWNER or n_type != MFT1:
            continue
        if not MANIFEST_OFFSET - NOTE_HEADER.size < descsz <= MAX_DESCRIPTOR or p_filesz < NOTE_HEADER.size + descsz:
            raise MalformedManifest(f"its manifest note's size ({descsz} bytes) is out of bounds")
        body = _read(read, size, p_offset + MANIFEST_OFFSET, descsz - (MANIFEST_OFFSET - NOTE_HEADER.size),
                     MalformedManifest, "its manifest lies beyond the end of the file")
        return _manifest(body)
    raise NotSolo5Unikernel("no Solo5 manifest note")


def _read(read: Reader, size: int, offset: int, length: int, error: type[ManifestError], why: str) -> bytes:
    if offset < 0 or offset + length > size:
        raise error(why)
    data = read(offset, length)
    if len(data) != length:
        raise error(why)
    return data


def _manifest(body: bytes) -> Manifest:
    if len(body) < MANIFEST_HEADER.size:
        raise MalformedManifest("its manifest is shorter than its header")
    version, entries = MANIFEST_HEADER.unpack_from(body)
    if version != VERSION:
        raise MalformedManifest(f"manifest version {version}, this ukrun reads version {VERSION}")
    if not 1 <= entries <= MAX_ENTRIES:
        raise MalformedManifest(f"{entries} manifest entries, not between 1 and {MAX_ENTRIES}")
    if len(body) != MANIFEST_HEADER.size + entries * ENTRY_SIZE:
        raise MalformedManifest(f"a manifest of {len(body)} bytes cannot hold {entries} entries")
    devices: list[Device] = []
    for i in range(entries):
        entry = body[MANIFEST_HEADER.size + i * ENTRY_SIZE:][:ENTRY_SIZE]
        raw_name, kind = entry[:NAME_SIZE], int.from_bytes(entry[NAME_SIZE:NAME_SIZE + 4], "little")
        name = raw_name.split(b"\0", 1)[0]
        if raw_name[-1] != 0 or entry[ATTACHED] != 0:
            raise MalformedManifest(f"manifest entry {i} has an unterminated name or is marked attached")
        if i == 0:
            if kind != RESERVED_FIRST or name:
                raise MalformedManifest("its first manifest entry is not Solo5's reserved one")
            continue
        if not name.isalnum():  # ASCII letters and digits, as Solo5's elftool accepts when it builds a manifest
            raise MalformedManifest(f"manifest entry {i} has a name that is not 1 to 67 letters and digits")
        try:
            device = Device(name.decode(), DeviceType(kind))
        except ValueError:
            raise MalformedManifest(f"device {name.decode()!r} has type {kind}, which is neither block (1) "
                                    "nor net (2)") from None
        if device in devices:  # the tender could never attach the second one
            raise MalformedManifest(f"{device.type.name.lower()} device {device.name!r} is declared twice")
        devices.append(device)
    return Manifest(tuple(devices))
