"""What trust costs the centre's round: the aggregate of K signed updates with every check
(signature, replay, duplicate, the bounds: two passes) against the same updates with the
message checks alone (``checks=None``, what the aggregate did before), side by side in one run.

The updates are the demo's model (the paper's MLP on 30 features, float32) held in memory as
safetensors plus signed JSON manifests, so the figures are the centre's CPU time, not storage.
Also: the time to sign one manifest and to verify one. ``python -m bench.trust`` prints a
Markdown table (``--out FILE`` writes it too); ``docs/results/trust.md`` holds a run's figures.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from fedmap.algorithms import FedMAP
from fedmap.messages import Manifest, encode_params, make_manifest, specs_of
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.schema import Bounds
from fedmap.server import Candidate, Checks, aggregate_round
from fedmap.signing import Keyring, generate, load_private, public_bytes, seal, sign


def updates(sites: int, prior: Params, seed: int = 0) -> tuple[list[Candidate], Keyring]:
    """``sites`` signed updates near ``prior`` (one key pair per site) and their keyring."""
    generator = torch.Generator().manual_seed(seed)
    ring = Keyring()
    out = []
    for k in range(sites):
        name = f"h{k:03d}"
        private = load_private(generate()[0])
        public = public_bytes(private)
        ring = ring.enrol(name, public)
        theta = {n: v + 0.01 * torch.randn(v.shape, generator=generator) for n, v in prior.items()}
        blob = encode_params(theta)
        manifest = make_manifest(
            "update", 1, theta, blob, site=name, num_examples=100, log_omega=-0.6 - 0.01 * k
        )
        manifest = seal(manifest, private, "bench", "r", nonce=name)
        out.append(Candidate(name, manifest.to_json().encode(), blob))
    return out, ring


def timed(repeats: int, run: object) -> float:
    """The median of ``repeats`` wall-clock timings of ``run()``, in seconds."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def measure(sizes: Sequence[int], repeats: int) -> list[str]:
    prior = dict(build_model("mlp", 30).state_dict())
    expected = specs_of(prior)
    method = FedMAP()
    rows = [
        "| sites | message checks only (s) | every trust check (s) | ratio |",
        "|---|---|---|---|",
    ]
    for sites in sizes:
        candidates, ring = updates(sites, prior)
        checks = Checks("bench", "r", ring, Bounds())

        def plain(candidates: list[Candidate] = candidates) -> None:
            aggregate_round(method, 1, candidates, expected, prior=prior)

        def trusted(
            candidates: list[Candidate] = candidates, checks: Checks = checks, sites: int = sites
        ) -> None:
            _, summary = aggregate_round(
                method, 1, candidates, expected, prior=prior, checks=checks
            )
            assert len(summary.contributed) == sites, summary.rejected

        before, after = timed(repeats, plain), timed(repeats, trusted)
        rows.append(f"| {sites} | {before:.3f} | {after:.3f} | {after / before:.2f} |")
    candidates, ring = updates(1, prior)
    body = Manifest.from_json(candidates[0].manifest or b"")
    private = load_private(generate()[0])
    n = 2000
    began = time.perf_counter()
    for _ in range(n):
        sign(private, body.body())
    signing = (time.perf_counter() - began) / n
    kid = body.key_id
    began = time.perf_counter()
    for _ in range(n):
        ring.check(body.site, kid, body.body(), body.signature)
    verifying = (time.perf_counter() - began) / n
    rows += [
        "",
        f"Signing one manifest: {signing * 1e6:.0f} µs; verifying one: {verifying * 1e6:.0f} µs.",
    ]
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.trust", description=__doc__)
    parser.add_argument("--sites", type=int, nargs="+", default=[10, 150, 400])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = "\n".join(measure(args.sites, args.repeats)) + "\n"
    print(table, end="")
    if args.out:
        args.out.write_text(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
