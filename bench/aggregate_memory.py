"""Peak memory of the centre's aggregation: streamed (one update at a time) against the batch
path it replaced (every update read, then checked, then averaged).

``peak_aggregate_memory(sites, params)`` writes ``sites`` synthetic updates of a ``params``-entry
float32 model (safetensors and manifest, as sites upload them) into a folder-backed object store
(the ``ObjectStore`` Protocol of ``site_tasks.storage`` over files, so the stored bytes live on disk
and not in the measured process), then aggregates them in a fresh Python process per path and
reports that process's growth in resident memory: its peak (getrusage) minus its resident size
just before aggregating (after a warm-up aggregate of one site). Both paths go through the same listing and checks:

- streaming: ``fedmap.server.aggregate_round`` over ``site_tasks.centre.server.uploads``, what
  ``site_tasks.centre.server.aggregate`` runs;
- batch: ``collect`` (every upload's bytes), ``accept`` on each (every decoded update), then
  ``FedMAP.aggregate``: the earlier ``aggregate_round``.

``python -m bench.aggregate_memory`` prints a table for 10 and 400 sites.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch

from fedmap.messages import encode_params, make_manifest, specs_of
from fedmap.params import Params
from site_tasks.storage import Keys

Path_ = Literal["streaming", "batch"]
PATHS: tuple[Path_, ...] = ("streaming", "batch")
KEYS = Keys("bench", "memory")
ROUND = 1


class FolderStore:
    """An ObjectStore over a folder: one file per key (the key is the relative path)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def get(self, key: str) -> bytes | None:
        path = self.root / key
        return path.read_bytes() if path.is_file() else None

    def list(self, prefix: str) -> list[str]:
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(k for k in found if k.startswith(prefix))


def model(params: int, seed: int) -> Params:
    """A two-layer model of about ``params`` float32 entries; "in" is its input layer."""
    gen = torch.Generator().manual_seed(seed)
    width = max(1, params // 64)
    return {
        "in.weight": torch.randn(width, 32, generator=gen),
        "out.bias": torch.randn(width, generator=gen),
        "out.weight": torch.randn(width, 31, generator=gen),
    }


def write_updates(store: FolderStore, sites: int, params: int) -> None:
    """Round 1's uploads of ``sites`` sites: distinct parameters, log omega and sample counts."""
    for k in range(sites):
        site = f"site-{k:04d}"
        theta = model(params, k)
        blob = encode_params(theta)
        manifest = make_manifest(
            "update",
            ROUND,
            theta,
            blob,
            site=site,
            num_examples=10 + k,
            log_omega=-1.0 - (k % 7) / 3.0,
        )
        tensors_key, manifest_key = KEYS.update(ROUND, site)
        store.put(tensors_key, blob)
        store.put(manifest_key, manifest.to_json().encode())


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure(root: Path, path: Path_, params: int, prior: str) -> dict[str, float]:
    """In this process: aggregate the updates under root by ``path``; memory growth and time."""
    from fedmap.algorithms import FedMAP
    from fedmap.server import accept, aggregate_round
    from site_tasks.centre.server import uploads

    store = FolderStore(root)
    method = FedMAP(prior=prior, min_variance=0.01)  # type: ignore[arg-type]
    expected = specs_of(model(params, 0))
    # warm up (lazy imports, first-call allocations) on one site, so the growth measured is the
    # aggregate's own
    aggregate_round(method, ROUND, itertools.islice(uploads(store, KEYS, ROUND), 1), expected)
    before, start = _resident_bytes(), time.perf_counter()
    if path == "streaming":
        new_prior, _ = aggregate_round(method, ROUND, uploads(store, KEYS, ROUND), expected)
    else:
        candidates = list(uploads(store, KEYS, ROUND))
        updates = [accept(c, ROUND, expected) for c in candidates]
        new_prior = method.aggregate(updates, {})
    seconds = time.perf_counter() - start
    assert new_prior, "the aggregate is empty"
    return {"mib": (_peak_bytes() - before) / 2**20, "seconds": seconds}


def peak_aggregate_memory(sites: int, params: int, prior: str = "gaussian") -> dict[str, Any]:
    """The aggregate's peak memory growth (MiB) and time (s), streaming and batch, for ``sites``
    uploads of a ``params``-entry model (``model_mib``: one update's float32 tensors), each path
    in a fresh Python process on the same stored updates. ``prior``: gaussian or diagonal
    (icnn adds its fit's L-BFGS time, not memory that grows with the model)."""
    out: dict[str, Any] = {"sites": sites, "params": params, "prior": prior}
    with tempfile.TemporaryDirectory(prefix="aggregate-memory-") as tmp:
        store = FolderStore(Path(tmp))
        write_updates(store, sites, params)
        out["model_mib"] = sum(v.numel() * 4 for v in model(params, 0).values()) / 2**20
        for path in PATHS:
            command = [sys.executable, "-m", "bench.aggregate_memory", "--child", tmp, path]
            result = subprocess.run(
                [*command, str(params), prior],
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
            got = json.loads(result.stdout.strip().splitlines()[-1])
            out[f"{path}_mib"] = got["mib"]
            out[f"{path}_seconds"] = got["seconds"]
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table of ``peak_aggregate_memory`` results."""
    lines = [
        "| sites | params | prior | one update (MiB) | streaming (MiB) | batch (MiB) "
        "| streaming (s) | batch (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sites']} | {r['params']:,} | {r['prior']} | {r['model_mib']:.1f} "
            f"| {r['streaming_mib']:.1f} | {r['batch_mib']:.1f} "
            f"| {r['streaming_seconds']:.2f} | {r['batch_seconds']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 400])
    parser.add_argument("--params", type=int, default=250_000)
    parser.add_argument("--prior", choices=["gaussian", "diagonal"], default="gaussian")
    parser.add_argument("--child", nargs=4, metavar=("ROOT", "PATH", "PARAMS", "PRIOR"))
    args = parser.parse_args(argv)
    if args.child:
        root, path, params, prior = args.child
        print(json.dumps(measure(Path(root), path, int(params), prior)))
        return
    print(table([peak_aggregate_memory(n, args.params, args.prior) for n in args.sites]))


if __name__ == "__main__":
    main()
