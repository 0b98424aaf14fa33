"""ukrun.digest: the names ukrun derives must not change with the module that hashes them."""

import hashlib

from ukrun import digest
from ukrun.network.base import nat_table, tap_name


def test_its_digests_are_sha256s() -> None:
    for data in (b"", b"c1", "ünïcode\0key".encode(), bytes(range(256)) * 9):
        assert digest.hexdigest(data) == hashlib.sha256(data).hexdigest()
        assert digest.digest(data) == hashlib.sha256(data).digest()


def test_the_names_made_from_ids_are_those_an_earlier_ukrun_made() -> None:
    """Taps and nftables tables of containers created before an upgrade are found by name at delete."""
    assert tap_name("c1") == "tapuk" + hashlib.sha256(b"c1").hexdigest()[:10]
    assert nat_table("c1") == "ukrun_" + hashlib.sha256(b"c1").hexdigest()[:10]
