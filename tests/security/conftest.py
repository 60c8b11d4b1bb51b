"""Fixtures of the attack tests: federation ``heart`` on the session's SeaweedFS server (every
party with its own identity) or, where a test needs a store that enforces nothing, on the
session's ``rclone serve s3``. Each test gets its own run, state folder and keyring."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from site_tasks.federation import StorageConfig
from site_tasks.storage import S3Store
from tests.security.heart import SITES, Heart, MakeHeart, write_federation, write_sites

if TYPE_CHECKING:
    from site_tasks.local.seaweed import Seaweed


@pytest.fixture(autouse=True)
def _enrolment_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No enrolment on first use (tests/conftest.py sets it for hand-written federations): the
    keyring holds exactly what ``trust.enrol_all``, ``revoke`` and ``rotate`` put there."""
    from site_tasks.trust import ENROL_ON_FIRST_USE

    monkeypatch.delenv(ENROL_ON_FIRST_USE, raising=False)


@pytest.fixture(scope="session")
def site_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three sites' train.csv and val.csv, written once for the session (read only)."""
    return write_sites(tmp_path_factory.mktemp("hospital-data"))


@pytest.fixture
def make_heart(seaweed: Seaweed, site_data: dict[str, Path], tmp_path: Path) -> MakeHeart:
    """``make_heart(sites=SITES, **federation file overrides)``: a fresh run of ``heart`` on
    SeaweedFS, the file holding the centre's key pair, each site acting with its own."""

    def make(sites: Sequence[str] = SITES, **overrides: Any) -> Heart:
        data = {name: site_data[name] for name in sites}
        config = write_federation(
            tmp_path / "federation.yaml", data, seaweed.storage("centre"), **overrides
        )
        stores = {who: S3Store(seaweed.storage(who)) for who in ("centre", *sites)}
        return Heart(config, stores)

    return make


@pytest.fixture
def make_open_heart(s3_server: Any, site_data: dict[str, Path], tmp_path: Path) -> MakeHeart:
    """The same federation on ``rclone serve s3`` (tests/conftest.py): one key for everyone,
    no identities and no write-once, as ``make demo`` runs."""

    def make(**overrides: Any) -> Heart:
        storage = StorageConfig(
            bucket=f"fedmap-sec-{secrets.token_hex(4)}",
            endpoint_url=s3_server.url,
            access_key_id=s3_server.access_key,
            secret_access_key=s3_server.secret_key,
        )
        config = write_federation(tmp_path / "federation.yaml", site_data, storage, **overrides)
        store = S3Store(storage)
        store.ensure_bucket()
        return Heart(config, {who: store for who in ("centre", *SITES)})

    return make
