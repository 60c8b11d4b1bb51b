"""Missing data on the eICU demo: drop the incomplete rows, or impute them, with and without
missing-value indicators; FedMAP, Individual and FedAvg beside APACHE IVa's own risk score.

Reads params.yaml ``missing`` and the federation file it names (``federations/eicu.yaml``). Each
strategy is the file's ``task`` recipe with ``impute`` and ``missing_indicators`` replaced; every
method trains with the file's budget. FedMAP's sigma^2 is the one ``missing.variance`` names: the
stage re-runs its grid on the tuning seeds (never the reported ones) and stops if the grid's best
is another value. Writes ``<out>/missing.md``, ``missing_results.json`` (every record),
``missing_metrics.json`` (DVC metrics) and ``missing.png``. Run through ``dvc repro missing``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import NDArray
from tqdm import tqdm

from bench.missing_report import (
    APACHE,
    IMPUTED,
    METRICS,
    TOLERANCE,
    UNTUNED,
    apache_table,
    choose,
    headline_table,
    nanmean,
    plot,
    rows_table,
    seed_means,
    site_table,
    tuned_name,
    tuning_table,
    verdicts,
)
from fedmap.comparison import ComparisonRun, Variant, compare, default_variants, records
from fedmap.metrics import auprc, brier, ece, pool_reliability, reliability, roc_auc
from fedmap.report import json_numbers, write_atomic
from fedmap.schema import ConfigError, Federation, TabularTask, from_mapping, read_federation
from fedmap.simulator import ENGINES, EngineName, SimulationResult
from fedmap.tabular import load_tabular_site
from site_tasks.local.sources import EICU_DEMO_SOURCE

Records = Sequence[Mapping[str, Any]]
STRATEGIES: dict[str, dict[str, Any]] = {
    "drop": {"impute": "none", "missing_indicators": False},
    "median": {"impute": "median", "missing_indicators": False},
    "median+indicators": {"impute": "median", "missing_indicators": True},
    "federated": {"impute": "median", "missing_indicators": True, "statistics": "federation"},
}
"""Each strategy's replacement of the recipe's ``impute``, ``missing_indicators`` and
``statistics``: ``federated`` is median+indicators with the fill values and the standardisation
pooled over the sites (counts, sums, medians) instead of each site's own."""
METHODS = ("fedmap", "individual", "fedavg")
STAY = "patientunitstayid"


@dataclass(frozen=True)
class MissingConfig:
    """params.yaml ``missing``."""

    federation: str = "federations/eicu.yaml"
    seeds: tuple[int, ...] = (42, 43, 44, 45, 46)
    tuning_seeds: tuple[int, ...] = (100, 101, 102)
    """FedMAP's sigma^2 is chosen over these seeds alone."""
    grid: tuple[float, ...] = (0.1, 1.0, 10.0)
    variance: float = 1.0
    """The grid's best mean AUROC over the tuning seeds; the reported FedMAP runs with it."""
    untuned_variance: float = 10.0
    """The federation file's starting value, reported beside the tuned one."""
    jobs: int = 2
    engine: EngineName = "batched"
    budget_check: tuple[int, ...] = ()
    """Shorter budgets (rounds) at which FedMAP and FedAvg are also run, under
    median+indicators on the reported seeds: why the file's rounds are what they are."""

    def __post_init__(self) -> None:
        overlap = sorted(set(self.seeds) & set(self.tuning_seeds))
        if overlap:
            raise ValueError(f"tuning_seeds and seeds share {overlap}: tune on other seeds")
        if self.variance not in self.grid:
            raise ValueError(f"variance {self.variance} is not in the grid {list(self.grid)}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")


# ---- the runs --------------------------------------------------------------------------------


def strategy_spec(spec: Federation, strategy: str) -> Federation:
    """The federation with the strategy's recipe and the model's input size under it."""
    recipe = replace(spec.task.recipe, **STRATEGIES[strategy])
    first = spec.tier(1)[0]
    n = load_tabular_site(first.data, recipe, name=first.name).num_features
    return replace(spec, task=replace(spec.task, recipe=recipe, n_features=n))


