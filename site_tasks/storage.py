"""Object storage: the one place parameters, omega_k and summaries are exchanged.

``ObjectStore`` is the small interface the tasks use; ``S3Store`` implements it with boto3 for AWS,
MinIO or the local ``rclone serve s3`` server alike. A single PUT is atomic on S3, so an object is
either whole or absent; multi-object messages are committed by writing their manifest last.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from site_tasks.federation import FederationConfig, StorageConfig

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class StorageError(RuntimeError):
    """The object store refused or could not be reached; the message names bucket and key."""


class ObjectStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every key under prefix, sorted."""
        ...


@dataclass(frozen=True)
class Keys:
    """The key layout of one federation run (see docs/storage.md)."""

    federation: str
    run: str

    @staticmethod
    def of(config: FederationConfig) -> Keys:
        return Keys(config.name, config.run)

    def round(self, t: int) -> str:
        return f"{self.federation}/{self.run}/round-{t}"

    def prior(self, t: int) -> tuple[str, str]:
        """(tensor file, manifest) of the prior that sites train against in round t."""
        return f"{self.round(t)}/prior.safetensors", f"{self.round(t)}/prior.json"

    def updates(self, t: int) -> str:
        return f"{self.round(t)}/updates/"

    def update(self, t: int, site: str) -> tuple[str, str]:
        return f"{self.updates(t)}{site}.safetensors", f"{self.updates(t)}{site}.json"

    def summary(self, t: int) -> str:
        return f"{self.round(t)}/summary.json"

    def evaluation(self, site: str) -> str:
        return f"{self.federation}/{self.run}/evaluation/{site}.json"

    def validation(self, site: str) -> str:
        return f"{self.federation}/{self.run}/validation/{site}.json"

    def inference(self, site: str) -> str:
        """A tier-3 site's scoring summary (counts only)."""
        return f"{self.federation}/{self.run}/inference/{site}.json"


class S3Store:
    """boto3 against any S3 endpoint, with SigV4 and path-style addressing."""

    def __init__(self, config: StorageConfig) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = config.bucket
        self.client: S3Client = boto3.client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (the coordinating centre's first step)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise self._fail("open bucket", "", exc) from exc
        except BotoCoreError as exc:
            raise self._fail("open bucket", "", exc) from exc
        try:
            self.client.create_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("create bucket", "", exc) from exc

    def _fail(self, action: str, key: str, exc: Exception) -> StorageError:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            detail = f"{error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")
        else:
            detail = str(exc)
        return StorageError(f"cannot {action} s3://{self.bucket}/{key}: {detail}")

    def put(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("write", key, exc) from exc

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
            return response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._fail("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from exc

    def list(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        keys: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix + "*", exc) from exc
        return sorted(keys)
