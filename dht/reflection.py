"""No reflection: a source that has proven nothing gets back no more bytes than it sent.

UDP sources can be spoofed, so whatever a node sends to an address it has not proven may
land on a victim. The rule (issue #12, threat row 4): to a source that has not proven its
id at its address (the challenge/prove exchange), the reply datagram is never larger than
the request datagram, and the request sets off nothing else towards it. A requester that
wants a full reply from a node that has not proven it yet pads its request to the size of
that reply, as QUIC clients pad their first packet: every request may carry one trailing
bytes argument, which the server ignores. ``find_node`` is trimmed to the contacts that
fit (nearest first) and ends with ``TRIMMED``, so a requester that believed itself proven
(the peer restarted, or forgot it) proves itself again; any other reply that does not fit
is not sent.

Padding costs bytes only on first contact: one challenge/prove exchange proves both sides,
and proven peers' requests are not padded.
"""

from __future__ import annotations

from typing import Any

import umsgpack  # type: ignore[import-untyped]

from .contacts import MAX_CONTACT_BYTES
from .identity import NODE_ID_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES

MSG_ID_BYTES = 20
HEADER_BYTES = 1 + MSG_ID_BYTES  # message type, message id
NONCE_BYTES = 20
# The largest packed contact [id, ip, port]: fixarray, bin8 id, str ip, uint16 port.
IPV4_CONTACT_BYTES = 1 + 2 + NODE_ID_BYTES + 1 + len("255.255.255.255") + 3
IPV6_CONTACT_BYTES = 1 + 2 + NODE_ID_BYTES + 2 + len("ffff:" * 7 + "ffff") + 3
LIST_HEADER_BYTES = 3  # msgpack array16: more than 15 contacts
# A challenge's answer: [public key, signature, nonce], fixed size.
CHALLENGE_REPLY_BYTES = HEADER_BYTES + len(
    umsgpack.packb([b"k" * PUBLIC_KEY_BYTES, b"s" * SIGNATURE_BYTES, b"n" * NONCE_BYTES])
)
HELLO_REPLY_BYTES = HEADER_BYTES + 3 + MAX_CONTACT_BYTES  # bin16 header + the largest record
# Ends a trimmed contact list: "I have not proven you". Not a contact, so a list reader
# that skips what is not [id, ip, port] (``RhizomeProtocol._node_list``) ignores it.
TRIMMED = "trimmed"
PAD_HEADER_BYTES = 3  # msgpack bin16 header: a pad of 256 bytes up to 64 KiB


def find_node_reply_bytes(ksize: int, ipv6: bool) -> int:
    """The largest find_node reply of ``ksize`` contacts: what a requester pads to."""
    per_contact = IPV6_CONTACT_BYTES if ipv6 else IPV4_CONTACT_BYTES
    return HEADER_BYTES + LIST_HEADER_BYTES + ksize * per_contact


def request_body(name: str, args: tuple[Any, ...], pad_to: int = 0) -> bytes:
    """The msgpack body of a request, padded so the datagram is at least ``pad_to`` bytes."""
    body: bytes = umsgpack.packb([name, list(args)])
    missing = pad_to - HEADER_BYTES - len(body)
    if missing <= 0:
        return body
    # The pad argument costs its own msgpack header (2 or 3 bytes); start from the larger
    # and grow until the datagram is long enough (at most two more packs).
    size = max(0, missing - PAD_HEADER_BYTES)
    while True:
        padded: bytes = umsgpack.packb([name, [*args, b"\0" * size]])
        if HEADER_BYTES + len(padded) >= pad_to:
            return padded
        size += 1


def reply_payload(response: Any, budget: int | None, trimmable: bool) -> bytes | None:
    """The packed reply if its datagram fits in ``budget`` bytes (None: no limit).

    A trimmable reply (a list, nearest contacts first) loses its tail until it fits, with
    ``TRIMMED`` after it; any other reply that does not fit gives None: nothing is sent.
    """
    payload: bytes = umsgpack.packb(response)
    if budget is None or HEADER_BYTES + len(payload) <= budget:
        return payload
    if not (trimmable and isinstance(response, list)):
        return None
    low, high = 0, len(response)  # the longest prefix that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if HEADER_BYTES + len(umsgpack.packb([*response[:middle], TRIMMED])) <= budget:
            low = middle
        else:
            high = middle - 1
    trimmed: bytes = umsgpack.packb([*response[:low], TRIMMED])
    return trimmed if HEADER_BYTES + len(trimmed) <= budget else None
