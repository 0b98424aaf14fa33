"""ukrun's HPACK against the `hpack` package (a development dependency): what one encodes the other decodes."""

from __future__ import annotations

import random

import hpack as reference
import pytest

from ukrun.containerd import hpack
from ukrun.containerd.status import percent_decode

GRPC_HEADERS = [
    (":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "5"),
    ("grpc-message", "container \"x\" in namespace \"y\": not found"), ("date", "Fri, 27 Nov 2026 22:00:00 GMT"),
]


def test_every_huffman_symbol_matches_the_rfc_code() -> None:
    data = bytes(range(256)) * 3
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

    encoded = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH).encode(data)
    assert hpack.huffman_decode(encoded) == data


@pytest.mark.parametrize("huffman", [True, False])
def test_decodes_what_hpack_encodes_with_the_dynamic_table(huffman: bool) -> None:
    enc, dec = reference.Encoder(), hpack.Decoder()
    rng = random.Random(7)
    for _ in range(200):
        block = [rng.choice(GRPC_HEADERS) for _ in range(rng.randint(1, 5))]
        block.append((f"x-key-{rng.randint(0, 40)}", "v" * rng.randint(0, 300)))
        assert dec.decode(enc.encode(block, huffman=huffman)) == block


def test_table_size_updates_evict() -> None:
    enc, dec = reference.Encoder(), hpack.Decoder()
    first = [("x-a", "1" * 100), ("x-b", "2" * 100)]
    assert dec.decode(enc.encode(first)) == first
    enc.header_table_size = 150  # the next block starts with a size update; the table keeps one entry
    second = [("x-b", "2" * 100), ("x-c", "3")]
    assert dec.decode(enc.encode(second)) == second
    assert dec.max_size == 150 and dec.size <= 150


def test_hpack_decodes_what_we_encode() -> None:
    headers = [(":method", "POST"), (":scheme", "http"), (":path", "/containerd.services.x.v1.X/Y"),
               (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers"),
               ("grpc-timeout", "10000m"), ("containerd-namespace", "k8s.io"), ("containerd-lease", "l" * 200)]
    assert [(str(n), str(v)) for n, v in reference.Decoder().decode(hpack.encode(headers))] == headers


@pytest.mark.parametrize("block", [b"\x80", b"\xbf\x7f", b"\x3f\xe2\x1f", b"\x00\x85\xff\xff\xff\xff\xff\x00",
                                   b"\x00\x05ab"])
def test_malformed_blocks_raise(block: bytes) -> None:
    with pytest.raises(hpack.HpackError):
        hpack.Decoder().decode(block)


def test_grpc_message_is_percent_decoded() -> None:
    assert percent_decode("lease %22l1%22: already exists") == 'lease "l1": already exists'
    assert percent_decode("caf%C3%A9 100%") == "café 100%"
    assert percent_decode("%zz") == "%zz"
