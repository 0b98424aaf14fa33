"""SHA-256 of the names ukrun derives from IDs and keys (taps, nftables tables, views, chain caches).

Why not hashlib: importing it loads OpenSSL's libcrypto, 4-6 ms of every create and delete here (more
when the library is not in the page cache), for a few dozen bytes hashed. CPython's own SHA-256 is one
small extension module; hashlib stays the fallback where the interpreter has none by that name.
What must stay true: the digests are SHA-256's, whichever module computes them: names made by one ukrun
are found by the next.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: its import would cost more than the one spared
if TYPE_CHECKING:
    from hashlib import sha256
else:
    try:
        from _sha256 import sha256
    except ImportError:  # 3.12 and later name it _sha2
        try:
            from _sha2 import sha256
        except ImportError:
            from hashlib import sha256


def hexdigest(data: bytes) -> str:
    return sha256(data).hexdigest()


def digest(data: bytes) -> bytes:
    return sha256(data).digest()
