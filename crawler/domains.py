"""Registrable domains ("eTLD+1") by the Public Suffix List.

The list is the copy shipped inside the ``publicsuffixlist`` wheel: read once at import,
never fetched, so this works offline and gives the same answer on every node of a release.
"""

from __future__ import annotations

import ipaddress

from publicsuffixlist import PublicSuffixList

# accept_unknown=False: a name under a TLD the list does not know (``localhost``, ``test``,
# ``example``) is not taken for a public suffix, so such hosts still have a domain.
_LIST = PublicSuffixList(accept_unknown=False)


def _bare(host: str) -> str:
    """``host`` without port, brackets or trailing dot, in lower case."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host[1:]
    if host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def registrable_domain(host: str) -> str:
    """The registrable domain of ``host``: ``www.example.co.uk`` → ``example.co.uk``.

    ``host`` may carry a port (a crawler host key); IDNs are expected in their ASCII
    (``xn--``) form, as canonical URLs have them. A host with no registrable domain is its
    own: an IP address, a public suffix itself (``co.uk``), a single label (``localhost``).
    Under a TLD the list does not know, the last two labels.
    """
    name = _bare(host)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return name
    domain = _LIST.privatesuffix(name)
    if domain:
        return str(domain)
    if _LIST.is_public(name):
        return name
    labels = name.split(".")
    return ".".join(labels[-2:]) if len(labels) > 2 else name


def is_public_suffix(name: str) -> bool:
    """Whether ``name`` is on the list as a public suffix (``com``, ``co.uk``, ``github.io``):
    blocking one whole would block every domain registered under it."""
    return bool(_LIST.is_public(_bare(name)))
