"""The MLflow side of a finished run: one parent run per federation run, a nested run per site
with its metrics per round, registered models for every tier-1 site and for the prior, the equity
summary, and the release gate that decides whether the new prior becomes ``champion`` or stays
``challenger``.

Everything registered comes from what already left the sites (updates, summaries, evaluation
metrics in object storage); MLflow never sees a row. Metrics are the task's: the gate compares
the mean of the primary metric (accuracy for a binary task, the C-index for survival).

The registered prior is its mean mu alone, a loadable model; a learned prior's ``prior/...``
state stays in object storage with the run (the version's ``prior_key`` tag points at it), and
the version's ``prior`` tag names the family (gaussian, diagonal or icnn).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedmap.audit import verify
from fedmap.data import feature_names
from fedmap.messages import decode_params, encode_params, sha256_hex
from fedmap.metrics import PRIMARY_METRIC
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.priors import PREFIX, prior_mean
from fedmap.run_plots import RoundSite, SiteGain, plot_rounds_sites, plot_site_gain
from fedmap.signing import CENTRE
from site_tasks import trust
from site_tasks.centre.equity import equity_summary, read_evaluations
from site_tasks.centre.released import log_privacy, read_final_prior, shared_model
from site_tasks.federation import FederationConfig
from site_tasks.site.contracts import feature_columns
from site_tasks.storage import Keys, ObjectStore, first

log = logging.getLogger("site_tasks")
CHAMPION, CHALLENGER = "champion", "challenger"
PIP_REQUIREMENTS = ["torch==2.13.0", "numpy", "safetensors"]
SERVED_MODEL = Path(__file__).with_name("served_model.py")
FEDMAP_PACKAGE = Path(__file__).resolve().parents[2] / "fedmap"
PARAMS_FILE = "params.safetensors"


@dataclass(frozen=True)
class Registration:
    parent_run_id: str
    prior_model: str
    prior_version: str
    alias: str
    reason: str
    site_versions: dict[str, str]
    equity: dict[str, Any] | None = None
    """``EquitySummary.as_dict()`` of the run; None when no site was evaluated."""


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are numbers: a one-class split's NaN ROC-AUC is left out of MLflow."""
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def model_name(config: FederationConfig, who: str) -> str:
    return f"fedmap-{config.name}-{who}"


def model_columns(config: FederationConfig) -> list[str]:
    """The model's input columns, in order: the task recipe applied to the contract's columns
    (dropped columns and the targets left out, each categorical column's indicators appended),
    else ``x00`` ... when the contract names no columns."""
    header = list(feature_columns(config.data_contract))
    columns = config.recipe.feature_columns(header) if header else []
    n_features = int(config.model.n_features)
    return columns if len(columns) == n_features else feature_names(n_features)


def primary_metric(config: FederationConfig) -> str:
    """The metric the gate and the equity summary compare: accuracy or c_index."""
    return PRIMARY_METRIC[config.recipe.type]


def _json(store: ObjectStore, key: str) -> dict[str, Any]:
    raw = store.get(key)
    return dict(json.loads(raw)) if raw else {}


def round_cells(
    summaries: Mapping[int, Mapping[str, Any]],
    members: Sequence[str],
    metric: str,
    withheld: bool = False,
) -> list[RoundSite]:
    """Every tier-1 member in every round with a summary: its weight w_k and the validation
    ``metric`` it reported when its update counted, else why not (rejected with the reason, or
    missing). ``withheld`` (a privacy section): the statuses only, no weights or metrics."""
    cells = []
    for t, summary in sorted(summaries.items()):
        if not summary:
            continue
        contributed, rejected = set(summary.get("contributed", [])), summary.get("rejected", {})
        for site in members:
            if site in contributed and not withheld:
                weight = summary.get("weights", {}).get(site)
                score = summary.get("metrics", {}).get(site, {}).get(f"val_{metric}")
                cells.append(RoundSite(t, site, weight, None if score is None else float(score)))
            elif site in contributed:
                cells.append(RoundSite(t, site))
            elif site in rejected:
                cells.append(RoundSite(t, site, failure=f"rejected: {rejected[site]}"))
            else:
                cells.append(RoundSite(t, site, failure="missing"))
    return cells


