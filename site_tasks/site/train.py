"""``site-task train``: one round of local MAP optimisation at one site.

The site reads its ``train.csv`` and ``val.csv`` with the federation's task recipe
(``fedmap.tabular``: the target or the survival time and event, dropped and one-hot columns,
missing-value tokens, standardisation with its own training statistics).

What leaves the site: theta_k as safetensors and a manifest with log omega_k, the number of
training rows and aggregate metrics (``val_<metric>`` for each metric of the task). The site's
rows, its standardisation statistics and its validation summary details stay where they are.

The prior of a round is the mean mu under the model's own keys, plus ``prior/...`` entries for a
learned prior's state (``fedmap.priors``): the whole of it shapes the local objective, and only mu
is ever loaded into a model.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from fedmap.algorithms import SiteContext, SiteUpdate
from fedmap.algorithms.private import widened
from fedmap.config import ConfigError
from fedmap.messages import (
    Manifest,
    MessageError,
    TensorSpec,
    decode_params,
    encode_params,
    make_manifest,
    open_message,
    sha256_hex,
    specs_of,
)
from fedmap.metrics import PRIMARY_METRIC, TaskScores, predict_output, score_task
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.priors import PREFIX, prior_mean
from fedmap.private_round import form
from fedmap.signing import SignatureError
from fedmap.simulator import resolve_device
from fedmap.tabular import TabularError, load_tabular_site
from site_tasks import trust
from site_tasks.federation import FederationConfig
from site_tasks.site.contracts import DataContractError
from site_tasks.site.digests import require_validated
from site_tasks.site.release import privatise, read_prior
from site_tasks.storage import Keys, ObjectStore

log = logging.getLogger("site_tasks")


class PriorUnavailable(RuntimeError):
    """The prior of the requested round is not committed, or fails its checks."""


@dataclass(frozen=True)
class TrainResult:
    manifest: Manifest
    device: str


def worker_name(site: str) -> str:
    """Who runs this site's tasks: $FEDMAP_WORKER (an edge worker's name), else the site itself.
    It goes into the update's manifest so the round summary shows which worker ran each site;
    the machine's host name is never sent."""
    return os.environ.get("FEDMAP_WORKER") or site


def seed_of(key: str) -> int:
    """A torch seed fixed by key: the first 8 bytes of SHA-256(key), as a non-negative int64."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def round_seed(config: FederationConfig, site: str, round_: int) -> int:
    """A shuffling seed fixed by (federation, run, site, round), so a re-run repeats exactly."""
    return seed_of(f"{config.name}/{config.run}/{site}/{round_}/{config.seed}")


def fetch_prior(
    config: FederationConfig, store: ObjectStore, round_: int
) -> tuple[Manifest, Params]:
    """Download and check the prior of round_; its manifest is the commit marker. A prior whose
    signature does not verify under the centre's enrolled key (or that is signed for another
    federation or run) is refused before any of its tensors is used."""
    tensors_key, manifest_key = Keys.of(config).prior(round_)
    raw_manifest = store.get(manifest_key)
    if raw_manifest is None:
        raise PriorUnavailable(
            f"the prior of round {round_} is not committed yet ({manifest_key} is missing)"
        )
    blob = store.get(tensors_key)
    if blob is None:
        raise PriorUnavailable(f"{manifest_key} exists but {tensors_key} does not")
    try:
        manifest = Manifest.from_json(raw_manifest)
        trust.verify_prior(config, manifest)
        params = open_message(manifest, blob, "prior", round_, manifest.tensors)
    except (MessageError, SignatureError) as exc:
        raise PriorUnavailable(f"the prior of round {round_} fails its checks: {exc}") from exc
    return manifest, params


class TrainingDiverged(RuntimeError):
    """Local training produced non-finite parameters; nothing is uploaded or kept."""


def device_for(name: str) -> torch.device:
    """cpu, cuda[:N] or auto; asking for CUDA on a machine without it is an error, not a crash."""
    if name != "auto" and name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device must be cpu, cuda or auto, got {name!r}")
    target = resolve_device(name)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but this machine has no CUDA device")
    return target


def latest_state(config: FederationConfig, site: str, round_: int) -> Params | None:
    """The site's own theta_k from the latest round before round_ it trained in, if any."""
    for earlier in range(round_ - 1, 0, -1):
        path = state_path(config, site, earlier)
        if path.is_file():
            return decode_params(path.read_bytes())
    return None


