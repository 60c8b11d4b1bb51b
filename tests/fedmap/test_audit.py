"""The hash-chained audit log: appends chain, and any edit, deletion, move or cut is found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmap.audit import GENESIS, AuditError, AuditLog, verify


def written(tmp_path: Path, n: int = 4) -> AuditLog:
    log = AuditLog(tmp_path / "audit.jsonl")
    for i in range(n):
        log.append("site-1", "put", f"k{i}", "ab" * 32, "sent", bytes=i)
    return log


def lines(log: AuditLog) -> list[str]:
    return log.path.read_text().splitlines()


def test_chain_links_every_entry(tmp_path: Path) -> None:
    log = written(tmp_path)
    entries = list(log.entries())
    assert entries[0]["prev"] == GENESIS
    assert [e["prev"] for e in entries[1:]] == [e["hash"] for e in entries[:-1]]
    assert verify(log.path) == 4
    assert verify(log.path, head=log.head()) == 4


def test_an_edited_entry_is_found(tmp_path: Path) -> None:
    log = written(tmp_path)
    rows = lines(log)
    entry = json.loads(rows[1])
    entry["outcome"] = "accepted"
    rows[1] = json.dumps(entry, sort_keys=True)
    log.path.write_text("\n".join(rows) + "\n")
    with pytest.raises(AuditError, match=r":2: entry 1 was edited"):
        verify(log.path)


def test_a_deleted_or_moved_entry_is_found(tmp_path: Path) -> None:
    log = written(tmp_path)
    rows = lines(log)
    log.path.write_text("\n".join(rows[:1] + rows[2:]) + "\n")
    with pytest.raises(AuditError, match="deleted, inserted or moved"):
        verify(log.path)
    log.path.write_text("\n".join([rows[1], rows[0], *rows[2:]]) + "\n")
    with pytest.raises(AuditError, match="deleted, inserted or moved"):
        verify(log.path)


def test_a_cut_tail_is_found_against_the_recorded_head(tmp_path: Path) -> None:
    log = written(tmp_path)
    head = log.head()
    log.path.write_text("\n".join(lines(log)[:-1]) + "\n")
    assert verify(log.path) == 3  # the chain alone cannot tell
    with pytest.raises(AuditError, match="entries were cut"):
        verify(log.path, head=head)
    log.append("centre", "put", "k9")  # later entries after a recorded head are fine
    assert verify(log.path, head=next(iter(log.entries()))["hash"]) == 4
