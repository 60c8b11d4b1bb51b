"""Ed25519 signatures over canonical JSON, and the keyring's enrol / revoke / check rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmap.signing import (
    Keyring,
    SignatureError,
    canonical,
    generate,
    key_id,
    load_private,
    read_keyring,
    sign,
    verify,
    write_keyring,
)

BODY = {"site": "a", "round": 1, "sha256": "ab" * 32, "log_omega": -0.7, "signature": ""}


def test_signature_covers_every_field_but_itself() -> None:
    pem, public = generate()
    signature = sign(load_private(pem), BODY)
    assert verify(public, {**BODY, "signature": signature}, signature)
    for field, value in (("site", "b"), ("round", 2), ("log_omega", 0.0), ("sha256", "00" * 32)):
        assert not verify(public, {**BODY, field: value}, signature), field
    assert not verify(generate()[1], BODY, signature)  # another key
    assert not verify(public, BODY, "not base64!")
    assert canonical({"b": 1, "a": 2, "signature": "x"}) == b'{"a":2,"b":1}'


def test_keyring_refuses_unsigned_unknown_revoked_and_bad(tmp_path: Path) -> None:
    pem, public = generate()
    kid = key_id(public)
    ring = Keyring().enrol("a", public, now=1.0)
    assert ring.enrol("a", public) is ring  # the same key twice: no-op
    signature = sign(load_private(pem), BODY)
    ring.check("a", kid, BODY, signature)
    with pytest.raises(SignatureError, match="unsigned"):
        ring.check("a", "", BODY, "")
    with pytest.raises(SignatureError, match="not enrolled for b"):
        ring.check("b", kid, BODY, signature)  # a's key does not speak for b
    with pytest.raises(SignatureError, match="bad signature"):
        ring.check("a", kid, {**BODY, "log_omega": 0.0}, signature)
    revoked = ring.revoke("a", now=2.0)
    with pytest.raises(SignatureError, match="revoked"):
        revoked.check("a", kid, BODY, signature)
    with pytest.raises(SignatureError, match="has no active key to revoke"):
        revoked.revoke("a")
    path = tmp_path / "keyring.json"
    write_keyring(path, revoked)
    assert read_keyring(path) == revoked
    assert read_keyring(tmp_path / "none.json") == Keyring()
    path.write_text("{")
    with pytest.raises(SignatureError, match="unreadable keyring"):
        read_keyring(path)