def site_gains(
    config: FederationConfig, evaluations: Mapping[str, Mapping[str, Any]], metric: str
) -> list[SiteGain]:
    """Each evaluated site's personalised score against its local-only model's (tiers 1-2)."""
    gains = []
    for site, e in sorted(evaluations.items()):
        own, local = e.get("personalised", {}).get(metric), e.get("local", {}).get(metric)
        if own is not None and local is not None and math.isfinite(own) and math.isfinite(local):
            gains.append(SiteGain(site, config.site(site).tier, float(local), float(own)))
    return gains


def _log_pictures(
    config: FederationConfig,
    summaries: Mapping[int, Mapping[str, Any]],
    evaluations: Mapping[str, Mapping[str, Any]],
    members: Sequence[str],
    metric: str,
) -> None:
    """``rounds_sites.png`` (with its numbers, ``rounds_sites.json``) and ``site_gain.png`` on
    the active (parent) run."""
    import mlflow

    cells = round_cells(summaries, members, metric, config.federation.privacy.active)
    gains = site_gains(config, evaluations, metric)
    label = f"fedmap-{config.name}, run {config.run}"
    with tempfile.TemporaryDirectory() as tmp:
        if cells:
            title = f"{label}: rounds x sites"
            mlflow.log_artifact(
                str(plot_rounds_sites(cells, Path(tmp) / "rounds_sites.png", title, metric))
            )
            mlflow.log_dict({"cells": [asdict(c) for c in cells]}, "rounds_sites.json")
        if gains:
            title = f"{label}: gain of each site's personalised model over local-only ({metric})"
            mlflow.log_artifact(str(plot_site_gain(gains, Path(tmp) / "site_gain.png", title)))


def tracking_uri(config: FederationConfig) -> str | None:
    """The federation's MLflow server: ``mlflow.tracking_uri``, else $MLFLOW_TRACKING_URI."""
    return config.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def _connect(config: FederationConfig) -> None:
    import mlflow

    uri = tracking_uri(config)
    if uri is None:
        raise RuntimeError(
            f"federation {config.name!r}: no MLflow server (set mlflow.tracking_uri, "
            "mlflow.connection or $MLFLOW_TRACKING_URI)"
        )
    mlflow.set_tracking_uri(uri)


def _log_model(config: FederationConfig, params: Params, name: str, tags: dict[str, str]) -> str:
    """Register params as a new version of model ``name``; return the version.

    The version is a pyfunc "model from code" (``served_model.py``) whose only artifact is the
    parameters as safetensors: nothing in the registry is a pickle. Its model config names the
    task, so a survival model serves risk scores and a binary one p(y = 1).
    """
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature

    n_features = int(config.model.n_features)
    model = build_model(config.model.name, n_features)
    model.load_state_dict(params, strict=True)  # names and shapes must match the architecture
    blob = encode_params(params)
    columns = model_columns(config)
    example = pd.DataFrame(np.zeros((1, n_features)), columns=columns)
    signature = infer_signature(example, np.zeros(1, dtype=np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / PARAMS_FILE
        path.write_bytes(blob)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVED_MODEL),
            artifacts={"params": str(path)},
            model_config={
                "model": config.model.name,
                "n_features": n_features,
                "task": config.recipe.type,
            },
            signature=signature,
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
            code_paths=[str(FEDMAP_PACKAGE)],  # the model loads without installing this repo
        )
    # One call creates the version with every tag, so no version ever exists without them.
    all_tags = {**tags, "params_sha256": hashlib.sha256(blob).hexdigest()}
    return str(mlflow.register_model(info.model_uri, name, tags=all_tags).version)


