"""After the last round, at each site: score every model where its data lives, and fine-tune
tier-2 sites.

Only aggregate metrics leave a site: ``<federation>/<run>/evaluation/<site>.json`` holds the
task's validation metrics (accuracy, balanced accuracy and ROC-AUC for a binary task; the C-index
for survival) of the site's own model, of the prior mean, and of a local model trained on the
site's data alone (the "Individual" baseline each site's gain is measured against), and names the
task's primary metric. Tier-2 sites fine-tune the final prior with the same local MAP objective
and keep the result. The centre reads the evaluations back and sums up who gained
(``site_tasks.centre.equity``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace

import torch

from fedmap.algorithms import local_only
from fedmap.initialisation import initialise
from fedmap.messages import encode_params, make_manifest
from fedmap.metrics import PRIMARY_METRIC
from fedmap.models import build_model
from fedmap.params import Params
from fedmap.report import json_numbers
from site_tasks import trust
from site_tasks.federation import FederationConfig
from site_tasks.site.train import (
    Fitted,
    Prepared,
    fit_site,
    keep_state,
    prepare,
    score_params,
    seed_of,
)
from site_tasks.storage import Keys, ObjectStore

log = logging.getLogger("site_tasks")


@dataclass(frozen=True)
class SiteEvaluation:
    site: str
    tier: int
    personalised: dict[str, float]
    """The site's own model: theta_k (tier 1) or its fine-tuned model (tier 2)."""
    prior: dict[str, float]
    """The final prior mean mu on the same validation split."""
    local: dict[str, float]
    """A model trained on this site's data alone with the same budget (rounds x epochs)."""
    primary_metric: str
    """The task's primary metric: accuracy (binary) or c_index (survival)."""
    n_scored: int = 0
    """Validation rows scored; every row of val.csv when the recipe imputes."""
    n_dropped: int = 0
    """Validation rows left out for a missing value (none with imputation but a missing target)."""
    n_imputed: int = 0
    """Validation rows scored with at least one input imputed."""

    @property
    def primary(self) -> float:
        """The site's own model's primary metric."""
        return self.personalised[self.primary_metric]


def _publish(
    config: FederationConfig, store: ObjectStore, result: SiteEvaluation
) -> SiteEvaluation:
    key = Keys.of(config).evaluation(result.site)
    # a one-class validation split has no ROC-AUC or AUPRC: null in the JSON, NaN when read back
    text = json.dumps(json_numbers(asdict(result)), indent=1, sort_keys=True, allow_nan=False)
    body = (text + "\n").encode()
    trust.audited(config, result.site, store).put(key, body, once=False)  # its own report
    metric = result.primary_metric
    log.info(
        "%s: personalised %s %.4f, prior %.4f, local only %.4f on %d validation rows "
        "(%d dropped for a missing value, %d imputed) -> %s",
        result.site,
        metric,
        result.personalised[metric],
        result.prior[metric],
        result.local[metric],
        result.n_scored,
        result.n_dropped,
        result.n_imputed,
        key,
    )
    return result


def baseline_seed(config: FederationConfig, site: str) -> int:
    """The local baseline's shuffling seed, fixed by (federation, site, algorithm.seed) and not by
    the run, so every run of a federation measures its gains against the same local model."""
    return seed_of(f"{config.name}/local-only/{site}/{config.seed}")


def local_baseline(config: FederationConfig, ready: Prepared, rounds: int) -> dict[str, float]:
    """What the site gets alone: its own model, trained on its data only, scored on its
    validation split (``fedmap.algorithms.local_only``). It starts from the federation's seeded
    initialisation (Algorithm 1's fresh model under ``algorithm.seed``: the same in every run,
    never the champion) and has the budget of a tier-1 site, ``rounds`` rounds of ``epochs``
    local epochs, with early stopping: the round kept is the best on a held-out fifth of its
    training rows, then it is refit on all of them for that many rounds. It never sees the
    validation rows it is scored on. The model is discarded."""
    model, data = config.model, ready.context.data
    start = initialise(lambda: build_model(model.name, model.n_features), [data.name], config.seed)
    params = {k: v.to(ready.device) for k, v in start.prior.items()}
    metric = PRIMARY_METRIC[data.task]
    alone = replace(
        ready.context, generator=torch.Generator().manual_seed(baseline_seed(config, data.name))
    )
    chosen = local_only(
        alone, params, rounds, lambda site, p: score_params(site, p).as_dict()[metric]
    )
    scores = score_params(ready.context, chosen.params).as_dict()
    log.info(
        "%s: local-only baseline: %s %.4f, early-stopped at round %d of %d (held-out %s %.4f)",
        data.name,
        metric,
        scores[metric],
        chosen.round,
        rounds,
        metric,
        chosen.score,
    )
    return scores