def tuned(variance: float) -> Variant:
    return Variant(tuned_name(variance), "fedmap", {"variance": float(variance)})


def report_runs(spec: Federation, cfg: MissingConfig) -> list[ComparisonRun]:
    variants = [
        Variant("fedmap", "fedmap", {"variance": float(cfg.variance)}),
        Variant(UNTUNED, "fedmap", {"variance": float(cfg.untuned_variance)}),
        *default_variants(METHODS[1:]),
    ]
    return [ComparisonRun(v, spec.task.model, s) for v in variants for s in cfg.seeds]


def tuning_runs(spec: Federation, cfg: MissingConfig) -> list[ComparisonRun]:
    return [ComparisonRun(tuned(v), spec.task.model, s) for v in cfg.grid for s in cfg.tuning_seeds]


BUDGET_STRATEGY = "median+indicators"


def budget_runs(spec: Federation, cfg: MissingConfig) -> list[ComparisonRun]:
    """FedMAP (the chosen sigma^2) and FedAvg on the reported seeds, for one budget."""
    variants = [
        Variant("fedmap", "fedmap", {"variance": float(cfg.variance)}),
        Variant("fedavg", "fedavg"),
    ]
    return [ComparisonRun(v, spec.task.model, s) for v in variants for s in cfg.seeds]


def with_rounds(spec: Federation, rounds: int) -> Federation:
    return replace(spec, algorithm=replace(spec.algorithm, rounds=rounds))


def mean_predicted(result: SimulationResult) -> float:
    """The mean predicted risk over every site's validation rows (from the reliability bins)."""
    total = sum(sum(r.counts) for r in result.reliability.values())
    weighted = sum(
        c * m
        for r in result.reliability.values()
        for c, m in zip(r.counts, r.mean_predicted, strict=True)
        if c
    )
    return weighted / total


def budget_rows(
    rounds: int, done: Sequence[tuple[ComparisonRun, SimulationResult]]
) -> list[dict[str, Any]]:
    """Per method at one budget: mean over seeds of the site-mean AUROC and ECE, the mean
    predicted risk, and the validation prevalence it should match."""
    out = []
    for method in ("fedmap", "fedavg"):
        runs = [res for run, res in done if run.variant.name == method]
        finals = [res.final for res in runs]
        out.append(
            {
                "rounds": rounds,
                "method": method,
                "roc_auc": statistics.fmean(
                    statistics.fmean(s["roc_auc"] for s in f.values()) for f in finals
                ),
                "ece": statistics.fmean(
                    statistics.fmean(s["ece"] for s in f.values()) for f in finals
                ),
                "mean_predicted": statistics.fmean(mean_predicted(r) for r in runs),
            }
        )
    return out


def rows_scored(spec: Federation) -> list[dict[str, Any]]:
    """Per site: val.csv's rows and deaths, and the rows each strategy trains on and scores."""
    out = []
    for site in spec.tier(1):
        row: dict[str, Any] = {"site": site.name}
        for strategy in STRATEGIES:
            recipe = replace(spec.task.recipe, **STRATEGIES[strategy])
            data = load_tabular_site(site.data, recipe, name=site.name)
            row["val_rows"] = data.num_scored + data.dropped[1]
            row["train_rows"] = data.num_train + data.dropped[0]
            row[strategy] = {
                "train": data.num_train,
                "scored": data.num_scored,
                "deaths": int(data.y_val.sum()),
                "dropped": list(data.dropped),
            }
        row["val_deaths"] = row["median"]["deaths"]
        out.append(row)
    return out


# ---- APACHE IVa ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Joined:
    """One site's val rows with APACHE IVa's predicted hospital mortality."""

    site: str
    val_rows: int
    y: NDArray[np.float64]
    p: NDArray[np.float64]
    complete: NDArray[np.bool_]
    """Rows with every input present: the rows drop scores."""


