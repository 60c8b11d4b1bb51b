"""A site's data version: the hash DVC gives the site's folder.

``dvc add <folder>`` (or a ``dvc.yaml`` stage whose output is the folder) records
``md5: <hex>.dir``: the MD5 of the JSON list of ``{"md5", "relpath"}`` entries of every file,
sorted by path. Computing the same value here, with hashlib alone, lets a site report the exact
version of its data without DVC installed, and lets anyone match a registered model to a DVC
commit of that data (``dvc.lock``, ``.dvc`` files, ``dvc pull``).

Each file checked against the contract also gets a SHA-256 (:func:`file_sha256`): the
validation summary records it, a registered model names the data it saw by it, and every later
task of a run re-hashes the files against it (``site_tasks.site.digests``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

CHUNK = 1 << 20


def _hexdigest(path: Path, digest: hashlib._Hash) -> str:
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def file_md5(path: Path) -> str:
    return _hexdigest(path, hashlib.md5(usedforsecurity=False))


def file_sha256(path: Path) -> str:
    """The SHA-256 of the file's bytes, read in 1 MiB blocks."""
    return _hexdigest(path, hashlib.sha256())


def dvc_dir_hash(folder: Path) -> str:
    """DVC's hash of a directory output, e.g. ``dfa0925f9be2baa947ce352049be652f.dir``.

    md5( json.dumps([{"md5": md5(file), "relpath": path}, ...] sorted by path, sort_keys=True) )
    """
    files = sorted(
        (p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).parts
    )
    entries = [{"md5": file_md5(p), "relpath": p.relative_to(folder).as_posix()} for p in files]
    listing = json.dumps(entries, sort_keys=True)
    return hashlib.md5(listing.encode(), usedforsecurity=False).hexdigest() + ".dir"
