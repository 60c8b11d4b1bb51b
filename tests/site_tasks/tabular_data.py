"""Site folders for tests of the real tabular tasks, built in a test's own tmp_path.

- Heart disease: FLamby's four centres from the vendored ``datasets/fed_heart_disease``.
- Survival: a synthetic stand-in for Fed-TCGA-BRCA (whose rows are not redistributed): rows with
  the ``fed_tcga_brca`` contract's columns, drawn from a Cox model, so a model can learn the risk.

The task sections come from the federation files themselves, so the tests run the same recipes
the DAGs do.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
HEART_SOURCE = REPO / "datasets" / "fed_heart_disease"


def federation_task(name: str) -> dict[str, Any]:
    """The ``task`` section of ``federations/<name>.yaml``."""
    body = yaml.safe_load((REPO / "federations" / f"{name}.yaml").read_text())
    return dict(body["task"])


def tcga_columns() -> list[str]:
    """The ``fed_tcga_brca`` contract's ordered columns: pid, 39 features, E, T."""
    suite = json.loads((REPO / "expectations" / "fed_tcga_brca.json").read_text())
    return list(suite["expectations"][0]["kwargs"]["column_list"])


def cox_rows(
    n: int, rng: np.random.Generator, beta: np.ndarray, prefix: str, start: int
) -> list[list[str]]:
    """n rows: age in [30, 89] and 38 indicators; time T ~ Exp(rate exp(r) / 1000) with the log
    relative risk r = 0.04 (age - 60) + beta . indicators, censored at C ~ U(0, 4000) days."""
    age = rng.integers(30, 90, n)
    onehot = rng.integers(0, 2, (n, beta.size))
    risk = 0.04 * (age - 60) + onehot @ beta
    event_time = rng.exponential(1000.0 * np.exp(-risk))
    censor = rng.uniform(0.0, 4000.0, n)
    days = np.clip(np.minimum(event_time, censor), 1.0, 36000.0).round()
    event = (event_time <= censor).astype(int)
    return [
        [
            f"TCGA-{prefix}-{start + i:04d}",
            str(age[i]),
            *map(str, onehot[i]),
            str(event[i]),
            str(int(days[i])),
        ]
        for i in range(n)
    ]


def write_cox_site(folder: Path, n_train: int, n_val: int, seed: int) -> Path:
    """``train.csv`` and ``val.csv`` of one survival site; every site shares the true beta."""
    header = tcga_columns()
    beta = np.zeros(len(header) - 4)
    beta[:6] = np.random.default_rng(1234).normal(0.0, 1.5, 6)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = f"S{seed % 10}"
    for name, n, start in (("train.csv", n_train, 0), ("val.csv", n_val, n_train)):
        with (folder / name).open("w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(
                [header, *cox_rows(n, rng, beta, prefix, start)]
            )
    return folder