def register(
    config: FederationConfig,
    store: ObjectStore,
    dag_run_id: str,
    code_version: str,
    tolerance: float = 0.0,
) -> Registration:
    """Log the run and register its models; gate the prior on the sites' validation scores.

    The new prior becomes ``champion`` unless its mean validation score (the task's primary
    metric: accuracy, or the C-index for survival) over the evaluated sites is more than
    ``tolerance`` below the current champion's, in which case it becomes ``challenger`` and the
    reason is logged. The equity summary goes to the log, to the parent run (``equity.md`` and
    ``equity_*`` metrics) and into the returned Registration. The parent run also gets two
    pictures: ``rounds_sites.png`` (each tier-1 site's w_k and validation score per round, its
    rejected and missing rounds marked; the numbers in ``rounds_sites.json``) and
    ``site_gain.png`` (each evaluated site's gain over its local-only model).
    """
    import mlflow

    _connect(config)
    keys = Keys.of(config)
    members = sorted(name for name, s in config.sites.items() if s.tier == 1)
    rounds = config.rounds
    metric = primary_metric(config)
    evaluations = read_evaluations(config, store)
    prior_scores = [
        float(e["prior"][metric])
        for e in evaluations.values()
        if not math.isnan(float(e["prior"].get(metric, math.nan)))
    ]
    prior_score = statistics.fmean(prior_scores) if prior_scores else float("nan")
    fairness = equity_summary(config, evaluations)
    if fairness is not None:
        log.info("equity of the run (%s):\n%s", metric, fairness.markdown)
    equity_numbers = fairness.as_dict() if fairness is not None else None
    base_tags = {"dag_run_id": dag_run_id, "code_version": code_version, "storage_run": config.run}

    final_prior, prior_keys = read_final_prior(config, store, rounds)  # before anything is logged
    section = config.federation.privacy
    missing = sorted(set(members) - set(evaluations))
    if missing:
        log.warning("no final evaluation from %s: registered without them", ", ".join(missing))
    experiment = mlflow.set_experiment(f"fedmap-{config.name}")
    done = mlflow.MlflowClient().search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.dag_run_id = '{dag_run_id}' and tags.registered = 'true'",
    )
    if done:  # a rerun of the same DAG run's task: report what it registered, add nothing
        tags = done[0].data.tags
        log.info("%s was registered by MLflow run %s already", dag_run_id, done[0].info.run_id)
        return Registration(
            done[0].info.run_id,
            model_name(config, "prior"),
            tags["prior_version"],
            tags["prior_alias"],
            tags["gate_reason"],
            dict(json.loads(tags["site_versions"])),
            equity_numbers,
        )
    with mlflow.start_run(run_name=config.run) as parent:
        mlflow.set_tags({**base_tags, "evaluated_sites": ",".join(sorted(evaluations))})
        mlflow.log_params(
            {
                "method": "fedmap",
                "variance": config.method.variance,
                "input_variance": config.method.input_variance,
                "weighting": config.method.weighting,
                "rounds": rounds,
                "min_sites": config.min_sites,
                "local_epochs": config.training.epochs,
                "lr": config.training.lr,
                "lr_final": config.training.lr_final,  # None: the same lr in every round
                "batch_size": config.training.batch_size,
                "model": config.model.name,
                "contract": config.contract,
                "task": config.recipe.type,
                "prior": config.method.prior,
            }
        )
        mlflow.log_metric(f"prior_mean_val_{metric}", prior_score)
        if fairness is not None:
            mlflow.log_metrics(fairness.metrics())
            mlflow.log_text(fairness.markdown, "equity.md")
            mlflow.log_dict(fairness.as_dict(), "equity.json")
        summaries = {t: _json(store, keys.summary(t)) for t in range(1, rounds + 1)}
        _log_pictures(config, summaries, evaluations, members, metric)
        site_versions: dict[str, str] = {}
        accepted_sha256 = summaries[rounds].get("sha256", {})
        for site in members:
            validation = _json(store, keys.validation(site))
            with mlflow.start_run(run_name=site, nested=True):
                mlflow.set_tags(
                    {
                        **base_tags,
                        "site": site,
                        "tier": "1",
                        "data_version": str(validation.get("data_version", "")),
                    }
                )
                for t in range(1, rounds + 1):
                    manifest = _json(store, keys.update(t, site)[1])
                    summary = summaries[t]
                    if manifest and not section.active:  # under privacy: withheld
                        metrics = {k: float(v) for k, v in manifest.get("metrics", {}).items()}
                        metrics["log_omega"] = float(manifest.get("log_omega", 0.0))
                        metrics["weight"] = float(summary.get("weights", {}).get(site, 0.0))
                        mlflow.log_metrics(metrics, step=t)
                final = evaluations.get(site)
                if final:
                    personal, local = final["personalised"], final.get("local", {})
                    mlflow.log_metrics(_finite({f"final_{k}": v for k, v in personal.items()}))
                    mlflow.log_metrics(_finite({f"local_{k}": v for k, v in local.items()}))
                    counts = ("n_scored", "n_dropped", "n_imputed")  # validation rows, counts only
                    mlflow.log_metrics({f"val_{k}": float(final[k]) for k in counts if k in final})
                    if metric in final.get("local", {}):
                        gain = final["personalised"][metric] - final["local"][metric]
                        mlflow.log_metric(f"gain_over_local_{metric}", gain)
                if section.active:  # its update is a release, not a model: its own, if sent
                    blob = shared_model(config, store, site, rounds)
                else:
                    blob = first(store, keys.update(rounds, site)[0])  # the committed version
                    accepted = accepted_sha256.get(site)
                    if blob is not None and (not accepted or sha256_hex(blob) != accepted):
                        log.warning("%s: last update not accepted: no model registered", site)
                        blob = None
                if blob is not None and final:
                    tags = {
                        **base_tags,
                        "site": site,
                        "data_version": str(validation.get("data_version", "")),
                        "data_files_sha256": json.dumps(
                            validation.get("sha256", {}), sort_keys=True
                        ),
                        "validation": json.dumps(
                            {"success": validation.get("success"), "rows": validation.get("rows")}
                        ),
                    }
                    site_versions[site] = _log_model(
                        config, decode_params(blob), model_name(config, site), tags
                    )
        mlflow.log_dict({"prior": prior_keys[0]}, "prior_location.json")
        if section.active:
            log_privacy(config, store, rounds)
        audit = trust.audit_log(config, CENTRE)
        if audit.path.exists():  # the centre's hash-chained log of the run, checked first
            entries = verify(audit.path)
            mlflow.log_artifact(str(audit.path), "audit")
            mlflow.set_tags({"audit_head": audit.head(), "audit_entries": str(entries)})
        name = model_name(config, "prior")
        # The prior's data is every member's data: the tag maps each site to its DVC hash; the
        # per-file SHA-256s go to the parent run as an artifact (tags are length-limited).
        validations = {site: _json(store, keys.validation(site)) for site in members}
        mlflow.log_dict(
            {site: v.get("sha256", {}) for site, v in validations.items()}, "data_files.json"
        )
        data_versions = {site: str(v.get("data_version", "")) for site, v in validations.items()}
        version = _log_model(
            config,
            final_prior,  # mu: the prior as a model
            name,
            {
                **base_tags,
                "data_version": json.dumps(data_versions, sort_keys=True),
                "validation": json.dumps(
                    {
                        s: {"success": v.get("success"), "rows": v.get("rows")}
                        for s, v in validations.items()
                    },
                    sort_keys=True,
                ),
                f"prior_mean_val_{metric}": f"{prior_score:.6f}",
                "primary_metric": metric,
                "task": config.recipe.type,
                "prior": config.method.prior,
                "prior_key": prior_keys[0],
                "prior_manifest_key": prior_keys[1],
                "prior_round": str(rounds + 1),
            },
        )
        alias, reason = gate(name, version, prior_score, tolerance, metric)
        mlflow.set_tags(  # last: marks the registration complete (see the rerun check above)
            {
                "prior_alias": alias,
                "prior_version": version,
                "gate_reason": reason[:5000],
                "site_versions": json.dumps(site_versions, sort_keys=True),
                "registered": "true",
            }
        )
        return Registration(
            parent.info.run_id, name, version, alias, reason, site_versions, equity_numbers
        )


