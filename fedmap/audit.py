"""An append-only, hash-chained audit log: one JSON object per line, each carrying the SHA-256 of
the entry before it.

    h_0 = 64 zeros,   h_i = SHA-256(canonical(entry_i without "hash")),   entry_i["prev"] = h_{i-1}

so editing, inserting, reordering or deleting any entry but the last breaks the chain at that
entry, which :func:`verify` reports by line. Deleting the tail is detected against a head hash
kept elsewhere: the centre writes its head into every round summary, and ``verify(path,
head=...)`` fails unless that entry is still in the chain (the log was not cut before it).
The centre logs every upload it saw (who, which object, its hash, accepted or rejected and why)
and every object it wrote; a site logs everything that left it. Standard library only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
ENTRY_FIELDS = ("seq", "time", "actor", "action", "key", "sha256", "outcome", "reason", "prev")


class AuditError(ValueError):
    """The log was edited, reordered or cut: the message names the line and what broke."""


def entry_hash(entry: Mapping[str, Any]) -> str:
    """h_i: SHA-256 of the entry without its own hash, as sorted compact JSON."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


@dataclass(frozen=True)
class AuditLog:
    """The log at ``path``; appends take an exclusive lock, so two writers never interleave."""

    path: Path

    def append(
        self,
        actor: str,
        action: str,
        key: str = "",
        sha256: str = "",
        outcome: str = "",
        reason: str = "",
        **details: Any,
    ) -> dict[str, Any]:
        """Add one entry (chained to the last) and return it with its hash."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            last = None
            for line in handle:
                if line.strip():
                    last = json.loads(line)
            entry: dict[str, Any] = {
                "seq": 0 if last is None else int(last["seq"]) + 1,
                "time": time.time(),
                "actor": actor,
                "action": action,
                "key": key,
                "sha256": sha256,
                "outcome": outcome,
                "reason": reason,
                "prev": GENESIS if last is None else str(last["hash"]),
                **({"details": dict(details)} if details else {}),
            }
            entry["hash"] = entry_hash(entry)
            handle.seek(0, 2)
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH)  # never half an append
            lines = handle.readlines()
        for line in lines:
            if line.strip():
                yield json.loads(line)

    def head(self) -> str:
        """The hash of the last entry (GENESIS for an empty log)."""
        last = GENESIS
        for entry in self.entries():
            last = str(entry["hash"])
        return last


def verify(path: Path, head: str | None = None) -> int:
    """Check the whole chain; return the number of entries, or raise AuditError at the first
    line that does not hold: unparsable, a field missing, its hash not its content's, its
    ``prev`` not the hash before, a gap in ``seq``, or (with ``head``) a log that no longer holds
    the entry whose hash was recorded outside it, i.e. entries cut from the end."""
    previous, count, found = GENESIS, 0, head in (None, GENESIS)
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError as exc:
                raise AuditError(f"{path}:{number}: not a JSON entry ({exc})") from exc
            missing = [f for f in (*ENTRY_FIELDS, "hash") if f not in entry]
            if missing:
                raise AuditError(f"{path}:{number}: entry lacks {', '.join(missing)}")
            if entry["hash"] != entry_hash(entry):
                raise AuditError(
                    f"{path}:{number}: entry {entry['seq']} was edited (hash mismatch)"
                )
            if entry["prev"] != previous or entry["seq"] != count:
                raise AuditError(
                    f"{path}:{number}: entry {entry['seq']} does not follow entry {count - 1} "
                    "(an entry was deleted, inserted or moved)"
                )
            previous, count = entry["hash"], count + 1
            found = found or entry["hash"] == head
    if not found:
        raise AuditError(
            f"{path}: the recorded head {str(head)[:12]} is not in the log: entries were cut "
            "from its end"
        )
    return count
