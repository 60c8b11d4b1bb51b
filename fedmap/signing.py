"""Ed25519 signatures on what a round exchanges, and the keyring of enrolled public keys.

A site signs every update manifest and the centre signs every prior manifest with an Ed25519 key
(RFC 8032, from the ``cryptography`` package; no primitive is written here). The signature covers
the whole manifest but its ``signature`` field, as canonical JSON (sorted keys, no spaces): the
federation, run, round, site, the tensors' SHA-256, log omega, N_k, the nonce and the signer's
key id among them, so no field can change without the signature failing.

The keyring is a JSON file of every owner's public keys (``centre`` and each site), with when each
was enrolled and, once revoked, when. The private key never leaves its owner's machine; the keyring
holds public keys only. Pure: files are read and written by the caller's paths, nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fedmap.messages import Manifest
from fedmap.report import write_atomic

CENTRE = "centre"
"""The owner name of the coordinating centre's key (it signs the priors)."""


class SignatureError(ValueError):
    """A signature, key or keyring that cannot be trusted; the message says which and why."""


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: ``body`` without ``signature``, as sorted, compact JSON."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def key_id(public: bytes) -> str:
    """A key's name: the first 16 hex digits of SHA-256 over its 32 raw public bytes."""
    return hashlib.sha256(public).hexdigest()[:16]


def generate() -> tuple[bytes, bytes]:
    """A new key pair: (private key as unencrypted PKCS#8 PEM, raw 32-byte public key)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, public_bytes(private)


def public_bytes(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def load_private(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError("the private key is not an Ed25519 key")
    return key


def sign(private: Ed25519PrivateKey, body: Mapping[str, Any]) -> str:
    """The base64 Ed25519 signature of ``canonical(body)``."""
    return base64.b64encode(private.sign(canonical(body))).decode()


def seal(
    manifest: Manifest,
    private: Ed25519PrivateKey,
    federation: str,
    run: str,
    kid: str | None = None,
    nonce: str | None = None,
) -> Manifest:
    """The manifest bound to federation and run, with ``nonce`` (a fresh 128-bit one unless
    given) and key id ``kid`` (private's own unless another is claimed), signed by private."""
    bound = replace(
        manifest,
        federation=federation,
        run=run,
        nonce=secrets.token_hex(16) if nonce is None else nonce,
        key_id=key_id(public_bytes(private)) if kid is None else kid,
        signature="",
    )
    return replace(bound, signature=sign(private, bound.body()))


def verify(public: bytes, body: Mapping[str, Any], signature: str) -> bool:
    """Whether ``signature`` is the owner of ``public``'s signature of ``canonical(body)``."""
    try:
        raw = base64.b64decode(signature, validate=True)
        Ed25519PublicKey.from_public_bytes(public).verify(raw, canonical(body))
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class EnrolledKey:
    """One public key of one owner in the keyring."""

    owner: str
    key_id: str
    public: str
    """The raw 32-byte public key, base64."""
    enrolled: float
    revoked: float | None = None

    @property
    def public_bytes(self) -> bytes:
        return base64.b64decode(self.public)


@dataclass(frozen=True)
class Keyring:
    """Every enrolled public key of a federation, revoked ones included (so an old signature
    still names a known key and is refused as revoked, not as unknown)."""

    keys: tuple[EnrolledKey, ...] = ()

    def of(self, owner: str) -> tuple[EnrolledKey, ...]:
        return tuple(k for k in self.keys if k.owner == owner)

    def active(self, owner: str) -> tuple[EnrolledKey, ...]:
        return tuple(k for k in self.of(owner) if k.revoked is None)

    def enrol(self, owner: str, public: bytes, now: float | None = None) -> Keyring:
        """The keyring with ``public`` enrolled for owner (unchanged if it already is)."""
        kid = key_id(public)
        if any(k.key_id == kid for k in self.of(owner)):
            return self
        entry = EnrolledKey(owner, kid, base64.b64encode(public).decode(), _now(now))
        return Keyring((*self.keys, entry))

    def revoke(self, owner: str, kid: str | None = None, now: float | None = None) -> Keyring:
        """The keyring with owner's key ``kid`` (every active key of owner when None) revoked."""
        targets = [k for k in self.active(owner) if kid is None or k.key_id == kid]
        if not targets:
            which = f"active key {kid}" if kid else "active key"
            raise SignatureError(f"{owner} has no {which} to revoke")
        ids = {k.key_id for k in targets}
        return Keyring(
            tuple(
                replace(k, revoked=_now(now)) if k.owner == owner and k.key_id in ids else k
                for k in self.keys
            )
        )

    def check(self, owner: str, kid: str, body: Mapping[str, Any], signature: str) -> None:
        """Raise SignatureError unless ``signature`` over body verifies under owner's active key
        ``kid``: says whether it is unsigned, signed by an unknown or a revoked key, or bad."""
        if not signature or not kid:
            raise SignatureError(f"unsigned manifest (no signature from {owner})")
        known = [k for k in self.of(owner) if k.key_id == kid]
        if not known:
            raise SignatureError(f"signed with key {kid}, which is not enrolled for {owner}")
        if known[0].revoked is not None:
            raise SignatureError(f"signed with key {kid} of {owner}, revoked at {known[0].revoked}")
        if not verify(known[0].public_bytes, body, signature):
            raise SignatureError(f"bad signature: does not verify under {owner}'s key {kid}")

    def to_json(self) -> str:
        return json.dumps({"version": 1, "keys": [asdict(k) for k in self.keys]}, indent=1) + "\n"

    @staticmethod
    def from_json(text: str | bytes) -> Keyring:
        try:
            body = json.loads(text)
            keys = tuple(EnrolledKey(**entry) for entry in body["keys"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SignatureError(f"unreadable keyring: {exc}") from exc
        return Keyring(keys)


def read_keyring(path: Path) -> Keyring:
    """The keyring at path; an empty one when the file does not exist yet."""
    if not path.exists():
        return Keyring()
    try:
        return Keyring.from_json(path.read_bytes())
    except SignatureError as exc:
        raise SignatureError(f"{path}: {exc}") from exc


def write_keyring(path: Path, keyring: Keyring) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, keyring.to_json())


def _now(now: float | None) -> float:
    return time.time() if now is None else now
