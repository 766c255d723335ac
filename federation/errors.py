"""The federation's exceptions: one tree, mapped once from the layers below.

::

    FederationError
     ├── PeerError            a request to a peer failed; the peer is backed off
     │    ├── PeerUnreachable   no connection (refused, reset, DNS, an address the SSRF
     │    │                     guard refuses: a peer advertising a private address)
     │    ├── PeerTimeout       no answer within the request's time
     │    ├── PeerBadAnswer     an HTTP error status, a body over its cap, or not JSON
     │    │    └── PeerBusy       429 or 503: alive, over a quota or busy with others
     │    └── PeerUnproven      its URL did not prove it serves the peer's node id
     ├── RelayError           relaying between a querier and a node behind NAT failed
     │    ├── RelayUnavailable  no such node attached here, relaying off or full
     │    ├── RelayOverBudget   the relayed node used its bytes for this hour
     │    ├── RelayProtocolError a frame or handshake that does not parse
     │    └── DirectRefused     a node behind NAT will not open a direct path now (off,
     │                          public, its links or its rate for them used up)
     ├── PushRefused          a shard batch this node was sent is not taken (bad
     │                        signature, wrong kind, distrusted publisher, no usable line)
     ├── PublishIncomplete    some holders did not take their shards; tried again later
     └── ListRefused          a subscribed blocklist is not taken (forged, another
                              node's, oversized, older than the one held, malformed)

aiohttp, socket, timeout and JSON errors become ``PeerError`` in ``client.py`` and
nowhere else; ``dht`` record errors become ``PushRefused`` in ``holding.py`` and
``ListRefused`` in ``blocklists.py``.
"""

from __future__ import annotations


class FederationError(Exception):
    """Base of every error the federation package raises."""


class PeerError(FederationError):
    """A request to a peer failed. ``peer`` is its URL."""

    def __init__(self, peer: str, reason: str) -> None:
        super().__init__(f"{peer}: {reason}")
        self.peer = peer
        self.reason = reason


class PeerUnreachable(PeerError):
    pass


class PeerTimeout(PeerError):
    pass


class PeerBadAnswer(PeerError):
    pass


class PeerBusy(PeerBadAnswer):
    """The peer answered 429 or 503: it is up, and says to come back later."""


class PeerUnproven(PeerError):
    """The URL a peer's hello names did not answer its whoami with that node's key."""


class RelayError(FederationError):
    """Relaying a request failed; the message is for the asking peer."""


class RelayUnavailable(RelayError):
    pass


class RelayOverBudget(RelayError):
    pass


class RelayProtocolError(RelayError):
    pass


class DirectRefused(RelayError):
    """A reversal or punch is refused; the message is for the asking peer."""


class PushRefused(FederationError):
    """A pushed shard batch was not stored; the message is for the pushing peer."""


class PublishIncomplete(FederationError):
    """Some holders did not take their shards; the publisher tries those terms again."""


class ListRefused(FederationError):
    """A blocklist a node serves is not taken; the message says why (for the log and the
    operator page). The list held before is kept."""