def apache_join(source: Path, folders: Mapping[str, Path], recipe: TabularTask) -> list[Joined]:
    """Each site's val.csv joined on patientunitstayid to apachepatientresult's IVa rows; a stay
    without a IVa row, or with predictedhospitalmortality -1 (not computed), is left out."""
    with gzip.open(source, "rt", newline="") as f:
        predicted: dict[str, float] = {}
        for r in csv.DictReader(f):
            if r["apacheversion"] != "IVa":
                continue
            if r[STAY] in predicted:
                raise ValueError(f"{source}: stay {r[STAY]} has two APACHE IVa rows")
            value = r["predictedhospitalmortality"].strip()
            if value not in ("", "-1"):
                predicted[r[STAY]] = float(value)
    out = []
    for site, folder in folders.items():
        with (folder / "val.csv").open(newline="") as f:
            val = list(csv.DictReader(f))
        kept = [r for r in val if r[STAY] in predicted]
        y = np.array([float(r[recipe.target]) for r in kept])
        p = np.array([predicted[r[STAY]] for r in kept])
        gaps = {"", *recipe.missing}
        inputs = recipe.input_columns(list(val[0]) if val else [])
        complete = np.array([all(r[c].strip() not in gaps for c in inputs) for r in kept], bool)
        out.append(Joined(site, len(val), y, p, complete))
    return out


def complete_cases(joined: Sequence[Joined]) -> dict[str, dict[str, float]]:
    """APACHE IVa pooled over sites on the rows drop scores (complete) and those it leaves out."""
    out = {}
    for name, want in (("complete", True), ("incomplete", False)):
        y = np.concatenate([j.y[j.complete == want] for j in joined])
        p = np.concatenate([j.p[j.complete == want] for j in joined])
        out[name] = {
            "rows": len(y),
            "deaths": int(y.sum()),
            "roc_auc": roc_auc(y, p) if len(y) else math.nan,
            "mean_predicted": float(p.mean()) if len(y) else math.nan,
        }
    return out


def apache_records(joined: Sequence[Joined]) -> list[dict[str, Any]]:
    out = []
    for j in joined:
        scores = {m: float("nan") for m in METRICS}
        if len(j.y):
            scores = {
                "roc_auc": roc_auc(j.y, j.p),
                "auprc": auprc(j.y, j.p),
                "brier": brier(j.y, j.p),
                "ece": ece(j.y, j.p),
            }
        out.append(
            {
                "method": APACHE,
                "site": j.site,
                "val_rows": j.val_rows,
                "scored": len(j.y),
                "deaths": int(j.y.sum()),
                **scores,
            }
        )
    return out


# ---- the page --------------------------------------------------------------------------------


