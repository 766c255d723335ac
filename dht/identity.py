"""A node's identity: an Ed25519 key pair kept in ``<data_dir>/node.key``.

The node id is sha1(public key), so a node cannot choose where it sits in the id space:
placing itself next to a chosen key would take a brute-force search over key pairs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import nacl.exceptions
import nacl.signing

from .errors import IdentityError

log = logging.getLogger(__name__)

KEY_FILE = "node.key"
KEY_FILE_MODE = 0o600  # the seed is the node's whole identity: owner-only
SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
NODE_ID_BYTES = 20


def node_id_for(public_key: bytes) -> bytes:
    """The 20-byte node id that belongs to ``public_key``."""
    return hashlib.sha1(public_key).digest()


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of ``message``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.signing.VerifyKey(public_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


class Identity:
    """An Ed25519 signing key and the node id derived from it."""

    __slots__ = ("_signing_key", "node_id", "public_key")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self.public_key: bytes = bytes(signing_key.verify_key)
        self.node_id: bytes = node_id_for(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity that lives only in memory (tests, throwaway nodes)."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def load_or_create(cls, data_dir: Path) -> Identity:
        """Reload ``<data_dir>/node.key``, or create it (mode 0600) if it does not exist."""
        path = Path(data_dir) / KEY_FILE
        try:
            seed = path.read_bytes()
        except FileNotFoundError:
            return cls._create(path)
        except OSError as exc:
            raise IdentityError(f"cannot read {path}: {exc}") from exc
        if len(seed) != SEED_BYTES:
            # Never silently replace a damaged key: that would change the node's identity.
            raise IdentityError(f"{path} holds {len(seed)} bytes, expected {SEED_BYTES}")
        return cls(nacl.signing.SigningKey(seed))

    @classmethod
    def _create(cls, path: Path) -> Identity:
        signing_key = nacl.signing.SigningKey.generate()
        # Written whole to a private temporary file, then linked into place: a kill at any
        # moment leaves either no key or a complete one (never an empty file that would
        # stop the node from starting), and link() fails if another process got there
        # first, so two processes on one data dir never both make a key.
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
            with os.fdopen(fd, "wb") as file:
                file.write(bytes(signing_key))
                file.flush()
                os.fsync(file.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return cls.load_or_create(path.parent)
        except OSError as exc:
            raise IdentityError(f"cannot create {path}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        identity = cls(signing_key)
        log.info("created node key %s (node id %s)", path, identity.node_id.hex())
        return identity

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return bytes(self._signing_key.sign(message).signature)

    def __repr__(self) -> str:
        return f"Identity(node_id={self.node_id.hex()})"
