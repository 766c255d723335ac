"""Peer URLs proven before they are used: a hello's URL may point at any host.

A signed hello binds a node id to an HTTP URL, but only the node's word says the URL is
its own: a stranger could advertise a victim's web server and have every publisher POST
megabytes of shards to it. So before anything else is sent to a peer's URL, the peer is
asked ``GET /api/peer/whoami?nonce=N&url=U`` and must answer with a public key whose
sha1 is its node id and an Ed25519 signature over ``WHOAMI_DOMAIN + N + U``: only a
Rhizome node holding that id's key can make it, and only when it is asked. A server that
is not one answers nothing usable and gets nothing but these small GETs, at most one per
``RETRY_SECONDS``.

The message parts live here (both sides); the request is ``PeerClient``'s, the route
``api/peer_routes.py``'s.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from rhizome.dht import Identity, node_id_for, verify

# Domain separation: a whoami signature can never be taken for a record's or a hello's.
WHOAMI_DOMAIN = b"rhizome-whoami/1"
NONCE_BYTES = 16
MAX_URL_CHARS = 2_048  # a hello's URL is at most 512 bytes; the asker's form of it, more
MAX_ANSWER_BYTES = 4 * 1024  # two hex strings, ~200 bytes
PROVEN_SECONDS = 3600.0  # a proof holds this long; a node that moves re-proves at its new URL
# A URL that failed its proof is not asked again sooner: a victim server sees at most this
# many requests a minute from each node, whatever the hello says.
RETRY_SECONDS = 60.0
MAX_REMEMBERED = 10_000  # (node id, URL) pairs kept, proven or failed (LRU)


def whoami_message(nonce: bytes, url: str) -> bytes:
    """What a node signs: the nonce is fixed-length, so the URL is the rest."""
    return WHOAMI_DOMAIN + nonce + url.encode("utf-8")


def answer_whoami(identity: Identity, nonce_hex: str, url: str) -> dict[str, str]:
    """The answer to a whoami request; ValueError if the request is malformed."""
    nonce = bytes.fromhex(nonce_hex)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes of hex")
    if not url or len(url) > MAX_URL_CHARS:
        raise ValueError(f"url must be 1 to {MAX_URL_CHARS} characters")
    return {
        "public_key": identity.public_key.hex(),
        "signature": identity.sign(whoami_message(nonce, url)).hex(),
    }


def proves(answer: Any, node_id: bytes, nonce: bytes, url: str) -> bool:
    """True when ``answer`` is ``node_id``'s signature over our nonce and URL."""
    if not isinstance(answer, dict):
        return False
    try:
        public_key = bytes.fromhex(str(answer.get("public_key", "")))
        signature = bytes.fromhex(str(answer.get("signature", "")))
    except ValueError:
        return False
    return node_id_for(public_key) == node_id and verify(
        public_key, whoami_message(nonce, url), signature
    )


class ProofCache:
    """(node id, URL) → until when it is proven, or until when it is not asked again."""

    def __init__(self) -> None:
        self._proven: OrderedDict[tuple[bytes, str], float] = OrderedDict()
        self._failed: OrderedDict[tuple[bytes, str], float] = OrderedDict()

    def proven(self, node_id: bytes, url: str) -> bool:
        return self._proven.get((node_id, url), 0.0) > time.monotonic()

    def failed_recently(self, node_id: bytes, url: str) -> bool:
        return self._failed.get((node_id, url), 0.0) > time.monotonic()

    def record(self, node_id: bytes, url: str, ok: bool) -> None:
        key = (node_id, url)
        self._proven.pop(key, None)
        self._failed.pop(key, None)
        table = self._proven if ok else self._failed
        table[key] = time.monotonic() + (PROVEN_SECONDS if ok else RETRY_SECONDS)
        while len(table) > MAX_REMEMBERED:
            table.popitem(last=False)

    def forget(self, node_id: bytes) -> None:
        """Drop a node's proofs (a holder given up on must prove itself afresh)."""
        for key in [k for k in self._proven if k[0] == node_id]:
            del self._proven[key]