def gate(
    name: str, version: str, score: float, tolerance: float, metric: str = "accuracy"
) -> tuple[str, str]:
    """Give version the champion alias unless its mean validation ``metric`` is worse than the
    champion's by more than tolerance. The champion's score is its ``prior_mean_val_<metric>``
    tag; a champion without one (another task, or none recorded) yields."""
    import mlflow

    client = mlflow.MlflowClient()
    if math.isnan(score):  # no site sent an evaluation: nothing to judge the prior by
        client.set_registered_model_alias(name, CHALLENGER, version)
        return CHALLENGER, "no site evaluated the new prior; kept as challenger"
    aliases = client.get_registered_model(name).aliases
    current = aliases.get(CHAMPION)
    if current is None or current == version:
        client.set_registered_model_alias(name, CHAMPION, version)
        return CHAMPION, "no champion yet"
    tags = client.get_model_version(name, current).tags
    best = float(tags.get(f"prior_mean_val_{metric}", "nan"))
    if math.isnan(best) or score >= best - tolerance:  # a champion without a score yields
        client.set_registered_model_alias(name, CHAMPION, version)
        return CHAMPION, f"mean validation {metric} {score:.4f} vs champion {best:.4f}"
    client.set_registered_model_alias(name, CHALLENGER, version)
    reason = (
        f"mean validation {metric} {score:.4f} is more than {tolerance} below the champion's "
        f"{best:.4f} (version {current}); kept as challenger"
    )
    log.warning("%s: %s", name, reason)
    return CHALLENGER, reason