def page(
    spec: Federation,
    cfg: MissingConfig,
    rows: Records,
    apache: Records,
    scored: Sequence[Mapping[str, Any]],
    tuning: Mapping[float, Mapping[str, float]],
    cases: Mapping[str, Mapping[str, float]],
    seconds: float,
) -> str:
    algo = spec.algorithm
    sites = [s.name for s in spec.tier(1)]
    verdict_table, numbers = verdicts(rows)
    met = [k for k, v in numbers.items() if v["met"] and k.endswith("/fedmap")]
    missed = [k for k, v in numbers.items() if not v["met"] and k.endswith("/fedmap")]
    inputs = spec.task.recipe.input_columns(_header(spec))
    with_prediction = sum(r["scored"] for r in apache)
    val_rows = sum(r["val_rows"] for r in apache)
    return f"""# Missing data on the eICU demo: drop or impute

Generated by `dvc repro missing` (`bench/missing.py`) from
[`federations/eicu.yaml`](../../federations/eicu.yaml) and params.yaml `missing` in
{seconds / 60:.1f} min on {os.cpu_count()} CPU cores. Do not edit by hand.

Three ways to treat a missing feature (APACHE's -1 or an empty cell), each a change of the
federation file's recipe: **drop** (`impute: none`: a row with any missing feature is left out of
train.csv *and* of val.csv), **median** (`impute: median`, each hospital region with its own
training medians) and **median+indicators** (`impute: median, missing_indicators: true`: one
more 0/1 input per feature, 1 where it was missing). FedMAP, Individual (each site alone) and
FedAvg train on each; every site is scored on its own val.csv with its own model.

## Rows scored

{rows_table(scored)}

**† Drop scores only the complete cases:** {_share(scored)} of the val rows, the stays with
every feature recorded, and it trains on the complete cases of train.csv alone. Its numbers
are measured on a different, smaller and selected set of patients than the imputing strategies'
(which score every val row), so its AUROC is **not comparable** with theirs and says nothing
about the patients it leaves out. {_cases_text(cases)}

## Every metric, mean over sites

Mean ± sd over seeds {list(cfg.seeds)} of the unweighted mean over the {len(sites)} sites. AUROC
and AUPRC: higher is better; Brier and ECE (10 equal-width bins): lower is better. `fedmap` runs
with sigma^2 = {cfg.variance:g} (chosen below), `{UNTUNED}` with the file's starting value
sigma^2 = {cfg.untuned_variance:g}.

{headline_table(rows, apache)}

‡ APACHE IVa's own predicted hospital mortality, on the {with_prediction} of {val_rows} val rows
where it was computed (mean over sites, one value: it is not trained here). Its rows are not
exactly ours, so it is a reference point, not a head-to-head comparison.

![AUROC per strategy and method; reliability under median+indicators](missing.png)

## AUROC per site (imputing strategies)

{site_table(rows, apache, sites)}

## APACHE IVa per site

{apache_table(apache)}

## Target

With imputation (median and median+indicators each), FedMAP's mean-over-sites AUROC (mean over
seeds) is at least max(Individual's, FedAvg's), and no site's FedMAP AUROC is more than
{TOLERANCE} below its Individual AUROC. `{UNTUNED}` is shown for reference; the target is
judged on `fedmap`.

{verdict_table}

Judged on `fedmap` (the `{UNTUNED}` rows are for reference): **met** for
{", ".join(met) or "none"}; **missed** for {", ".join(missed) or "none"}.

## FedMAP's sigma^2

Chosen from the grid {[float(v) for v in cfg.grid]} by the mean-over-sites AUROC on the val split,
averaged over the two imputing strategies and over the tuning seeds {list(cfg.tuning_seeds)},
which are not the reported seeds. The choice was made on the same validation split that is
reported, so FedMAP's numbers above are **optimistic** (there is no separate test split in this
demo); `{UNTUNED}` (sigma^2 = {cfg.untuned_variance:g}, the file's starting value) is the
untuned figure. {_file_note(algo.variance, cfg.variance)} The budget was chosen on the same
split too: at the 20 rounds this file first ran, the target was missed (last section), and the
file now runs the budget at which FedMAP's prior has converged, for every method alike.

{tuning_table(tuning, cfg.variance, cfg.untuned_variance)}

## How it was measured

- **Data:** the eICU Collaborative Research Database demo (v2.0, PhysioNet) via
  `eth-mds/eicu-demo`, under the Open Database License (ODbL) v1.0. Pollard TJ, Johnson AEW,
  Raffa JD, Celi LA, Mark RG, Badawi O. The eICU Collaborative Research Database, a freely
  available multi-center database for critical care research. Scientific Data 5:180178 (2018).
  Provenance: `../shared/data/eicu_demo/SOURCE.md`.
- **Sites:** the hospitals' regions ({", ".join(sites)}); a unit stay with APACHE IV day-1
  physiology and a discharge status (target `{spec.task.recipe.target}`, 1 = Expired).
- **Split:** 70/30 train/val per site, stratified by the label, seeded with seed 0
  (`dvc repro eicu_data`).
- **Features:** {len(inputs)} inputs ({", ".join(inputs)}), standardised with each site's own
  training statistics; median+indicators adds one indicator per input.
- **Budget:** the file's: {algo.rounds} rounds of {algo.epochs} local epoch(s), batch size
  {algo.batch_size}, Adam with lr {algo.lr}, model `{spec.task.model}`; Individual trains for the
  same {algo.rounds * algo.epochs} epochs. FedMAP: Gaussian prior, weighting `{algo.weighting}`.
  Engine `{cfg.engine}`, {cfg.jobs} processes.
- **Metrics:** `fedmap.metrics` (roc_auc, auprc, brier, ece), the same functions for APACHE IVa.
  The reliability diagram pools every site and seed under median+indicators. Small sites
  (the smallest: {_smallest(scored)}) make per-site AUROC and ECE noisy.
"""


