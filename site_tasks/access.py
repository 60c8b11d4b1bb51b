"""Who may do what in the federation bucket: the one source of every party's object-store rights.

Each party is an :class:`Identity` holding :class:`Rule` s, key patterns inside one bucket where
``*`` stands for any characters, ``/`` included (that is how SeaweedFS and IAM both match). The
rules follow ``site_tasks.storage.Keys`` (docs/storage.md). A site ``S`` of federation ``F``:

- writes ``F/*/round-*/updates/S.safetensors``, ``F/*/round-*/updates/S.json``,
  ``F/*/{validation,evaluation,inference}/S.json`` and, under a privacy section,
  ``F/*/{released,models}/S.{safetensors,json}`` (the final prior it decrypted, its own model
  when it opted in), each spelt out, so that neither ``site-1``
  nor ``site-1.b`` can write ``site-10.json``'s key or the reverse;
- reads the priors ``F/*/round-*/prior.{safetensors,json}`` and its own keys above (a retried
  task checks what it already committed); never another site's update, never a summary;
- lists nothing (only the centre lists).

The centre administers, reads, writes and lists the whole bucket. Two renderers turn the same
rules into what a server enforces: :func:`seaweed_config` (``weed server -s3.config``, the local
``make federation-up``) and :func:`minio_policy` (``infra/site/policy.py``, a deployment).

Standard library only, so ``infra/site/policy.py`` runs from a checkout without installing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""fedmap.schema.NAME (federation, site names): never a wildcard (* ?), '/' or '$'."""
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
"""S3 bucket names: 3-63 lower-case letters, digits, '.' and '-'."""
RESERVED_SITES = frozenset({"prior", "centre"})
"""A site named ``prior`` would write ``round-<t>/updates/prior.json``, which every site's prior
pattern ``round-*/prior.json`` matches (``*`` spans ``/``): the others could read its update."""

Action = Literal["read", "write", "list", "admin"]


class AccessError(ValueError):
    """A bucket, federation or site name that cannot go into a rule safely."""


@dataclass(frozen=True)
class Rule:
    """One right: ``action`` on every key of the bucket that ``pattern`` matches (``*``: any
    characters, ``/`` included). ``list`` patterns match the listed prefix; ``admin`` is
    bucket-wide (create it, configure it) and its pattern is ``*``."""

    action: Action
    pattern: str = "*"


@dataclass(frozen=True)
class Identity:
    """A party of the object store: its name (the SeaweedFS identity, the MinIO user) and
    rules."""

    name: str
    rules: tuple[Rule, ...]


def check(value: str, rule: re.Pattern[str], what: str) -> str:
    """``value`` itself, or AccessError when it does not match ``rule``."""
    if not rule.match(value):
        raise AccessError(f"{what} {value!r} is not a valid name ({rule.pattern})")
    return value


def site_rules(federation: str, site: str) -> tuple[Rule, ...]:
    """A site's rules in one federation (the module docstring gives them in words)."""
    f, s = check(federation, NAME, "federation"), check(site, NAME, "site")
    if s in RESERVED_SITES:
        raise AccessError(f"site {s!r} is not a valid name: reserved ({RESERVED_SITES})")
    own = (
        f"{f}/*/round-*/updates/{s}.safetensors",
        f"{f}/*/round-*/updates/{s}.json",
        f"{f}/*/validation/{s}.json",
        f"{f}/*/evaluation/{s}.json",
        f"{f}/*/inference/{s}.json",
        f"{f}/*/released/{s}.safetensors",
        f"{f}/*/released/{s}.json",
        f"{f}/*/models/{s}.safetensors",
        f"{f}/*/models/{s}.json",
    )
    priors = (f"{f}/*/round-*/prior.safetensors", f"{f}/*/round-*/prior.json")
    return (
        *(Rule("write", key) for key in own),
        *(Rule("read", key) for key in (*priors, *own)),
    )


def site_identity(
    name: str, memberships: Iterable[tuple[str, str]], *, union: bool = False
) -> Identity:
    """One identity with the rules of every (federation, site) pair: a site in several
    federations has one key for all of them. With ``union=True`` the pairs may name several
    sites: one key shared by sites (an edge worker serving many sites on one machine, a load
    test), which then may do whatever any of them may do."""
    pairs = list(dict.fromkeys(memberships))
    if not pairs:
        raise AccessError(f"identity {name!r} needs at least one federation")
    if not union and len({site for _, site in pairs}) > 1:
        raise AccessError(
            f"identity {name!r} would hold several sites' rights; pass union=True if meant"
        )
    rules = dict.fromkeys(
        rule for federation, site in pairs for rule in site_rules(federation, site)
    )
    return Identity(name, tuple(rules))


def centre_identity(name: str = "centre") -> Identity:
    """The coordinating centre: administer, read, write and list the whole bucket."""
    return Identity(name, (Rule("admin"), Rule("read"), Rule("write"), Rule("list")))


# --- SeaweedFS ---------------------------------------------------------------------------------

_SEAWEED_ACTIONS = {"read": "Read", "write": "Write", "list": "List", "admin": "Admin"}


def seaweed_actions(identity: Identity, bucket: str) -> list[str]:
    """The identity's ``actions`` in a SeaweedFS ``-s3.config``: ``Write:<bucket>/<pattern>``,
    or ``Write:<bucket>`` for the whole bucket. SeaweedFS's ``Write`` also allows DELETE of the
    keys it matches (checked on 4.48); it has no separate delete right."""
    check(bucket, BUCKET, "bucket")
    return [
        f"{_SEAWEED_ACTIONS[rule.action]}:{bucket}"
        + ("" if rule.pattern == "*" else f"/{rule.pattern}")
        for rule in identity.rules
    ]


def seaweed_config(bucket: str, keys: Sequence[tuple[Identity, str, str]]) -> dict[str, Any]:
    """The ``weed server -s3.config`` document for (identity, access key, secret key) triples."""
    return {
        "identities": [
            {
                "name": identity.name,
                "credentials": [{"accessKey": access, "secretKey": secret}],
                "actions": seaweed_actions(identity, bucket),
            }
            for identity, access, secret in keys
        ]
    }


# --- MinIO (IAM policy documents) --------------------------------------------------------------

_MINIO = {
    "write": ("WriteOwnMessages", "s3:PutObject"),
    "read": ("ReadPriorsAndOwnMessages", "s3:GetObject"),
}


def minio_policy(identity: Identity, bucket: str) -> dict[str, Any]:
    """The identity's MinIO (IAM) policy: one Allow statement per action, naming every key
    pattern as ``arn:aws:s3:::<bucket>/<pattern>``. Only key rights render (read, write): the
    centre's bucket-wide policy is its own file (``infra/centre/minio/centre-policy.json``)."""
    check(bucket, BUCKET, "bucket")
    statements: dict[str, dict[str, Any]] = {}
    for rule in identity.rules:
        if rule.action not in _MINIO:
            raise AccessError(
                f"{identity.name}: a {rule.action!r} rule has no MinIO rendering here"
            )
        sid, action = _MINIO[rule.action]
        statement = statements.setdefault(
            sid, {"Sid": sid, "Effect": "Allow", "Action": [action], "Resource": []}
        )
        statement["Resource"].append(f"arn:aws:s3:::{bucket}/{rule.pattern}")
    return {"Version": "2012-10-17", "Statement": list(statements.values())}
