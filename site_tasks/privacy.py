"""The ``privacy`` section as a deployment runs it, on either side: the plan's noise multiplier,
the two privacy ledgers, and the CKKS key files of secure aggregation.

- **The centre's ledger** (``<state_dir>/<fed>/privacy/centre.json``) holds the rounds every run
  of the federation was granted and how many it aggregated (a run that stopped early counts
  what its sites may have released, ``used_rounds``). ``start`` refuses a run whose plan alone exceeds the budget,
  and grants a run that would cross it only the rounds that fit (``plan_run``); the grant goes
  into the round-1 prior's signed manifest, which every step reads (``granted_rounds``).
- **A site's ledger** (``<state_dir>/<fed>/privacy/<site>.json``, at the site) holds every round
  it released. Before it releases another, the site checks the budget itself: it does not take
  the centre's word for it (``spend``).
- **CKKS keys** (``<state_dir>/<fed>/trust/ckks.secret``, mode 600, at every tier-1 and tier-2 site and
  never at the centre; ``ckks.public``, the centre's): ``site-task keygen`` at one site makes
  both; the consortium copies the secret context to the other sites over its own channel.

Stateful and file-bound, so it lives here rather than in :mod:`fedmap.privacy`, which holds the
maths; nothing here imports Airflow.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

from fedmap import secure
from fedmap.privacy import BudgetExceeded, Privacy, Spent, affordable_rounds, epsilon
from fedmap.privacy import noise_multiplier as plan_noise
from site_tasks.federation import FederationConfig

log = logging.getLogger("site_tasks")

KEYGEN_ON_FIRST_USE = "FEDMAP_ENROL_ON_FIRST_USE"
"""The test suite's switch (``site_tasks.trust``): a site that finds no CKKS key makes one."""


def section(config: FederationConfig) -> Privacy:
    return config.federation.privacy


def noise_multiplier(config: FederationConfig) -> float:
    """z of every release of the federation: the file's, or the one that spends the budget over
    the file's planned rounds (0 without DP). The same number at the centre and at each site."""
    privacy = section(config)
    if not privacy.dp:
        return 0.0
    return _noise(privacy, config.federation.rounds)


@functools.lru_cache(maxsize=16)
def _noise(privacy: Privacy, rounds: int) -> float:
    return plan_noise(privacy, rounds)


def _folder(config: FederationConfig) -> Path:
    return config.state_dir / config.name / "privacy"


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    body = json.loads(path.read_text())
    return list(body.get("entries", []))


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"entries": entries}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def used_rounds(entry: dict[str, Any]) -> int:
    """The rounds a run may have released: all it was granted once it aggregated them all;
    before that (a run that stopped early, or is still going), the rounds it aggregated plus the
    one its sites may have released since, never more than the grant."""
    granted = int(entry["rounds"])
    aggregated = int(entry.get("aggregated", granted))
    return granted if aggregated >= granted else min(granted, aggregated + 1)


def _history(entries: list[dict[str, Any]], skip_run: str = "") -> list[Spent]:
    return [
        Spent(used_rounds(e), float(e["noise_multiplier"]), int(e["mechanisms"]))
        for e in entries
        if e["run"] != skip_run
    ]


def centre_ledger(config: FederationConfig) -> Path:
    return _folder(config) / "centre.json"  # "centre" is no site's name (RESERVED_SITES)


def plan_run(config: FederationConfig) -> dict[str, Any]:
    """The centre's grant for this run: rounds, z and the epsilon before and after, recorded in
    its ledger. BudgetExceeded when the plan alone is over the budget, or nothing is left."""
    privacy = section(config)
    z = noise_multiplier(config)
    path = centre_ledger(config)
    entries = _read(path)
    spent = _history(entries, skip_run=config.run)
    granted = affordable_rounds(privacy, spent, config.rounds, z)
    before = epsilon(spent, privacy.delta, privacy.accountant)
    if granted == 0:
        raise BudgetExceeded(
            f"the privacy budget is spent: earlier runs used epsilon = {before:.4g} of "
            f"privacy.epsilon = {privacy.epsilon:g} (delta = {privacy.delta:g}); one more round "
            f"at noise multiplier {z:.4g} would exceed it, so run {config.run} is refused"
        )
    after = epsilon(
        [*spent, Spent(granted, z, privacy.mechanisms)], privacy.delta, privacy.accountant
    )
    grant = {
        "run": config.run,
        "rounds": granted,
        "planned_rounds": config.rounds,
        "noise_multiplier": z,
        "mechanisms": privacy.mechanisms,
        "epsilon_before": before,
        "epsilon_after": after,
        "budget": privacy.epsilon,
        "delta": privacy.delta,
        "accountant": privacy.accountant,
        "aggregated": 0,
    }
    if granted < config.rounds:
        log.warning(
            "privacy: run %s is granted %d of its %d rounds: epsilon %.4g before it, %.4g after "
            "(budget %g); it stops there and registers what it has",
            config.run,
            granted,
            config.rounds,
            before,
            after,
            privacy.epsilon,
        )
    _write(path, [*(e for e in entries if e["run"] != config.run), grant])
    return grant


def settle(config: FederationConfig, round_: int) -> None:
    """Record in the centre's ledger that this run has aggregated round_ (``used_rounds``)."""
    path = centre_ledger(config)
    entries = _read(path)
    for entry in entries:
        if entry["run"] == config.run:
            entry["aggregated"] = max(int(entry.get("aggregated", 0)), round_)
    _write(path, entries)


