"""The local-only baseline every site's gain is measured against."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fedmap.algorithms import SiteContext
from fedmap.models import build_model
from fedmap.tabular import load_tabular_site
from site_tasks.federation import load_federation
from site_tasks.local.demo import write_federation
from site_tasks.local.demo_data import write_data
from site_tasks.local.stack import Stack
from site_tasks.site.finalise import baseline_seed, local_baseline
from site_tasks.site.train import Prepared


def _prepared(config_path: Path, site: str, generator_seed: int) -> Prepared:
    config = load_federation(config_path)
    data = load_tabular_site(config.site(site).data, config.recipe, torch.device("cpu"), site)
    model = config.model

    def build() -> torch.nn.Module:
        return build_model(model.name, data.num_features)

    context = SiteContext(
        data, build, config.training, torch.Generator().manual_seed(generator_seed)
    )
    # a warm-started run: the prior and the site's start are some other model
    warm = {k: v + 0.5 for k, v in build().state_dict().items()}
    return Prepared(context, warm, warm, torch.device("cpu"))


def test_the_local_baseline_is_the_same_in_every_run_and_ignores_the_champion(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    write_data(data, seed=0)
    path = write_federation(Stack(tmp_path), rounds=3, seed=0, data=data)
    config = load_federation(path)
    first = dataclasses.replace(config, run="manual__2026-12-01")
    second = dataclasses.replace(config, run="scheduled__2026-12-08")
    # each run's round shuffles differ (the run is in their seed); the baseline's do not
    a = local_baseline(first, _prepared(path, "site-12", 1), 3)
    b = local_baseline(second, _prepared(path, "site-12", 2), 3)
    assert a == b and 0.5 < a["accuracy"] <= 1.0
    assert baseline_seed(first, "site-12") == baseline_seed(second, "site-12")
    assert baseline_seed(first, "site-12") != baseline_seed(first, "site-11")
