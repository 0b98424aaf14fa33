"""HPACK (RFC 7541) header compression for ukrun's HTTP/2 client.

Why: gRPC headers and trailers travel HPACK-coded; containerd's Go server Huffman-codes strings and
indexes headers in its dynamic table, so a full decoder is needed. Our encoder needs no state: it sends
static-table hits as indexes and everything else as literals without indexing, without Huffman.

What must stay true:
- One `Decoder` per connection, fed every header block of every stream in the order received, since the
  dynamic table is shared connection state; its size never exceeds what we announced (4096, the default).
- Malformed input raises `HpackError` (a connection error), never a wrong header.
- The Huffman code is the canonical code of RFC 7541 Appendix B, rebuilt here from its code lengths.
"""

from __future__ import annotations

STATIC: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)
ENTRY_OVERHEAD = 32
DEFAULT_TABLE_SIZE = 4096
EOS = 256

# Code length in bits of each symbol 0..256 (RFC 7541 Appendix B); the codes themselves are canonical.
_LENGTHS_BY_SIZE: dict[int, str] = {
    5: "0 1 2 a c e i o s t",
    6: "sp % - . / 3 4 5 6 7 8 9 = A _ b d f g h l m n p r u",
    7: ": B C D E F G H I J K L M N O P Q R S T U V W Y j k q v w x y z",
    8: "& * , ; X Z",
    10: "! \" ( ) ?",
    11: "' + |",
    12: "# >",
    13: "#0 $ @ [ ] ~",
    14: "^ }",
    15: "< ` {",
    19: "\\ #195 #208",
    20: "#128 #130 #131 #162 #184 #194 #224 #226",
    21: "#153 #161 #167 #172 #176 #177 #179 #209 #216 #217 #227 #229 #230",
    22: "#129 #132 #133 #134 #136 #146 #154 #156 #160 #163 #164 #169 #170 #173 #178 #181 #185 #186 #187 "
        "#189 #190 #196 #198 #228 #232 #233",
    23: "#1 #135 #137 #138 #139 #140 #141 #143 #147 #149 #150 #151 #152 #155 #157 #158 #165 #166 #168 #174 "
        "#175 #180 #182 #183 #188 #191 #197 #231 #239",
    24: "#9 #142 #144 #145 #148 #159 #171 #206 #215 #225 #236 #237",
    25: "#199 #207 #234 #235",
    26: "#192 #193 #200 #201 #202 #205 #210 #213 #218 #219 #238 #240 #242 #243 #255",
    27: "#203 #204 #211 #212 #214 #221 #222 #223 #241 #244 #245 #246 #247 #248 #250 #251 #252 #253 #254",
    28: "#2 #3 #4 #5 #6 #7 #8 #11 #12 #14 #15 #16 #17 #18 #19 #20 #21 #23 #24 #25 #26 #27 #28 #29 #30 #31 "
        "#127 #220 #249",
    30: "#10 #13 #22 #256",
}


class HpackError(ValueError):
    """A header block that does not decode: the connection cannot go on."""


def _symbol(token: str) -> int:
    if token == "sp":
        return 32
    if token.startswith("#") and len(token) > 1:
        return int(token[1:])
    return ord(token)


def _canonical_codes() -> dict[tuple[int, int], int]:
    """(bit length, code) -> symbol: canonical codes, by length, then by symbol."""
    by_length = sorted((size, _symbol(tok)) for size, toks in _LENGTHS_BY_SIZE.items() for tok in toks.split())
    table: dict[tuple[int, int], int] = {}
    code, prev = 0, by_length[0][0]
    for size, sym in by_length:
        code <<= size - prev
        prev = size
        table[(size, code)] = sym
        code += 1
    return table


_DECODE = _canonical_codes()


def huffman_decode(data: bytes) -> bytes:
    out = bytearray()
    code = size = 0
    for byte in data:
        for shift in range(7, -1, -1):
            code = (code << 1) | ((byte >> shift) & 1)
            size += 1
            sym = _DECODE.get((size, code))
            if sym is not None:
                if sym == EOS:
                    raise HpackError("EOS symbol inside a Huffman string")
                out.append(sym)
                code = size = 0
            elif size > 30:
                raise HpackError("invalid Huffman code")
    if size > 7 or code != (1 << size) - 1:
        raise HpackError("Huffman string padded with more than 7 bits or not with ones")
    return bytes(out)