def epsilon_after(config: FederationConfig, round_: int) -> float:
    """epsilon of the federation once this run's ``round_`` rounds are released (the centre's
    ledger for the earlier runs)."""
    privacy = section(config)
    spent = _history(_read(centre_ledger(config)), skip_run=config.run)
    now = Spent(round_, noise_multiplier(config), privacy.mechanisms)
    return epsilon([*spent, now], privacy.delta, privacy.accountant)


def site_ledger(config: FederationConfig, site: str) -> Path:
    return _folder(config) / f"{site}.json"


def spend(config: FederationConfig, site: str, round_: int) -> float:
    """Record that the site releases round_ of this run, and return its epsilon after it; a
    round already recorded (a retry) costs nothing again. BudgetExceeded, before anything is
    released, when the round would take the site over the budget."""
    privacy = section(config)
    path = site_ledger(config, site)
    entries = _read(path)
    z = noise_multiplier(config)
    released = [e for e in entries if (e["run"], e["round"]) != (config.run, round_)]
    counts: dict[tuple[float, int], int] = {}
    for e in [*released, {"noise_multiplier": z, "mechanisms": privacy.mechanisms}]:
        group = (float(e["noise_multiplier"]), int(e["mechanisms"]))
        counts[group] = counts.get(group, 0) + 1
    history = [Spent(n, group[0], group[1]) for group, n in counts.items()]
    after = epsilon(history, privacy.delta, privacy.accountant)
    if len(released) == len(entries) and after > privacy.epsilon * (1 + 1e-9):
        raise BudgetExceeded(
            f"{site}: releasing round {round_} of run {config.run} would take this site to "
            f"epsilon = {after:.4g} (delta = {privacy.delta:g}), above privacy.epsilon = "
            f"{privacy.epsilon:g}: the site refuses to train (its ledger: {path})"
        )
    entry = {"run": config.run, "round": round_, "noise_multiplier": z}
    entry["mechanisms"] = privacy.mechanisms
    if len(released) == len(entries):
        _write(path, [*entries, entry])
    return after


def budget_report(config: FederationConfig, owner: str) -> str:
    """What a ledger says, in words: the releases (or grants), epsilon spent, the budget."""
    section = config.federation.privacy
    if not section.dp:
        return f"{config.name}: no differential privacy (privacy.epsilon is inf)"
    if owner == "centre":
        entries = _read(centre_ledger(config))
        spent = _history(entries)
        lines = [
            f"- run {e['run']}: {e['rounds']} round(s) granted at z {e['noise_multiplier']:.4g}, "
            f"{e.get('aggregated', e['rounds'])} aggregated, {used_rounds(e)} counted"
            for e in entries
        ]
    else:
        entries = _read(site_ledger(config, owner))
        spent = [Spent(1, float(e["noise_multiplier"]), int(e["mechanisms"])) for e in entries]
        lines = [f"- {len(entries)} round(s) released"]
    used = epsilon(spent, section.delta, section.accountant)
    return "\n".join(
        [
            f"{config.name} ({owner}): epsilon {used:.4f} of {section.epsilon:g} spent at delta "
            f"{section.delta:g} ({section.accountant}); {max(0.0, section.epsilon - used):.4f} left",
            *lines,
        ]
    )


def secret_path(config: FederationConfig) -> Path:
    return config.state_dir / config.name / "trust" / "ckks.secret"


def public_path(config: FederationConfig) -> Path:
    return config.state_dir / config.name / "trust" / "ckks.public"


def keygen(config: FederationConfig) -> secure.Keys:
    """Make the federation's CKKS key pair at a site (once; an existing pair is kept): the
    secret context mode 600, the public one beside it for the centre."""
    secret, public = secret_path(config), public_path(config)
    if secret.exists():  # a copied secret is never replaced: its public half is derived from it
        keys = secure.Keys(secret.read_bytes(), secure.public_of(secret.read_bytes()))
        if not public.exists():
            public.write_bytes(keys.public)
        return keys
    keys = secure.generate()
    secret.parent.mkdir(parents=True, exist_ok=True)
    tmp = secret.with_name(secret.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(keys.secret)
    os.replace(tmp, secret)
    public.write_bytes(keys.public)
    return keys


def _missing(what: str, path: Path) -> secure.SecureError:
    return secure.SecureError(
        f"no CKKS {what} context at {path}: run `site-task keygen` at one site and copy "
        "ckks.secret to every tier-1 and tier-2 site and ckks.public to the centre (docs/privacy.md)"
    )


def site_context(config: FederationConfig) -> Any:
    """A site's CKKS context, with the secret key."""
    path = secret_path(config)
    if not path.exists() and os.environ.get(KEYGEN_ON_FIRST_USE) == "1":
        keygen(config)
    if not path.exists():
        raise _missing("secret", path)
    return _cached(path, os.stat(path).st_mtime_ns, secret=True)


def centre_context(config: FederationConfig) -> Any:
    """The centre's CKKS context: public only (refused if it holds a secret key)."""
    path = public_path(config)
    if not path.exists() and os.environ.get(KEYGEN_ON_FIRST_USE) == "1":
        keygen(config)  # one machine, the test suite: a site's keygen
    if not path.exists():
        raise _missing("public", path)
    return _cached(path, os.stat(path).st_mtime_ns, secret=False)


@functools.lru_cache(maxsize=8)
def _cached(path: Path, mtime: int, secret: bool) -> Any:
    blob = path.read_bytes()
    return secure.secret_context(blob) if secret else secure.public_context(blob)
