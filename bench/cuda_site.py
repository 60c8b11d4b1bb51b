"""Time the site runtime's training step (``site_tasks.site.train.train``) on the CPU and on CUDA.

Runs whole rounds of a federation file through the code the DAG runs: ``server.init``, each
site's ``train`` (fetch and check the prior, read the site's folder with the task recipe, the local
MAP step on the chosen device, encode the update as safetensors, upload it) and
``server.aggregate``, against an in-memory object store (the same ``ObjectStore`` Protocol as S3).
It prints one line per (device, site, round) and a markdown table of the median seconds per
training step; with ``--out`` it also writes that table to a file. A machine without CUDA times
the CPU only.

``--skip-validation`` leaves out the Great Expectations check (for a GPU machine without GX
installed); everything else is the production path.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

import site_tasks.site.train as site_train
from site_tasks.centre import server
from site_tasks.federation import load_federation


class MemoryStore:
    """An ObjectStore in a dict: the bytes the S3 server would hold."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        self.objects[key] = bytes(data)

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def list(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))


def time_rounds(path: Path, device: str, rounds: int, state: Path) -> dict[str, list[float]]:
    """site -> seconds of each round's ``train`` call on device."""
    config = replace(load_federation(path), rounds=rounds, state_dir=state / device, run=device)
    store = MemoryStore()
    server.init(config, store)
    seconds: dict[str, list[float]] = defaultdict(list)
    sites = [name for name, site in config.sites.items() if site.tier == 1]
    for t in range(1, rounds + 1):
        for site in sites:
            start = time.perf_counter()
            result = site_train.train(config, site, t, store, device)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[site].append(time.perf_counter() - start)
            metrics = result.manifest.metrics
            shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_")}
            print(
                f"{path.stem} {device} {site} round {t}: {seconds[site][-1]:.3f} s on "
                f"{result.device}, {shown}",
                file=sys.stderr,
            )
        server.aggregate(config, store, t)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: python -m bench.cuda_site "
        "--federation federations/tcga_brca.yaml --rounds 3",
    )
    parser.add_argument("--federation", type=Path, action="append", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--state", type=Path, default=Path(".state/cuda-site"))
    parser.add_argument("--out", type=Path, help="write the markdown table here too")
    parser.add_argument("--skip-validation", action="store_true")
    args = parser.parse_args(argv)
    if args.skip_validation:  # no Great Expectations on the GPU machine
        setattr(site_train, "require_valid", lambda summary: summary)  # noqa: B010
        setattr(site_train, "validate_site", lambda *a, **k: None)  # noqa: B010
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    lines = [
        f"torch {torch.__version__}, GPU: {gpu}, {args.rounds} rounds; median seconds per "
        "`train` call (the first round, with CUDA start-up, listed apart)",
        "",
        "| federation | site | device | first round (s) | median of later rounds (s) |",
        "|---|---|---|---|---|",
    ]
    for path in args.federation:
        for device in devices:
            for site, values in time_rounds(path, device, args.rounds, args.state).items():
                later = statistics.median(values[1:]) if len(values) > 1 else float("nan")
                lines.append(f"| {path.stem} | {site} | {device} | {values[0]:.3f} | {later:.3f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
