"""Tier 3: score a site's new rows with the released prior. There is no training.

A tier-3 site holds two features-only files (the contract's columns without the target):
``reference.csv``, rows of its own population that fix the standardisation statistics, and
``score.csv``, the rows to score. The statistics are never fit on ``score.csv``: a prediction must
not depend on which other patients happen to be in the same file.

The predictions stay at the site, in its output folder, in a file named after the model and
version (``predictions_<model>_v<version>.csv``), each row stamped with both. What leaves the site:
the validation summary and a scoring summary, counts only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from fedmap.config import ConfigError
from fedmap.data import Standardiser, feature_names, read_features
from fedmap.models import build_model, predict_proba
from site_tasks.contracts import DataContractError, feature_columns, require_valid
from site_tasks.federation import FederationConfig
from site_tasks.registry import Release, released_prior
from site_tasks.storage import Keys, ObjectStore
from site_tasks.validate import validate

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
    predicted_positive: int
    reference_rows: int
    predictions_file: str
    """The file's name in the site's output folder (the folder itself is not reported)."""


def output_folder(config: FederationConfig, site: str) -> Path:
    """The site's ``output`` folder, else ``<state_dir>/predictions/<federation>/<site>``: never
    inside the data folder, which may be read-only and whose DVC hash is the data version."""
    spec = config.site(site)
    return spec.output or config.state_dir / "predictions" / config.name / site


def write_predictions(
    path: Path, probability: NDArray[np.float64], model: str, version: str
) -> None:
    """row (1-based, as in score.csv), probability, prediction, model, version; atomic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write("row,probability,prediction,model,version\n")
        for i, p in enumerate(probability, start=1):
            f.write(f"{i},{p:.6f},{int(p >= THRESHOLD)},{model},{version}\n")
    os.replace(tmp, path)


def score_site(
    config: FederationConfig, site: str, store: ObjectStore, release: Release | None = None
) -> ScoringSummary:
    """Validate the site's files, load the champion prior, score, write and report counts."""
    spec = config.site(site)
    if spec.tier != 3:
        raise ConfigError(f"{site} is a tier-{spec.tier} site; only tier-3 sites score")
    require_valid(validate(config, site, store))
    n = config.model.n_features
    columns = feature_columns(config.contract) or feature_names(n)
    try:
        reference = read_features(spec.data / "reference.csv", columns)
        rows = read_features(spec.data / "score.csv", columns)
    except ValueError as exc:  # names file, row and column, never a cell
        raise DataContractError(f"{site}: {exc}") from exc
    if len(reference) < MIN_REFERENCE_ROWS:
        raise DataContractError(
            f"{site}: reference.csv: {len(reference)} rows; at least {MIN_REFERENCE_ROWS} are "
            "needed to standardise the features"
        )
    release = release or released_prior(config)
    model = build_model(config.model.name, n)
    model.load_state_dict(release.params, strict=True)
    x = torch.as_tensor(Standardiser.fit(reference)(rows), dtype=torch.float32)
    probability = predict_proba(model, x).numpy().astype(np.float64)
    path = output_folder(config, site) / f"predictions_{release.name}_v{release.version}.csv"
    write_predictions(path, probability, release.name, release.version)
    summary = ScoringSummary(
        site,
        release.name,
        release.version,
        len(rows),
        int((probability >= THRESHOLD).sum()),
        len(reference),
        path.name,
    )
    key = Keys.of(config).inference(site)
    store.put(key, (json.dumps(asdict(summary), indent=1, sort_keys=True) + "\n").encode())
    log.info(
        "%s: scored %d rows with %s version %s (%d predicted positive) -> %s; counts -> %s",
        site,
        summary.rows,
        release.name,
        release.version,
        summary.predicted_positive,
        path.name,  # the site's folders stay out of logs, which edge workers ship to the centre
        key,
    )
    return summary
