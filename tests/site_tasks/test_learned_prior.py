"""A learned prior in the deployed rounds, against the real local S3 and MLflow servers: its state
(``prior/...`` entries) travels with the prior from round to round, the sites train under it,
only the mean is ever loaded into a model, and the registry holds the mean alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedmap.messages import Manifest, decode_params
from fedmap.priors import PREFIX, prior_mean
from site_tasks.centre import server
from site_tasks.centre.registry import champion_prior, register, released_prior
from site_tasks.federation import load_federation
from site_tasks.site.finalise import evaluate
from site_tasks.site.train import prepare, train
from site_tasks.site.validate import validate
from site_tasks.storage import Keys, S3Store

MODEL_KEYS = {
    "body.0.weight",
    "body.0.bias",
    "body.2.weight",
    "body.2.bias",
    "head.weight",
    "head.bias",
}


def test_a_diagonal_prior_travels_between_rounds_and_registers_as_its_mean(
    make_federation: Callable[..., Path], mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    path = make_federation(
        n_sites=2,
        n_train=120,
        n_val=40,
        rounds=2,
        name="learned-prior",  # its own registered models on the session's MLflow server
        algorithm={
            "prior": "diagonal",
            "variance": 15.0,
            "min_variance": 0.5,
            "rounds": 2,
            "batch_size": 32,
        },
    )
    config = load_federation(path)
    assert config.method.prior == "diagonal" and config.method.min_variance == 0.5
    store = S3Store(config.storage)
    store.ensure_bucket()
    keys = Keys.of(config)
    server.init(config, store)
    for site in config.sites:
        assert validate(config, site, store).success
    for t in (1, 2):
        for site in config.sites:
            metrics = train(config, site, t, store).manifest.metrics
            assert "prior_log_normaliser" in metrics  # omega_k under the normalised density
        server.aggregate(config, store, t)
        stored = decode_params(store.get(keys.prior(t + 1)[0]) or b"")
        state = {k for k in stored if k.startswith(PREFIX)}
        # sigma_j^2 learnt for every tensor but the input layer's (input_variance: inf)
        assert state == {f"prior/{k}/log_var" for k in MODEL_KEYS if not k.startswith("body.0")}
        assert set(prior_mean(stored)) == MODEL_KEYS
        manifest = Manifest.from_json(store.get(keys.prior(t + 1)[1]) or b"")
        assert set(manifest.tensors) == MODEL_KEYS | state

    # round 3's sites would train under the whole learned prior, and score only its mean
    ready = prepare(config, "site-01", 3, store)
    assert set(ready.prior) == set(stored) and set(ready.mean) == MODEL_KEYS
    family = config.method.family(config.method.variances(ready.context.build_model().state_dict()))
    shifted = {k: v + 0.1 for k, v in ready.mean.items()}
    by_hand = sum(  # sum_j (theta_j - mu_j)^2 / (2 sigma_j^2) with the learnt sigma_j^2
        float(torch.sum(0.01 * torch.exp(-stored[f"prior/{k}/log_var"])) / 2.0)
        for k in MODEL_KEYS
        if not k.startswith("body.0")
    )
    assert float(family.penalty(shifted, ready.prior)) == pytest.approx(by_hand, rel=1e-4)
    fallback = float(family.penalty(shifted, ready.mean))  # N(mu, 15) without the state
    assert fallback == pytest.approx(0.01 * (16 * 32 + 16 + 16 + 1) / 30.0, rel=1e-4)
    assert by_hand > 2 * fallback  # the learnt variances (>= 0.5) are far below the prior's 15

    for site in config.sites:
        assert 0.0 <= evaluate(config, store, site, 2).prior["accuracy"] <= 1.0

    result = register(config, store, "dag-run-prior", "abc123")
    client = mlflow.MlflowClient()
    tags = client.get_model_version(result.prior_model, result.prior_version).tags
    assert tags["prior"] == "diagonal" and tags["primary_metric"] == "accuracy"
    assert tags["prior_key"] == keys.prior(3)[0]  # the whole prior stays in storage
    release = released_prior(config)
    assert set(release.params) == MODEL_KEYS
    for k in MODEL_KEYS:
        assert torch.equal(release.params[k], stored[k])
    warm = champion_prior(config, store)
    assert warm is not None and set(warm[0]) == MODEL_KEYS
    assert result.equity is not None and set(result.equity["gains"]) == set(config.sites)

    # the next run starts from the champion's mean: its round-1 prior holds no state
    from dataclasses import replace

    second = replace(config, run="second-run")
    server.init(second, store, warm)
    first_prior = decode_params(store.get(Keys.of(second).prior(1)[0]) or b"")
    assert set(first_prior) == MODEL_KEYS
    evaluation = json.loads(store.get(keys.evaluation("site-01")) or b"{}")
    assert evaluation["primary_metric"] == "accuracy"


def test_an_icnn_prior_is_refitted_each_round_and_its_updates_are_accepted(
    make_federation: Callable[..., Path],
) -> None:
    path = make_federation(
        n_sites=2,
        n_train=100,
        n_val=40,
        algorithm={"prior": "icnn", "variance": 15.0, "rounds": 2, "batch_size": 32},
    )
    config = load_federation(path)
    store = S3Store(config.storage)
    store.ensure_bucket()
    keys = Keys.of(config)
    server.init(config, store)
    for site in config.sites:
        assert validate(config, site, store).success
    for t in (1, 2):
        for site in config.sites:
            train(config, site, t, store)
        summary = server.aggregate(config, store, t)
        assert summary.contributed == ("site-01", "site-02") and summary.rejected == {}
    stored = decode_params(store.get(keys.prior(3)[0]) or b"")
    assert set(prior_mean(stored)) == MODEL_KEYS
    assert "prior/head.weight/scale" in stored
    assert any(k.startswith("prior/head.weight/icnn.") for k in stored)
    assert not any(k.startswith("prior/body.0.") for k in stored)  # input layer: not fitted
    # an aggregate re-run writes the same bytes (the fit is deterministic), so it is allowed
    assert server.aggregate(config, store, 2).contributed == ("site-01", "site-02")
