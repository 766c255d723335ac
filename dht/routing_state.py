"""The routing table on disk: JSON (never pickle) in ``<data_dir>/routing.json``.

A restarted node pings these peers instead of needing a bootstrap address. The file is
read from disk we own, but it is still parsed defensively: a corrupt file means "start
empty", not "crash".
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .identity import NODE_ID_BYTES

log = logging.getLogger(__name__)

STATE_FILE = "routing.json"
STATE_VERSION = 1
MAX_SAVED_PEERS = 256  # enough to rejoin; more only slows the restart
MAX_STATE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SavedPeer:
    node_id: bytes
    ip: str
    port: int


def valid_address(ip: object, port: object) -> bool:
    """An IP literal (never a hostname: uvloop refuses sendto to one) and a real port."""
    if not isinstance(ip, str) or not isinstance(port, int) or isinstance(port, bool):
        return False
    if not 0 < port < 65536:
        return False
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return False
    return True


def save_peers(data_dir: Path, node_id: bytes, peers: list[SavedPeer]) -> Path:
    """Write the peers atomically (temp file + rename) so a crash never leaves half a file."""
    path = Path(data_dir) / STATE_FILE
    doc = {
        "version": STATE_VERSION,
        "node_id": node_id.hex(),
        "peers": [
            {"node_id": p.node_id.hex(), "ip": p.ip, "port": p.port}
            for p in peers[:MAX_SAVED_PEERS]
        ],
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_peers(data_dir: Path, node_id: bytes) -> list[SavedPeer]:
    """The peers saved by this node id; [] if there is no usable file."""
    path = Path(data_dir) / STATE_FILE
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            log.warning("ignoring %s: larger than %d bytes", path, MAX_STATE_BYTES)
            return []
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable routing state %s: %s", path, exc)
        return []
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
        log.warning("ignoring routing state %s: unknown format", path)
        return []
    if doc.get("node_id") != node_id.hex():
        # Saved by another identity (key replaced): its neighbours are not ours.
        log.warning("ignoring routing state %s: saved by another node id", path)
        return []
    peers: list[SavedPeer] = []
    raw_peers = doc.get("peers")
    for item in raw_peers[:MAX_SAVED_PEERS] if isinstance(raw_peers, list) else []:
        if not isinstance(item, dict):
            continue
        try:
            peer_id = bytes.fromhex(str(item.get("node_id")))
        except ValueError:
            continue
        ip, port = item.get("ip"), item.get("port")
        if len(peer_id) == NODE_ID_BYTES and valid_address(ip, port):
            assert isinstance(ip, str) and isinstance(port, int)
            peers.append(SavedPeer(peer_id, ip, port))
    return peers
