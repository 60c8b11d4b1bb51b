"""A dict as an object store (``site_tasks.storage.ObjectStore``), for tests that need no server:
no versions, so it is not ``Versioned``."""

from __future__ import annotations

from collections.abc import Mapping


class MemoryStore:
    def __init__(self, objects: Mapping[str, bytes] | None = None) -> None:
        self.objects: dict[str, bytes] = dict(objects or {})

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = data

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def list(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))