def _evaluation(
    config: FederationConfig,
    store: ObjectStore,
    ready: Prepared,
    rounds: int,
    site: str,
    tier: int,
    own: dict[str, float],
) -> SiteEvaluation:
    """Score the final prior's mean and the local baseline beside own; publish the three."""
    mean = score_params(ready.context, ready.mean).as_dict()
    local = local_baseline(config, ready, rounds)
    data = ready.context.data
    metric = PRIMARY_METRIC[data.task]
    evaluation = SiteEvaluation(
        site, tier, own, mean, local, metric, data.num_scored, data.dropped[1], data.imputed[1]
    )
    return _publish(config, store, evaluation)


def evaluate(
    config: FederationConfig, store: ObjectStore, site: str, rounds: int
) -> SiteEvaluation:
    """Score a tier-1 site's theta_k after the last round, and the final prior, on its data."""
    ready = prepare(config, site, rounds + 1, store)
    own = score_params(ready.context, ready.personal).as_dict()
    if config.federation.privacy.active:
        share(config, store, site, rounds, ready)
    return _evaluation(config, store, ready, rounds, site, 1, own)


def share(
    config: FederationConfig, store: ObjectStore, site: str, rounds: int, ready: Prepared
) -> None:
    """Under a privacy section, what the registry cannot take from the updates: the final prior
    as this site decrypted it (secure aggregation: only the sites hold the key) and, when the
    site opted in (``privacy.register_personal``), its own theta_k. Each is signed by the site;
    nothing else of the site's is sent."""
    section = config.federation.privacy
    keys = Keys.of(config)
    audited = trust.audited(config, site, store)
    sending: list[tuple[tuple[str, str], Params, str]] = []
    if section.secure:
        sending.append((keys.released(site), ready.mean, "final prior, decrypted"))
    if site in section.register_personal:
        sending.append((keys.model(site), ready.personal, "personalised model (opted in)"))
    for (tensors_key, manifest_key), params, what in sending:
        params = {k: v.detach().cpu() for k, v in params.items()}
        blob = encode_params(params)
        manifest = make_manifest("prior", rounds + 1, params, blob, site=site)
        manifest = trust.signed(config, site, manifest)
        audited.put(tensors_key, blob, once=False)
        audited.put(manifest_key, manifest.to_json().encode(), once=False)
        log.info("%s: sent its %s -> %s", site, what, tensors_key)


def fine_tuned(config: FederationConfig, site: str, rounds: int, ready: Prepared) -> Fitted:
    """Tier 2's model: the local MAP objective under the final prior, from ready's start, for
    rounds steps of the federation's local epochs (a tier-1 site's budget), step t at round t's
    learning rate. ``bench/demo_runs.py`` replays it."""
    tuned = ready
    for t in range(1, rounds + 1):
        # step t at round t's rate; fit_site's own at_round is then a no-op, since a round's
        # settings (LocalTraining.at) hold a constant rate
        step = replace(tuned, context=ready.context.at_round(t, rounds))
        fitted = fit_site(config, site, rounds + 1, step)
        tuned = replace(tuned, personal=fitted.personal)
    return fitted


def finetune(
    config: FederationConfig, store: ObjectStore, site: str, rounds: int
) -> SiteEvaluation:
    """Tier 2: run the local MAP objective under the final prior for as many local epochs as a
    tier-1 site ran in the whole federation (rounds x epochs, at the learning rate of each of
    those rounds), keep the model, report scores.

    The site never contributes: its parameters and omega stay on its own disk.
    """
    ready = prepare(config, site, rounds + 1, store)
    fitted = fine_tuned(config, site, rounds, ready)
    keep_state(config, site, rounds + 1, fitted.personal)
    own = score_params(ready.context, fitted.personal).as_dict()
    return _evaluation(config, store, ready, rounds, site, 2, own)