def encode_int(value: int, prefix: int, first: int = 0) -> bytes:
    limit = (1 << prefix) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _literal(text: str) -> bytes:
    data = text.encode()
    return encode_int(len(data), 7) + data


def encode(headers: list[tuple[str, str]]) -> bytes:
    """A header block that leaves the peer's dynamic table alone (RFC 7541 6.1 and 6.2.2)."""
    out = bytearray()
    for name, value in headers:
        exact = _STATIC_EXACT.get((name, value))
        if exact is not None:
            out += encode_int(exact, 7, 0x80)
            continue
        named = _STATIC_NAME.get(name)
        out += encode_int(named, 4) if named is not None else b"\x00" + _literal(name)
        out += _literal(value)
    return bytes(out)


_STATIC_EXACT = {entry: i + 1 for i, entry in enumerate(STATIC)}
_STATIC_NAME: dict[str, int] = {}
for _i, (_name, _) in enumerate(STATIC):
    _STATIC_NAME.setdefault(_name, _i + 1)


class Decoder:
    def __init__(self, max_size: int = DEFAULT_TABLE_SIZE) -> None:
        self.limit = max_size  # the most the peer may ask for: what we announced in SETTINGS
        self.max_size = max_size
        self.size = 0
        self.table: list[tuple[str, str]] = []  # newest first

    def _evict(self) -> None:
        while self.size > self.max_size:
            name, value = self.table.pop()
            self.size -= len(name.encode()) + len(value.encode()) + ENTRY_OVERHEAD

    def _add(self, name: str, value: str) -> None:
        self.table.insert(0, (name, value))
        self.size += len(name.encode()) + len(value.encode()) + ENTRY_OVERHEAD
        self._evict()

    def _entry(self, index: int) -> tuple[str, str]:
        if index == 0:
            raise HpackError("header index 0")
        if index <= len(STATIC):
            return STATIC[index - 1]
        if index - len(STATIC) > len(self.table):
            raise HpackError(f"header index {index} beyond the dynamic table ({len(self.table)} entries)")
        return self.table[index - len(STATIC) - 1]

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = []
        pos = 0
        seen_header = False
        while pos < len(block):
            b = block[pos]
            if b & 0x80:  # indexed header field
                index, pos = _read_int(block, pos, 7)
                headers.append(self._entry(index))
            elif b & 0xE0 == 0x20:  # dynamic table size update
                if seen_header:
                    raise HpackError("table size update after a header field")
                size, pos = _read_int(block, pos, 5)
                if size > self.limit:
                    raise HpackError(f"table size update to {size}, over the {self.limit} announced")
                self.max_size = size
                self._evict()
                continue
            else:
                indexing = b & 0xC0 == 0x40
                index, pos = _read_int(block, pos, 6 if indexing else 4)
                if index:
                    name = self._entry(index)[0]
                else:
                    name, pos = _read_string(block, pos)
                value, pos = _read_string(block, pos)
                if indexing:
                    self._add(name, value)
                headers.append((name, value))
            seen_header = True
        return headers


def _read_int(block: bytes, pos: int, prefix: int) -> tuple[int, int]:
    limit = (1 << prefix) - 1
    value = block[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(block):
            raise HpackError("truncated integer")
        b = block[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos
        if shift > 28:
            raise HpackError("integer too large")


def _read_string(block: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(block):
        raise HpackError("truncated string")
    huffman = bool(block[pos] & 0x80)
    size, pos = _read_int(block, pos, 7)
    if pos + size > len(block):
        raise HpackError("string beyond the header block")
    raw = block[pos:pos + size]
    data = huffman_decode(raw) if huffman else raw
    try:
        return data.decode(), pos + size
    except UnicodeDecodeError:
        return data.decode("latin-1"), pos + size