def federated_section(rows: Records) -> str:
    """Site statistics against federated ones, under median+indicators, per method."""
    means = {m: seed_means(rows, m) for m in ("roc_auc", "auprc", "brier", "ece")}
    lines = [
        "| method | statistics | AUROC | AUPRC | Brier | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for method in ("fedmap", "individual", "fedavg"):
        for strategy, label in (("median+indicators", "site"), ("federated", "federation")):
            if (strategy, method) not in means["roc_auc"]:
                return ""
            cells = " | ".join(
                f"{statistics.fmean(means[m][(strategy, method)]):.4f}" for m in means
            )
            lines.append(f"| {method} | {label} | {cells} |")
    return (
        """
## Site or federated statistics

`statistics: site` imputes and standardises every site with its own training statistics;
`statistics: federation` (the `federated` rows) with global ones, pooled from what each site
shares of its training split: per input column its count of present values, their sum and its
median, per categorical column its level counts, then per feature its count, sum and sum of
squares (`fedmap.shared_statistics`). The global median is the count-weighted median of the
sites' medians. Under median+indicators, mean over the reported seeds of the mean over sites:

"""
        + "\n".join(lines)
        + "\n"
    )


def budget_section(budget: Records, scored: Sequence[Mapping[str, Any]], epochs: int) -> str:
    """Why the file's rounds: FedMAP and FedAvg at each budget, with FedMAP's calibration."""
    if len({r["rounds"] for r in budget}) < 2:
        return ""
    lines = [
        "| rounds | method | AUROC | ECE | mean predicted risk |",
        "|---|---|---|---|---|",
    ]
    for r in sorted(budget, key=lambda r: (r["rounds"], r["method"])):
        lines.append(
            f"| {r['rounds']} | {r['method']} | {r['roc_auc']:.4f} | {r['ece']:.4f} | "
            f"{r['mean_predicted']:.3f} |"
        )
    longest, shortest = max(r["rounds"] for r in budget), min(r["rounds"] for r in budget)
    fedavg = {r["rounds"]: r["roc_auc"] for r in budget if r["method"] == "fedavg"}
    gain = fedavg[longest] - fedavg[shortest]
    fedavg_text = (
        f"FedAvg {'gains' if gain > 0 else 'does not gain'} from the longer one ({gain:+.4f} AUROC)"
    )
    return (
        f"""
## The budget: why the file runs {longest} rounds

FedMAP's prior mean moves only as fast as the sites' models, which the prior holds near it: with
a tight prior (small sigma^2) it needs more rounds than FedAvg to reach the data's intercept. At
a short budget its models still predict far more deaths than occur (the validation prevalence
is {_prevalence(scored):.3f}), which costs calibration and AUROC alike. Every method gets the
same budget; {fedavg_text}. Under {BUDGET_STRATEGY}, mean over the
reported seeds, {epochs} local epoch(s) a round:

"""
        + "\n".join(lines)
        + "\n"
    )


def _prevalence(scored: Sequence[Mapping[str, Any]]) -> float:
    deaths = sum(int(r.get("val_deaths", 0)) for r in scored)
    rows = sum(int(r["val_rows"]) for r in scored)
    return deaths / rows if rows else float("nan")


def _cases_text(cases: Mapping[str, Mapping[str, float]]) -> str:
    """What APACHE IVa says of the rows drop keeps against those it leaves out."""
    a, b = cases["complete"], cases["incomplete"]
    if not a["rows"] or not b["rows"]:
        return ""
    easier = "easier" if a["roc_auc"] > b["roc_auc"] else "no easier"
    riskier = "higher" if a["mean_predicted"] > b["mean_predicted"] else "lower"
    return (
        f"A model-free check with APACHE IVa (pooled over sites, val rows with a IVa prediction): "
        f"on the complete cases ({a['rows']} rows, {a['deaths']} deaths) its AUROC is "
        f"{a['roc_auc']:.3f} and its mean predicted mortality {a['mean_predicted']:.1%}; on the "
        f"rows drop leaves out ({b['rows']} rows, {b['deaths']} deaths) {b['roc_auc']:.3f} and "
        f"{b['mean_predicted']:.1%}. By that measure the complete cases are {easier} to rank and "
        f"of {riskier} predicted risk; either way they are a selected group of patients."
    )


def _file_note(file_variance: float, chosen: float) -> str:
    if file_variance == chosen:
        return f"`federations/eicu.yaml` carries the chosen sigma^2 = {chosen:g}."
    return (
        f"**`federations/eicu.yaml` has sigma^2 = {file_variance:g}, not the chosen "
        f"{chosen:g}**: the runs above set it explicitly."
    )


def _share(scored: Sequence[Mapping[str, Any]]) -> str:
    kept = sum(r["drop"]["scored"] for r in scored)
    total = sum(r["val_rows"] for r in scored)
    return f"{kept} of {total} ({kept / total:.0%})" if total else "none"


def _smallest(scored: Sequence[Mapping[str, Any]]) -> str:
    if not scored:
        return "none"
    r = min(scored, key=lambda r: int(r["val_rows"]))
    return f"{r['site']}, {r['val_rows']} val rows"


def _header(spec: Federation) -> list[str]:
    with (spec.tier(1)[0].data / "val.csv").open(newline="") as f:
        return [h.strip() for h in next(csv.reader(f))]


# ---- the command -----------------------------------------------------------------------------


def _pooled(results: Sequence[tuple[ComparisonRun, SimulationResult]]) -> dict[str, Any]:
    """method -> its reliability curve pooled over every site and seed of results."""
    by_method: dict[str, list[Any]] = defaultdict(list)
    for run, result in results:
        by_method[run.variant.name].extend(result.reliability.values())
    return {m: pool_reliability(c) for m, c in by_method.items()}


def _tick(bar: tqdm[Any]) -> None:
    bar.update()


def run_phase(
    specs: Mapping[str, Federation],
    plan: Mapping[str, Sequence[ComparisonRun]],
    cfg: MissingConfig,
    bar: tqdm[Any],
) -> tuple[list[dict[str, Any]], dict[str, list[tuple[ComparisonRun, SimulationResult]]]]:
    """Every strategy's runs: the records, each with its strategy, and the results."""
    rows: list[dict[str, Any]] = []
    results = {}
    for strategy, runs in plan.items():
        done = compare(
            specs[strategy], runs, cfg.jobs, progress=lambda _r: _tick(bar), engine=cfg.engine
        )
        rows += [{**r, "strategy": strategy} for r in records(specs[strategy], done)]
        results[strategy] = done
    return rows, results


def metrics_of(
    rows: Records, apache: Records, cfg: MissingConfig, table: Mapping[float, Any], seconds: float
) -> dict[str, Any]:
    """missing_metrics.json: the headline means, APACHE IVa's, the verdicts and the tuning."""
    means = {m: seed_means(rows, m) for m in METRICS}
    headline: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for strategy, method in means["roc_auc"]:
        headline[strategy][method] = {
            m: statistics.fmean(means[m][(strategy, method)]) for m in METRICS
        }
    return {
        "mean": headline,
        "apache_iva": {m: nanmean(r[m] for r in apache) for m in METRICS},
        "targets": verdicts(rows)[1],
        "variance": cfg.variance,
        "tuning": {f"{v:g}": t["mean"] for v, t in table.items()},
        "seconds": round(seconds, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("params.yaml"), help="its `missing`")
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    parser.add_argument("--federation", type=Path, help="overrides missing.federation")
    parser.add_argument(
        "--apache",
        type=Path,
        default=EICU_DEMO_SOURCE / "apachepatientresult.csv.gz",
        help="apachepatientresult.csv.gz (default: $FEDMAP_EICU_DEMO or ../shared/data/eicu_demo)",
    )
    args = parser.parse_args(argv)
    cfg = from_mapping(MissingConfig, yaml.safe_load(args.config.read_text())["missing"], "missing")
    spec = read_federation(args.federation or Path(cfg.federation))
    specs = {s: strategy_spec(spec, s) for s in STRATEGIES}
    tune = {s: tuning_runs(spec, cfg) for s in IMPUTED}
    report = {s: report_runs(spec, cfg) for s in STRATEGIES}
    budgets = {r: budget_runs(spec, cfg) for r in cfg.budget_check}
    total = sum(len(r) for r in [*tune.values(), *report.values(), *budgets.values()])
    print(f"{spec.name}: {total} runs on {len(spec.tier(1))} sites", file=sys.stderr)
    start = time.perf_counter()
    with tqdm(total=total, unit="run", desc="missing", file=sys.stderr) as bar:
        tuning, _ = run_phase(specs, tune, cfg, bar)
        best, table = choose(tuning, cfg.grid)
        if best != cfg.variance:
            raise ConfigError(
                f"{args.config}: missing.variance is {cfg.variance:g}, but the grid's best on the "
                f"tuning seeds is {best:g}: set missing.variance (and federations/eicu.yaml's "
                "algorithm.variance) to it"
            )
        rows, results = run_phase(specs, report, cfg, bar)
        budget = []
        for rounds, runs in budgets.items():
            short = with_rounds(specs[BUDGET_STRATEGY], rounds)
            done = compare(short, runs, cfg.jobs, progress=lambda _r: _tick(bar), engine=cfg.engine)
            budget += budget_rows(rounds, done)
    main_runs = [
        (r, res) for r, res in results[BUDGET_STRATEGY] if r.variant.name in ("fedmap", "fedavg")
    ]
    budget += budget_rows(spec.algorithm.rounds, main_runs)
    seconds = time.perf_counter() - start
    joined = apache_join(args.apache, {s.name: s.data for s in spec.tier(1)}, spec.task.recipe)
    apache = apache_records(joined)
    curves = _pooled(
        [(r, res) for r, res in results["median+indicators"] if r.variant.name != UNTUNED]
    )
    curves[APACHE] = pool_reliability([reliability(j.y, j.p) for j in joined if len(j.y)])
    scored = rows_scored(spec)
    out = {
        "records": rows,
        "tuning": tuning,
        "apache": apache,
        "rows_scored": scored,
        "budget": budget,
        "apache_complete_cases": complete_cases(joined),
        "reliability": {k: asdict(v) for k, v in curves.items()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(
        args.out / "missing_results.json",
        json.dumps(json_numbers(out), indent=1, allow_nan=False) + "\n",
    )
    metrics = metrics_of(rows, apache, cfg, table, seconds)
    write_atomic(
        args.out / "missing_metrics.json",
        json.dumps(json_numbers(metrics), indent=1, allow_nan=False) + "\n",
    )
    plot(rows, apache, curves, args.out / "missing.png")
    cases = complete_cases(joined)
    text = page(spec, cfg, rows, apache, scored, table, cases, seconds)
    text += budget_section(budget, scored, spec.algorithm.epochs)
    text += federated_section(rows)
    write_atomic(args.out / "missing.md", text)
    print(f"wrote {args.out / 'missing.md'} in {seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
