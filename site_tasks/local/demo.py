"""``make demo``: a whole federation through the real stack, on one machine.

1. Start the local S3 server and the MLflow server (unless ``make up`` already runs them).
2. Write 14 simulated hospitals that share one patient population (``fedmap.hospitals``,
   ``site_tasks.local.demo_data``): 10 tier-1 (train every round), 2 tier-2 (fine-tune the final
   prior) and 2 tier-3 clinics (inference only), and ``demo.yaml``.
3. ``airflow dags test fedmap_demo``, then ``airflow dags test fedmap_demo_inference``.
4. Print a per-site table (accuracy and AUROC of each site's baseline and of FedMAP), write one
   PNG of each site's gain, print where to look and a JSON summary.
5. Stop the services it started.

Everything lives under ``.state/``. A second run reuses the data and warm-starts from the
registry's champion prior.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedmap.schema import read_federation
from site_tasks.local.airflow_run import airflow, dags_test
from site_tasks.local.demo_data import TIERS, write_data
from site_tasks.local.stack import BIN, REPO, Stack, start_mlflow, start_s3, stop

FEDERATION = "demo"
ROUNDS = 15
"""Communication rounds of a demo run (``--rounds``)."""
DATA = REPO / "data" / "demo"
"""The demo's hospital folders: the ``demo_data`` stage of dvc.yaml, pushed to the S3 remote."""


