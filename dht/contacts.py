"""Who is behind a node id: signed contact records and the book that keeps them.

A contact record is a signed record (kind "contact", key = node id, payload = HTTP URL).
It is accepted only if the node id is sha1 of the signing key, so a peer can vouch for its
own endpoint and nobody else's.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from .errors import InvalidContact, InvalidRecord
from .identity import NODE_ID_BYTES, Identity, node_id_for
from .records import sign_record, verify_record

log = logging.getLogger(__name__)

CONTACT_KIND = "contact"
CONTACT_TTL = 6 * 3600.0  # seconds a hello stays valid; peers re-hello before that
MAX_URL_BYTES = 512
MAX_CONTACT_BYTES = 1024  # a contact record with the longest URL fits with room to spare
MAX_CONTACTS = 10_000  # least recently seen contacts are forgotten beyond this
URL_SCHEMES = ("http://", "https://")


@dataclass(frozen=True, slots=True)
class Peer:
    """A node as the rest of Rhizome sees it."""

    node_id: bytes
    ip: str
    port: int
    http_url: str | None = None
    public_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Contact:
    node_id: bytes
    public_key: bytes
    http_url: str | None
    issued_at: float
    expires_at: float
    last_seen: float
    record: bytes = b""  # the signed hello itself: passed on to those who ask for it


def check_url(url: str) -> None:
    if len(url.encode("utf-8")) > MAX_URL_BYTES:
        raise InvalidContact(f"http url longer than {MAX_URL_BYTES} bytes")
    if url and (not url.isascii() or not url.startswith(URL_SCHEMES) or not url.isprintable()):
        raise InvalidContact(f"not an http(s) url: {url!r}")


def make_contact_record(identity: Identity, http_url: str | None, *, now: float) -> bytes:
    """Our signed hello: ``identity`` serves HTTP at ``http_url`` (empty: no endpoint)."""
    url = http_url or ""
    check_url(url)
    return sign_record(
        identity,
        kind=CONTACT_KIND,
        key=identity.node_id,
        payload=url.encode("ascii"),
        issued_at=now,
        expires_at=now + CONTACT_TTL,
    )


def verify_contact(node_id: bytes, data: bytes, *, now: float) -> Contact:
    """Check that ``data`` is a valid contact record made by the owner of ``node_id``."""
    if len(node_id) != NODE_ID_BYTES:
        raise InvalidContact("node id must be 20 bytes")
    try:
        record = verify_record(data, now=now, max_size=MAX_CONTACT_BYTES)
    except InvalidRecord as exc:
        raise InvalidContact(f"bad contact record: {exc}") from exc
    if record.kind != CONTACT_KIND:
        raise InvalidContact(f"record kind {record.kind!r} is not a contact")
    if node_id_for(record.publisher) != node_id or record.key != node_id:
        raise InvalidContact(f"contact record is not signed by the owner of {node_id.hex()}")
    try:
        url = record.payload.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InvalidContact("contact url is not ASCII") from exc
    check_url(url)
    return Contact(
        node_id, record.publisher, url or None, record.issued_at, record.expires_at, now, data
    )


class ContactBook:
    """node id → the newest valid contact we have heard, bounded, least recently seen out."""

    def __init__(self, max_contacts: int = MAX_CONTACTS) -> None:
        self._max = max_contacts
        self._contacts: OrderedDict[bytes, Contact] = OrderedDict()

    def accept(self, node_id: bytes, data: bytes, *, now: float) -> Contact:
        """Verify and keep a contact record; InvalidContact if it does not prove ownership."""
        contact = verify_contact(node_id, data, now=now)
        old = self._contacts.get(node_id)
        if old is not None and old.issued_at >= contact.issued_at:
            # An older (possibly replayed) hello must not roll back a newer endpoint.
            contact = Contact(
                old.node_id,
                old.public_key,
                old.http_url,
                old.issued_at,
                old.expires_at,
                now,
                old.record,
            )
        self._contacts[node_id] = contact
        self._contacts.move_to_end(node_id)
        while len(self._contacts) > self._max:
            self._contacts.popitem(last=False)
        return contact

    def get(self, node_id: bytes, *, now: float) -> Contact | None:
        """The contact for ``node_id`` if we have one that has not expired."""
        contact = self._contacts.get(node_id)
        if contact is None or contact.expires_at <= now:
            return None
        return contact

    def __len__(self) -> int:
        return len(self._contacts)
