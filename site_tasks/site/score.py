"""Tier 3: score a site's new rows with the released prior. There is no training.

A tier-3 site holds two features-only files (the contract's columns without the target):
``reference.csv``, rows of its own population that fix the standardisation statistics, and
``score.csv``, the rows to score. Both are read with the federation's task recipe, as the
training sites read theirs: dropped columns and any target column are ignored, categorical
columns become their indicators. When the recipe standardises, the statistics come from
``reference.csv`` and are never fit on ``score.csv``: a prediction must not depend on which other
patients happen to be in the same file.

The predictions stay at the site, in its output folder, in a file named after the model and
version (``predictions_<model>_v<version>.csv``), each row stamped with both: p(y = 1) and the
0/1 prediction for a binary task, the risk score (log relative risk) for a survival task. What
leaves the site: the validation summary and a scoring summary, counts only. The site's validate
task of the run checks both files against the contract first; scoring checks their digests.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from fedmap.config import ConfigError
from fedmap.data import Standardiser
from fedmap.metrics import predict_output
from fedmap.models import build_model
from fedmap.priors import prior_mean
from fedmap.tabular import scoring_features
from site_tasks import trust
from site_tasks.centre.registry import Release, model_columns, released_prior
from site_tasks.federation import FederationConfig
from site_tasks.site.contracts import DataContractError
from site_tasks.site.digests import require_validated
from site_tasks.storage import Keys, ObjectStore

log = logging.getLogger("site_tasks")
MIN_REFERENCE_ROWS = 20
THRESHOLD = 0.5


@dataclass(frozen=True)
class ScoringSummary:
    """What a tier-3 site reports after scoring: counts, and which model it used."""

    site: str
    model: str
    version: str
    rows: int
    predicted_positive: int | None
    """Binary: rows with p(y = 1) >= 0.5; survival: None (a risk score has no threshold)."""
    reference_rows: int
    predictions_file: str
    """The file's name in the site's output folder (the folder itself is not reported)."""
    imputed: int = 0
    """Rows of score.csv scored with at least one input imputed (reference.csv's values)."""

    @property
    def n_scored(self) -> int:
        """Rows given a prediction: every row of score.csv (a row that cannot be is an error)."""
        return self.rows


def output_folder(config: FederationConfig, site: str) -> Path:
    """The site's ``output`` folder, else ``<state_dir>/predictions/<federation>/<site>``: never
    inside the data folder, which may be read-only and whose DVC hash is the data version."""
    spec = config.site(site)
    return spec.output or config.state_dir / "predictions" / config.name / site


def _write_rows(path: Path, header: str, lines: Iterable[str]) -> None:
    """header, then one line per row, through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(header + "\n")
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def write_predictions(
    path: Path, probability: NDArray[np.float64], model: str, version: str
) -> None:
    """row (1-based, as in score.csv), probability, prediction, model, version; atomic."""
    _write_rows(
        path,
        "row,probability,prediction,model,version",
        (
            f"{i},{p:.6f},{int(p >= THRESHOLD)},{model},{version}"
            for i, p in enumerate(probability, start=1)
        ),
    )


def write_risks(path: Path, risk: NDArray[np.float64], model: str, version: str) -> None:
    """row (1-based, as in score.csv), risk (the log relative risk), model, version; atomic."""
    _write_rows(
        path,
        "row,risk,model,version",
        (f"{i},{r:.6f},{model},{version}" for i, r in enumerate(risk, start=1)),
    )


def score_site(
    config: FederationConfig, site: str, store: ObjectStore, release: Release | None = None
) -> ScoringSummary:
    """Check the site's files are those it validated in this run (digests, no Great
    Expectations), load the champion prior, score, write and report counts."""
    spec = config.site(site)
    if spec.tier != 3:
        raise ConfigError(f"{site} is a tier-{spec.tier} site; only tier-3 sites score")
    require_validated(config, site)
    recipe, n = config.recipe, config.model.n_features
    columns = model_columns(config)
    try:
        read = scoring_features(
            spec.data / "reference.csv", spec.data / "score.csv", recipe, columns
        )
    except ValueError as exc:  # names file, row and column, never a cell
        raise DataContractError(f"{site}: {exc}") from exc
    reference, rows = read.reference, read.rows
    if recipe.standardise and len(reference) < MIN_REFERENCE_ROWS:
        raise DataContractError(
            f"{site}: reference.csv: {len(reference)} rows; at least {MIN_REFERENCE_ROWS} are "
            "needed to standardise the features"
        )
    release = release or released_prior(config)
    log.info("%s: scoring with %s version %s", site, release.name, release.version)
    model = build_model(config.model.name, n)
    model.load_state_dict(prior_mean(release.params), strict=True)
    z = Standardiser.fit(reference)(rows) if recipe.standardise else rows
    output = predict_output(model, torch.as_tensor(z, dtype=torch.float32), recipe.type)
    values = output.numpy().astype(np.float64)
    path = output_folder(config, site) / f"predictions_{release.name}_v{release.version}.csv"
    positive: int | None = None
    if recipe.type == "survival":
        write_risks(path, values, release.name, release.version)
    else:
        write_predictions(path, values, release.name, release.version)
        positive = int((values >= THRESHOLD).sum())
    summary = ScoringSummary(
        site,
        release.name,
        release.version,
        len(rows),
        positive,
        len(reference),
        path.name,
        read.imputed,
    )
    key = Keys.of(config).inference(site)
    report = {**asdict(summary), "n_scored": summary.n_scored}
    body = (json.dumps(report, indent=1, sort_keys=True) + "\n").encode()
    trust.audited(config, site, store).put(key, body, once=False)  # its own report, re-scorable
    log.info(
        "%s: scored %d rows, every row of score.csv (%d imputed) with %s version %s (%s) -> %s; "
        "counts -> %s",
        site,
        summary.n_scored,
        summary.imputed,
        release.name,
        release.version,
        "risk scores" if positive is None else f"{positive} predicted positive",
        path.name,  # the site's folders stay out of logs, which edge workers ship to the centre
        key,
    )
    return summary