def version_data(stack: Stack) -> None:
    """``dvc repro demo_data`` (a no-op when unchanged), then ``dvc push`` it to the S3 remote
    ``local`` (the bucket fedmap-dvc on the local server), so another clone can ``dvc pull``."""
    from site_tasks.federation import StorageConfig
    from site_tasks.storage import S3Store

    access, secret = stack.credentials()
    S3Store(
        StorageConfig("fedmap-dvc", stack.s3_url, access_key_id=access, secret_access_key=secret)
    ).ensure_bucket()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    steps = (
        ["remote", "modify", "--local", "local", "endpointurl", stack.s3_url],
        ["repro", "demo_data"],
        ["push", "demo_data", "-r", "local"],
    )
    for args in steps:
        done = subprocess.run(
            [str(BIN / "dvc"), *args], env=env, cwd=REPO, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(
                f"dvc {' '.join(args)} failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
            )


def federation_body(state: Path, rounds: int, seed: int, data: Path = DATA) -> dict[str, Any]:
    """The demo's federation file (as a mapping) over the site folders in data, keeping the
    sites' own state under state. ``bench/demo_runs.py`` simulates this same file."""
    return {
        "name": FEDERATION,
        "task": {"contract": "demo_hospitals", "model": "mlp", "standardise": True},
        "algorithm": {
            "method": "fedmap",
            "prior": "gaussian",
            "variance": 10.0,  # on every layer: the hospitals measure the same features
            "input_variance": 10.0,
            "rounds": rounds,
            "epochs": 2,
            "batch_size": 32,
            "lr": 0.01,
            "lr_final": 0.001,  # cosine decay over the rounds: final models settle (demo_runs.md)
            "seed": seed,
        },
        "sites": {
            name: {"data": str(data / name), "tier": tier, "queue": name}
            for name, tier in sorted(TIERS.items())
        },
        "min_sites": 6,
        "schedule": "@weekly",
        "storage": {"bucket": "fedmap-demo", "connection": "fedmap_s3"},
        "mlflow": {"connection": "fedmap_mlflow"},
        "device": "auto",
        "state_dir": str(state / "demo" / "site-state"),
    }


def write_federation(stack: Stack, rounds: int, seed: int, data: Path = DATA) -> Path:
    """``federations/demo.yaml`` over the site folders in data; returns the YAML's path."""
    stack.federations.mkdir(parents=True, exist_ok=True)
    path = stack.federations / f"{FEDERATION}.yaml"
    body = federation_body(stack.state, rounds, seed, data)
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def summarise(stack: Stack, path: Path, run_id: str) -> dict[str, Any]:
    """The demo's summary from what the sites reported (S3), what tier 3 predicted against the
    outcomes the demo held back, and what MLflow registered."""
    import mlflow

    from site_tasks.federation import load_federation
    from site_tasks.runs import run_name
    from site_tasks.site.score import output_folder
    from site_tasks.storage import Keys, S3Store

    config = load_federation(path)
    store = S3Store(config.storage)
    keys = Keys(config.name, run_name(run_id))
    sites: dict[str, dict[str, Any]] = {}
    for name, site in sorted(config.sites.items()):
        row: dict[str, Any] = {"tier": site.tier}
        if site.tier in (1, 2):
            evaluation = json.loads(store.get(keys.evaluation(name)) or b"{}")
            local, own = evaluation.get("local", {}), evaluation.get("personalised", {})
            row["individual_accuracy"] = local.get("accuracy")
            row["fedmap_accuracy"] = own.get("accuracy")
            row["individual_auroc"] = local.get("roc_auc")
            row["fedmap_auroc"] = own.get("roc_auc")
        else:
            row.update(tier3_scores(output_folder(config, name), DATA / "truth" / f"{name}.txt"))
        sites[name] = row
    client = mlflow.MlflowClient(tracking_uri=stack.mlflow_url)
    models = client.search_registered_models(filter_string=f"name LIKE 'fedmap-{FEDERATION}-%'")
    registered = {
        m.name: max((int(v.version) for v in m.latest_versions or []), default=0)
        for m in sorted(models, key=lambda m: m.name)
    }
    champion = client.get_registered_model(f"fedmap-{FEDERATION}-prior").aliases.get("champion")
    manifest = json.loads(store.get(keys.prior(1)[1]) or b"{}")
    return {
        "federation": FEDERATION,
        "run_id": run_id,
        "rounds": config.rounds,
        "warm_started_from": manifest.get("extra", {}).get("warm_start_from"),
        "sites": sites,
        "registered_models": registered,
        "champion_version": champion,
    }


def tier3_scores(folder: Path, truth_file: Path) -> dict[str, Any]:
    """A tier-3 clinic's newest predictions against the outcomes the demo held back: accuracy,
    AUROC, the majority-class rate of those outcomes (what always guessing the commoner one
    scores), and the model version the predictions came from."""
    from fedmap.hospitals import majority_rate
    from fedmap.metrics import score

    files = sorted(folder.glob("predictions_*.csv"), key=lambda p: p.stat().st_mtime)
    if not files or not truth_file.exists():
        return {"fedmap_accuracy": None, "fedmap_auroc": None, "majority_rate": None}
    rows = [line.split(",") for line in files[-1].read_text().splitlines()[1:]]
    truth = np.array([int(v) for v in truth_file.read_text().split()], dtype=np.int64)
    prob = np.array([float(r[1]) for r in rows])
    if len(prob) != len(truth):
        raise RuntimeError(f"{files[-1]}: {len(prob)} predictions for {len(truth)} outcomes")
    scores = score(truth, prob).as_dict()
    return {
        "fedmap_accuracy": scores["accuracy"],
        "fedmap_auroc": scores["roc_auc"],
        "majority_rate": majority_rate(truth),
        "model": f"{rows[0][3]} v{rows[0][4]}" if rows else None,
    }


def baseline(row: dict[str, Any]) -> float | None:
    """What a site's FedMAP score is compared with: its local-only model (tiers 1-2), or its
    majority-class rate (tier 3, which has no labelled data to train on)."""
    value = row["majority_rate"] if row["tier"] == 3 else row["individual_accuracy"]
    return None if value is None else float(value)


def table(summary: dict[str, Any]) -> str:
    """Per site: accuracy of its baseline and of FedMAP, the gain, and both AUROCs."""

    def pct(value: float | None) -> str:
        return "    -" if value is None else f"{100 * value:5.1f}"

    def auc(value: float | None) -> str:
        return "    -" if value is None else f"{value:5.3f}"

    head = "site     tier  baseline       accuracy: base  FedMAP  gain (pp)   AUROC: base  FedMAP"
    lines = [head, "-" * len(head)]
    for name, row in summary["sites"].items():
        base, fed = baseline(row), row["fedmap_accuracy"]
        gain = "     -" if base is None or fed is None else f"{100 * (fed - base):+6.2f}"
        kind = "majority class" if row["tier"] == 3 else "local only"
        lines.append(
            f"{name}  {row['tier']:4d}  {kind:14s}  {pct(base)}   {pct(fed)}     {gain}"
            f"       {auc(row.get('individual_auroc'))}   {auc(row.get('fedmap_auroc'))}"
        )
    scored = [r for r in summary["sites"].values() if r["tier"] in (1, 2)]
    mean_local = sum(r["individual_accuracy"] for r in scored) / len(scored)
    mean_fed = sum(r["fedmap_accuracy"] for r in scored) / len(scored)
    lines.append("-" * len(head))
    gain = f"{100 * (mean_fed - mean_local):+6.2f}"
    lines.append(
        f"mean of tiers 1-2      local only      {pct(mean_local)}   {pct(mean_fed)}     {gain}"
    )
    return "\n".join(lines)


def gain_picture(summary: dict[str, Any], path: Path) -> Path:
    """The demo's one PNG: each site's gain over its baseline, coloured by tier."""
    from fedmap.run_plots import SiteGain, plot_site_gain

    rows = [
        SiteGain(name, row["tier"], base, row["fedmap_accuracy"])
        for name, row in summary["sites"].items()
        if (base := baseline(row)) is not None and row["fedmap_accuracy"] is not None
    ]
    title = (
        f"fedmap_{FEDERATION}, {summary['rounds']} rounds: accuracy gain of FedMAP over "
        "local-only (tiers 1-2) and the majority class (tier 3)"
    )
    return plot_site_gain(rows, path, title)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m site_tasks.local.demo",
        description="Run the demo federation (14 simulated hospitals sharing one patient "
        "population, three tiers; docs/hospitals.md) through the local S3 server, MLflow and "
        "Airflow, then print a per-site table, write a PNG of each site's gain and print a JSON "
        "summary. A second run warm-starts from the registry's champion prior.",
    )
    parser.add_argument("--state", type=Path, default=REPO / ".state", help="the state folder")
    parser.add_argument(
        "--rounds", type=int, default=ROUNDS, help=f"communication rounds ({ROUNDS})"
    )
    parser.add_argument("--seed", type=int, default=0, help="data and training seed (0)")
    parser.add_argument(
        "--write-data", type=Path, metavar="DIR", help="only write the site folders (dvc stage)"
    )
    args = parser.parse_args(argv)
    if args.write_data:
        write_data(args.write_data, args.seed)
        return 0
    stack = Stack(args.state.resolve())
    began = time.monotonic()
    started = [name for name, start in (("s3", start_s3), ("mlflow", start_mlflow)) if start(stack)]
    print(f"services: S3 {stack.s3_url}, MLflow {stack.mlflow_url}", flush=True)
    try:
        print("data: dvc repro demo_data && dvc push -r local (bucket fedmap-dvc)", flush=True)
        version_data(stack)
        path = write_federation(stack, args.rounds, args.seed)
        print(f"federation: {path} (10 tier-1, 2 tier-2, 2 tier-3 sites)", flush=True)
        # each hospital's enrolment (site-task enrol), done here for all of them on one machine
        from site_tasks import trust
        from site_tasks.federation import load_federation

        demo = load_federation(path)
        enrolled = trust.enrol_all(demo)
        keyring = demo.federation.keyring
        print(f"keys: the centre and {len(enrolled) - 1} sites enrolled (Ed25519) in {keyring}")
        access, secret = stack.credentials()
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": access,
                "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_ENDPOINT_URL_S3": stack.s3_url,
            }
        )
        airflow(stack, ["db", "migrate"])
        logs = stack.state / "demo" / "logs"
        print(f"airflow dags test fedmap_{FEDERATION} (log: {logs}/federation.log)", flush=True)
        # the site at each map index: the DAG maps over the file's sites in its order
        fed = read_federation(path)
        members = [s.name for s in fed.tier(1, 2)]
        names = {
            "validate": members,
            "finalise": members,
            "train": [s.name for s in fed.tier(1)],
            "score": [s.name for s in fed.tier(3)],
        }
        dag_began = time.monotonic()
        run_id, state = dags_test(stack, f"fedmap_{FEDERATION}", logs / "federation.log", names)
        dag_s = time.monotonic() - dag_began
        if state != "success":
            raise RuntimeError(f"fedmap_{FEDERATION} run {run_id} ended {state}; see {logs}")
        print(f"airflow dags test fedmap_{FEDERATION}_inference", flush=True)
        scored, state = dags_test(
            stack, f"fedmap_{FEDERATION}_inference", logs / "inference.log", names
        )
        if state != "success":
            raise RuntimeError(f"inference run {scored} ended {state}; see {logs}")
        summary = summarise(stack, path, run_id)
        summary["dag_run_s"] = round(dag_s, 1)
    finally:
        for name in started:
            stop(stack, name)
    summary["total_s"] = round(time.monotonic() - began, 1)
    picture = gain_picture(summary, stack.state / "demo" / "site_gain.png")
    summary["gain_png"] = str(picture)
    print()
    print(table(summary))
    print()
    warm = summary["warm_started_from"]
    print(
        f"run {run_id}: DAG run {summary['dag_run_s']:.0f} s, {summary['total_s']:.0f} s in all; "
        f"{'warm-started from ' + warm if warm else 'cold start (Algorithm 1)'}; champion prior: "
        f"version {summary['champion_version']}"
    )
    print(f"picture: {picture} (each site's gain over its baseline, coloured by tier)")
    print(
        "tier 3 (site-07, site-14) has no labelled data: it scores its admissions with the "
        "champion prior's mean alone, standardised with its own reference rows; its baseline is "
        "the majority-class rate of its held-back outcomes."
    )
    print(
        "where to look: `make up`, then the Airflow UI at "
        f"{stack.airflow_url} (DAG fedmap_{FEDERATION}: this run's note sums up its rounds, "
        "quorum, gate and equity; each task's log pane, e.g. train [site-01], holds the site's "
        "own lines; Assets shows the champion each release announced) and the MLflow UI at "
        f"{stack.mlflow_url} (experiment fedmap-{FEDERATION}: the parent run carries "
        f"rounds_sites.png and site_gain.png; models fedmap-{FEDERATION}-*); `make down` stops "
        "them."
    )
    print(json.dumps(summary, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
