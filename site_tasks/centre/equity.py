"""The centre's side of the run's end: read every site's evaluation and sum up who gained.

Each site's ``finalise`` (``site_tasks.site.finalise``) publishes only aggregate metrics,
``<federation>/<run>/evaluation/<site>.json``; the centre reads them back here and turns them into
the equity summary (``fedmap.equity``): each site's gain over its local model, the gain of the
worst-served site and the spread of the primary metric across sites. The registry logs it, and
the run's note quotes it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedmap.equity import Equity, equity, equity_markdown
from fedmap.metrics import PRIMARY_METRIC
from site_tasks.federation import FederationConfig
from site_tasks.storage import Keys, ObjectStore


def _with_nan(evaluation: dict[str, Any]) -> dict[str, Any]:
    """An evaluation as read back: each model's null metric (written for NaN) is NaN again."""
    for model in ("personalised", "prior", "local"):
        scores = evaluation.get(model)
        if isinstance(scores, dict):
            evaluation[model] = {k: math.nan if v is None else v for k, v in scores.items()}
    return evaluation


def read_evaluations(config: FederationConfig, store: ObjectStore) -> dict[str, dict[str, Any]]:
    """Every site's evaluation object that exists, by site name."""
    found = {}
    for site in sorted(config.sites):
        raw = store.get(Keys.of(config).evaluation(site))
        if raw:
            found[site] = _with_nan(dict(json.loads(raw)))
    return found


@dataclass(frozen=True)
class EquitySummary:
    """Who gained from the run: FedMAP's personalised models against each site's local model,
    on the task's primary metric (``fedmap.equity``)."""

    metric: str
    fedmap: Equity
    local: Equity
    markdown: str

    def as_dict(self) -> dict[str, Any]:
        """Plain numbers for XCom and JSON (NaN becomes None)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "metric": self.metric,
            "gains": {s: number(g) for s, g in self.fedmap.gains.items()},
            "fedmap": {s: number(v) for s, v in self.fedmap.scores.items()},
            "local": {s: number(v) for s, v in self.local.scores.items()},
            "worst_served": self.fedmap.worst_served,
            "worst_served_gain": number(self.fedmap.worst_served_gain),
            "min_gain": number(self.fedmap.min_gain),
            "spread_std": number(self.fedmap.spread_std),
            "spread_range": number(self.fedmap.spread_range),
            "local_spread_std": number(self.local.spread_std),
            "local_spread_range": number(self.local.spread_range),
        }

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics of the parent run."""
        return {
            "equity_worst_served_gain": self.fedmap.worst_served_gain,
            "equity_min_gain": self.fedmap.min_gain,
            "equity_spread_std": self.fedmap.spread_std,
            "equity_spread_range": self.fedmap.spread_range,
            "equity_local_spread_std": self.local.spread_std,
            "equity_local_spread_range": self.local.spread_range,
        }


def equity_summary(
    config: FederationConfig, evaluations: Mapping[str, Mapping[str, Any]]
) -> EquitySummary | None:
    """The equity of the run over every evaluated site (tiers 1 and 2), or None when none was.

    gain_k = s_k(personalised) - s_k(local); the worst-served site is the one whose local model
    scores lowest; the spread is the standard deviation and max - min of s_k across sites.
    """
    metric = PRIMARY_METRIC[config.recipe.type]
    rows = {
        site: (float(e["personalised"][metric]), float(e["local"][metric]))
        for site, e in sorted(evaluations.items())
        if metric in e.get("personalised", {}) and metric in e.get("local", {})
    }
    if not rows:
        return None
    scores = {
        "local": {s: local for s, (_, local) in rows.items()},
        "fedmap": {s: own for s, (own, _) in rows.items()},
    }
    by_method = {r.method: r for r in equity(scores, "local")}
    label = metric.replace("_", "-")
    markdown = equity_markdown(
        [by_method["local"], by_method["fedmap"]], label, 100.0 if metric == "accuracy" else 1.0
    )
    return EquitySummary(metric, by_method["fedmap"], by_method["local"], markdown)
