"""Who signed what, on either side: each owner's private key on its own disk, the federation's
keyring of enrolled public keys, the two audit logs, and the storage wrapper that logs every
object an owner sends.

Keys live under ``<state_dir>/<federation>/trust/``: ``<owner>.key`` (mode 600, the owner's
own machine only) and, unless the federation file's ``trust.keyring`` says otherwise,
``keyring.json``, which holds public keys only. On one machine (the demo, the tests) every owner
shares that folder; in deployment each site's folder holds its own key and a copy of the keyring
with the centre's public key, and the centre's holds the keyring of every site
(docs/security.md, "Enrolment").
"""

from __future__ import annotations

import os
from pathlib import Path

from fedmap.audit import AuditLog
from fedmap.messages import Manifest, sha256_hex
from fedmap.signing import (
    CENTRE,
    EnrolledKey,
    Keyring,
    SignatureError,
    generate,
    key_id,
    load_private,
    public_bytes,
    read_keyring,
    seal,
    write_keyring,
)
from site_tasks import storage
from site_tasks.federation import FederationConfig
from site_tasks.storage import ObjectStore

ENROL_ON_FIRST_USE = "FEDMAP_ENROL_ON_FIRST_USE"
"""Set to 1 only where every owner shares one keyring on one machine (the test suite): an owner
that has never enrolled enrols its own key when it first signs. Never in deployment, where a
site cannot write the centre's keyring anyway; a revoked owner is never re-enrolled by it."""


def key_path(config: FederationConfig, owner: str) -> Path:
    return config.state_dir / config.name / "trust" / f"{owner}.key"


def keyring(config: FederationConfig) -> Keyring:
    return read_keyring(config.federation.keyring)


def _write_key(path: Path, pem: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.replace(tmp, path)


def own_key(config: FederationConfig, owner: str) -> tuple[bytes, bytes]:
    """(private PEM, raw public key) of owner, made once on first use and kept (mode 600)."""
    path = key_path(config, owner)
    if not path.exists():
        _write_key(path, generate()[0])
    pem = path.read_bytes()
    return pem, public_bytes(load_private(pem))


def enrol(config: FederationConfig, owner: str, public: bytes | None = None) -> EnrolledKey:
    """Record owner's public key in the keyring: ``public`` when the centre enrols a key a site
    sent it, else the owner's own (made now if it has none). Enrolling the same key twice is a
    no-op; a second, different key is added beside the first (``rotate`` retires the old)."""
    key = public if public is not None else own_key(config, owner)[1]
    if len(key) != 32:
        raise SignatureError(f"{owner}: an Ed25519 public key is 32 bytes, got {len(key)}")
    ring = keyring(config).enrol(owner, key)
    write_keyring(config.federation.keyring, ring)
    return next(k for k in ring.of(owner) if k.key_id == key_id(key))


def enrol_all(config: FederationConfig) -> list[EnrolledKey]:
    """On one machine only (the demo, the tests, the benchmarks): what every tier-1 site does at
    enrolment, each with its own key, and the centre's key."""
    owners = [CENTRE, *(name for name, site in config.sites.items() if site.tier == 1)]
    return [enrol(config, owner) for owner in owners]


def rotate(config: FederationConfig, owner: str) -> EnrolledKey:
    """A new key pair for owner: the old private key is replaced and its public key revoked, so
    nothing signed with it is accepted from now on."""
    pem = generate()[0]
    _write_key(key_path(config, owner), pem)
    public = public_bytes(load_private(pem))
    ring = keyring(config)
    stale = [k.key_id for k in ring.active(owner)]
    ring = ring.enrol(owner, public)
    for kid in stale:
        ring = ring.revoke(owner, kid)
    write_keyring(config.federation.keyring, ring)
    return next(k for k in ring.of(owner) if k.key_id == key_id(public))


def revoke(config: FederationConfig, owner: str, kid: str | None = None) -> Keyring:
    """Revoke owner's key ``kid`` (every active key when None), e.g. after a key was stolen."""
    ring = keyring(config).revoke(owner, kid)
    write_keyring(config.federation.keyring, ring)
    return ring


def signed(config: FederationConfig, owner: str, manifest: Manifest) -> Manifest:
    """The manifest bound to this federation and run, with a fresh nonce, signed by owner's own
    enrolled key. Refuses when owner's key is not enrolled (or was revoked): sign nothing the
    centre will drop."""
    pem, public = own_key(config, owner)
    kid = key_id(public)
    ring = keyring(config)
    if os.environ.get(ENROL_ON_FIRST_USE) == "1" and not ring.of(owner):
        enrol(config, owner)
        ring = keyring(config)
    if not any(k.key_id == kid for k in ring.active(owner)):
        raise SignatureError(
            f"{owner}: its key {kid} is not enrolled in {config.federation.keyring} (or was "
            f"revoked); run: site-task enrol --federation FILE --site {owner}"
        )
    return seal(manifest, load_private(pem), config.name, config.run)


def verify_prior(config: FederationConfig, manifest: Manifest) -> None:
    """Raise SignatureError unless the prior is the centre's, for this federation and run."""
    keyring(config).check(CENTRE, manifest.key_id, manifest.body(), manifest.signature)
    if (manifest.federation, manifest.run) != (config.name, config.run):
        raise SignatureError(
            f"the prior is signed for {manifest.federation}/{manifest.run}, not "
            f"{config.name}/{config.run}"
        )


def audit_log(config: FederationConfig, owner: str) -> AuditLog:
    """The owner's log for this run: the centre's or a site's, on its own disk."""
    return AuditLog(config.state_dir / config.name / config.run / owner / "audit.jsonl")


def audited(config: FederationConfig, owner: str, store: ObjectStore) -> AuditedStore:
    """store, logging what owner sends into owner's audit log for this run."""
    if isinstance(store, AuditedStore) and store.owner == owner:
        return store
    return AuditedStore(store, audit_log(config, owner), owner)


class AuditedStore:
    """An ObjectStore that logs every object its owner sends (key, SHA-256, size) before it
    goes, and refuses to replace a committed object with other bytes (write-once)."""

    def __init__(self, store: ObjectStore, log: AuditLog, owner: str) -> None:
        self.store, self.log, self.owner = store, log, owner

    def put(self, key: str, data: bytes, once: bool = True) -> None:
        """Send data to key. ``once=False`` (the centre's round summary, rewritten when a round
        is tried again after a missed quorum) lets it replace what is there."""
        digest = sha256_hex(data)
        committed = self.store.get(key) if once else None
        if committed is not None:
            if sha256_hex(committed) == digest:
                return
            self.log.append(self.owner, "put", key, digest, "refused", "already committed")
            raise WriteOnceError(f"{key} is already committed with other content; not replaced")
        self.log.append(self.owner, "put", key, digest, "sent", bytes=len(data))
        self.store.put(key, data)

    def get(self, key: str) -> bytes | None:
        return self.store.get(key)

    def list(self, prefix: str) -> list[str]:
        return self.store.list(prefix)

    def first(self, key: str) -> bytes | None:
        return storage.first(self.store, key)

    def versions(self, prefix: str) -> storage.History:
        return storage.versions(self.store, prefix)


class WriteOnceError(RuntimeError):
    """A committed object would have been replaced with other bytes."""
