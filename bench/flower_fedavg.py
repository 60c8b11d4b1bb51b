"""The scale study's Flower workload: FedAvg over N synthetic label-skew sites in Flower's
simulation runtime (Ray backend), one JSON line on stdout.

Runs in the flower venv (``make flower``)::

    .state/flower/bin/python bench/flower_fedavg.py --sites 10 --rounds 20 --seed 0

Each node runs ``fedmap.algorithms.FedAvg``'s local step (the "mlp" model, one epoch, batch 64,
lr 1e-2: ``LocalTraining``'s defaults) on its own site, which it generates itself
(``fedmap.flower.SyntheticSites``), so no data crosses; the server aggregates with our
``FedMAPStrategy`` calling ``FedAvg.aggregate``, sum_k (N_k / N) theta_k, which is what Flower's
own FedAvg computes. One CPU per node, so the nodes train two at a time on 2 cores.

``seconds_per_round`` is the mean round time (the server sending the global model to every node
until it has aggregated their replies) over rounds 2..R: round 1 also waits for Ray to start, its
actors to import torch and each to build the sites. ``startup_s`` is ``wall_s - R *
seconds_per_round``: Ray's start-up and shutdown and that first-round warm-up.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE = REPO / ".state"
# Flower reads these at import: it writes ~/.flwr/source (and phones home) unless told otherwise.
os.environ.setdefault("FLWR_HOME", str(STATE / "flwr-home"))
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

from fedmap import flower  # noqa: E402  (after the environment above)
from fedmap.algorithms import FedAvg  # noqa: E402
from fedmap.simulator import SimulationConfig  # noqa: E402
from fedmap.synthetic import SyntheticConfig  # noqa: E402

SCENARIO = "label-skew"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10, help="number of sites N (10)")
    parser.add_argument("--rounds", type=int, default=20, help="rounds R, at least 2 (20)")
    parser.add_argument("--seed", type=int, default=0, help="data and initialisation seed (0)")
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2: round 1 includes Ray's start-up")
    logging.getLogger("flwr").setLevel(logging.WARNING)
    sites = flower.SyntheticSites(SCENARIO, args.seed, args.sites)
    start = time.perf_counter()
    strategy = flower.simulate(
        FedAvg(),
        sites,
        SimulationConfig(rounds=args.rounds, model="mlp"),
        args.seed,
        num_sites=args.sites,
        n_features=SyntheticConfig().n_features,
        evaluate=True,  # every site scored every round, as the loop and batched engines do
        backend=flower.ray_backend(cpus_per_site=1.0, temp_dir=STATE / "ray"),
    )
    wall = time.perf_counter() - start
    rounds = strategy.round_seconds
    if len(rounds) != args.rounds:
        raise SystemExit(f"{len(rounds)} of {args.rounds} rounds aggregated")
    per_round = statistics.fmean(rounds[1:])
    row = {
        "sites": args.sites,
        "rounds": args.rounds,
        "seconds_per_round": round(per_round, 4),
        "wall_s": round(wall, 3),
        "startup_s": round(wall - args.rounds * per_round, 3),
        "first_round_s": round(rounds[0], 3),
    }
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