def state_path(config: FederationConfig, site: str, round_: int) -> Path:
    """Where the site keeps theta_k after round_ (local disk, never uploaded)."""
    return config.state_dir / config.name / config.run / site / f"theta-round-{round_}.safetensors"


def _write_local(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Fitted:
    """A site's local MAP step, before anything is uploaded or kept."""

    update: SiteUpdate
    personal: Params
    metrics: dict[str, float]
    device: str


def model_specs(tensors: Mapping[str, TensorSpec]) -> dict[str, TensorSpec]:
    """The specs of a prior's model entries (mu), without a learned prior's ``prior/`` state."""
    return {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}


def score_params(context: SiteContext, params: Params) -> TaskScores:
    """The task's validation scores of params (a model's own keys) on the site's validation split:
    accuracy, balanced accuracy and ROC-AUC of p(y = 1), or the C-index of the risk scores."""
    task = context.data.task
    output = predict_output(context.model_from(params), context.data.x_val, task)
    return score_task(task, context.data.y_val.cpu().numpy(), output.cpu().numpy())


def val_metrics(scores: TaskScores) -> dict[str, float]:
    """``val_<metric>`` for each of the task's metrics that is a number: a manifest holds finite
    values only, and e.g. the C-index of a split without a comparable pair is NaN."""
    return {f"val_{k}": v for k, v in scores.as_dict().items() if math.isfinite(v)}


@dataclass(frozen=True)
class Prepared:
    """A site ready to train or score under the prior of a round."""

    context: SiteContext
    prior: Params
    """The whole prior of the round: mu and, for a learned prior, its ``prior/`` state."""
    personal: Params
    device: torch.device
    tau2: float = 0.0
    """Under DP: the variance the sites' noise has added to mu, by which the prior is widened."""

    @property
    def mean(self) -> Params:
        """mu alone: the prior as a model (what is scored, and where a site without state starts)."""
        return prior_mean(self.prior)


def prepare(
    config: FederationConfig, site: str, round_: int, store: ObjectStore, device: str | None = None
) -> Prepared:
    """Check the site's files are those it validated in this run (their digests against its own
    record: no Great Expectations), fetch and check the prior of round_ against the site's model,
    and load the site's latest own state (the prior when it has none)."""
    folder = config.site(site).data
    target = device_for(device or config.device)
    require_validated(config, site)
    seen = read_prior(config, site, round_, functools.partial(fetch_prior, config, store))
    prior_manifest, prior = seen.manifest, seen.params
    model_name = str(prior_manifest.extra.get("model", config.model.name))
    try:
        data = load_tabular_site(folder, config.recipe, target, site)
    except TabularError as exc:  # the message names file, row, column and rule, never a cell
        text = str(exc)
        raise DataContractError(
            text if text.startswith(f"{site}: ") else f"{site}: {text}"
        ) from exc
    specs = specs_of(build_model(model_name, data.num_features).state_dict())
    if model_specs(specs_of(prior)) != specs:
        raise PriorUnavailable(
            f"the prior of round {round_} does not fit this site's {model_name} model on "
            f"{data.num_features} features"
        )
    on_device = {k: v.to(target) for k, v in prior.items()}
    personal = latest_state(config, site, round_) or prior_mean(on_device)
    context = SiteContext(
        data,
        lambda: build_model(model_name, data.num_features),
        config.training,
        torch.Generator().manual_seed(round_seed(config, site, round_)),
    )
    personal = {k: v.to(target) for k, v in personal.items()}
    return Prepared(context, on_device, personal, target, seen.tau2)


def fit_site(config: FederationConfig, site: str, round_: int, ready: Prepared) -> Fitted:
    """The local MAP step of round_ at a prepared site, checked for divergence, with its metrics."""
    target = ready.device
    detail = f" ({torch.cuda.get_device_name(target)})" if target.type == "cuda" else ""
    data = ready.context.data
    # under a privacy section a site's row counts stay out of the INFO lines edge workers ship
    level = logging.DEBUG if config.federation.privacy.active else logging.INFO
    log.info("%s: round %d: training on %s%s", site, round_, target.type, detail)
    log.log(
        level,
        "%s: round %d: %d rows (%d dropped for a missing value, %d imputed)",
        site,
        round_,
        data.num_train,
        data.dropped[0],
        data.imputed[0],
    )
    method = widened(config.method, ready.tau2)
    here = ready.context.at_round(round_, config.rounds)  # the round's learning rate
    result = method.local_update(here, ready.prior, ready.personal, round_)
    theta = result.update.params
    if not all(bool(torch.isfinite(v).all()) for v in theta.values()) or not math.isfinite(
        result.update.log_omega
    ):
        raise TrainingDiverged(
            f"{site}: round {round_}: training produced NaN or inf parameters; nothing was "
            "uploaded (lower the learning rate)"
        )
    metrics = {**result.update.metrics, **val_metrics(score_params(ready.context, theta))}
    return Fitted(result.update, result.personal, metrics, target.type)


def keep_state(config: FederationConfig, site: str, round_: int, personal: Params) -> None:
    """Save the site's own theta_k after round_ on its own disk."""
    _write_local(state_path(config, site, round_), encode_params(personal))


def train(
    config: FederationConfig, site: str, round_: int, store: ObjectStore, device: str | None = None
) -> TrainResult:
    """Check the site's data is as validated, train theta_k under the round's prior, upload the
    update.

    The manifest is signed with the site's own key (``site_tasks.trust.signed``) and every object
    sent is logged in the site's audit log. Idempotent: theta_k starts from the site's own state
    after round_ - 1 (or the prior in round 1) and shuffles with ``round_seed``, so a re-run
    trains the same tensors; when the site's update of round_ is already committed (a retry
    after the upload) it is left as it is, since storage is write-once.
    """
    ready = prepare(config, site, round_, store, device)
    fitted = fit_site(config, site, round_, ready)
    private = config.federation.privacy.active
    theta = fitted.update.params
    blob = encode_params(theta)
    tensors_key, manifest_key = Keys.of(config).update(round_, site)
    sent = store.get(manifest_key)
    if sent is not None:  # a retry after the commit: the committed update stands
        committed = Manifest.from_json(sent)
        if not private and committed.sha256 != sha256_hex(blob):
            log.warning(
                "%s: round %d: the retrained tensors differ from the committed update (e.g. "
                "non-deterministic CUDA kernels); the committed one stands",
                site,
                round_,
            )
        keep_state(config, site, round_, fitted.personal)
        log.info("%s: round %d: update already committed -> %s", site, round_, manifest_key)
        return TrainResult(committed, fitted.device)
    written = store.get(tensors_key)
    extra: dict[str, object] = {"worker": worker_name(site)}
    num_examples, log_omega, metrics = (
        fitted.update.num_examples,
        fitted.update.log_omega,
        fitted.metrics,
    )
    if private:  # N_k, log omega and metrics are withheld: the release alone leaves
        num_examples, log_omega, metrics = 1, 0.0, {}
        extra["privacy"] = form(config.federation.privacy)
        if written is None:
            out = privatise(config, site, round_, theta, ready.mean, fitted.update.log_omega)
            blob, theta = out.blob, out.tensors
    if written is not None and written != blob:
        # a retry after the tensor file went up but before its manifest: commit what was sent
        blob, theta = written, decode_params(written)
    manifest = make_manifest(
        "update",
        round_,
        theta,
        blob,
        site=site,
        num_examples=num_examples,
        log_omega=log_omega,
        metrics=metrics,
        extra=extra,
    )
    manifest = trust.signed(config, site, manifest)
    audited = trust.audited(config, site, store)
    audited.put(tensors_key, blob)
    audited.put(manifest_key, manifest.to_json().encode())  # last: the commit marker
    keep_state(config, site, round_, fitted.personal)
    metric = PRIMARY_METRIC[config.recipe.type]
    # under a privacy section these numbers are data: DEBUG only, since a worker's task log may
    # be pushed to the centre (edge3's PUSH_LOGS)
    log.log(
        logging.DEBUG if private else logging.INFO,
        "%s: round %d: log omega %.4f, train NLL %.4f, val %s %.4f -> %s",
        site,
        round_,
        fitted.update.log_omega,
        fitted.metrics["train_nll"],
        metric,
        fitted.metrics.get(f"val_{metric}", math.nan),
        manifest_key,
    )
    return TrainResult(manifest, fitted.device)