def champion_prior(config: FederationConfig, store: ObjectStore) -> tuple[Params, str] | None:
    """The current champion prior's mean mu and a label for it, or None when there is none.

    The registry points at the prior's safetensors in object storage; it is re-checked (checksum,
    finite values, names and shapes of this federation's model; a learned prior's ``prior/``
    state may come with it) before anyone starts from it. Only mu is returned: a warm-started run
    begins from the champion's mean, with every tensor under N(mu, sigma^2) until its first fit.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from fedmap.messages import Manifest, MessageError, open_message, specs_of

    _connect(config)
    name = model_name(config, "prior")
    client = mlflow.MlflowClient()
    try:
        version = client.get_registered_model(name).aliases.get(CHAMPION)
    except MlflowException:
        return None
    if version is None:
        return None
    tags = client.get_model_version(name, version).tags
    raw_manifest = store.get(tags.get("prior_manifest_key", ""))
    blob = store.get(tags.get("prior_key", ""))
    if raw_manifest is None or blob is None:
        log.warning(
            "%s@champion (version %s): its prior is gone from storage; starting afresh",
            name,
            version,
        )
        return None
    expected = specs_of(build_model(config.model.name, config.model.n_features).state_dict())
    try:
        manifest = Manifest.from_json(raw_manifest)
        state = {k: v for k, v in manifest.tensors.items() if k.startswith(PREFIX)}
        params = open_message(manifest, blob, "prior", manifest.round, {**expected, **state})
    except MessageError as exc:
        log.warning(
            "%s@champion (version %s) cannot be used: %s; starting afresh", name, version, exc
        )
        return None
    return prior_mean(params), f"{name}@{CHAMPION} (version {version})"


@dataclass(frozen=True)
class Release:
    """The prior a tier-3 site scores with: the registry's champion, checked after download."""

    name: str
    version: str
    params: Params


class NoRelease(RuntimeError):
    """The registry has no champion prior for this federation, or it fails its checks."""


def released_prior(config: FederationConfig) -> Release:
    """Download ``models:/fedmap-<federation>-prior@champion`` and check it before use.

    Only the safetensors artifact is read (no code from the registry runs at the site): its
    SHA-256 must match the version's ``params_sha256`` tag, and its tensors must fit this
    federation's model by name and shape and be finite.
    """
    import mlflow
    import torch
    from mlflow.exceptions import MlflowException

    _connect(config)
    name = model_name(config, "prior")
    client = mlflow.MlflowClient()
    try:
        version = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:
        raise NoRelease(
            f"{name} has no {CHAMPION!r} version yet: run the federation first"
        ) from exc
    expected = client.get_model_version(name, version).tags.get("params_sha256")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp
            )
        )
        found = sorted(root.rglob(PARAMS_FILE))
        if not found:
            raise NoRelease(f"{name} version {version} has no {PARAMS_FILE} artifact")
        blob = found[0].read_bytes()
    if hashlib.sha256(blob).hexdigest() != expected:
        raise NoRelease(f"{name} version {version}: {PARAMS_FILE} does not match its checksum tag")
    params = decode_params(blob)
    try:
        build_model(config.model.name, config.model.n_features).load_state_dict(params, strict=True)
    except RuntimeError as exc:
        raise NoRelease(f"{name} version {version} does not fit model {config.model.name}") from exc
    if not all(bool(torch.isfinite(t).all()) for t in params.values()):
        raise NoRelease(f"{name} version {version} holds non-finite parameters")
    return Release(name, version, params)
