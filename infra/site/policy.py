"""A site's MinIO policy, rendered from ``minio-site-policy.json``: the site may write only its own
messages and read only the priors, in the federations it belongs to.

    python infra/site/policy.py --bucket fedmap --federation heart --site cleveland \\
        > infra/centre/minio/sites/cleveland.json

A site in several federations gets one policy covering all of them (repeat ``--federation``).
The keys follow ``site_tasks.storage.Keys`` (docs/storage.md): a site writes
``<federation>/<run>/round-<t>/updates/<site>.{safetensors,json}`` and
``<federation>/<run>/{validation,evaluation,inference}/<site>.json``, and reads
``<federation>/<run>/round-<t>/prior.{safetensors,json}``. ``tests/infra/test_infra.py`` checks
every key a site writes or reads against the rendered policy, and another site's keys against it.

Standard library only, so the coordinating centre can run it without installing the platform.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TEMPLATE = Path(__file__).with_name("minio-site-policy.json")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
"""fedmap.schema.NAME (federation, site names): never an IAM wildcard (* ?), '/' or '$'."""
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
"""S3 bucket names: 3-63 lower-case letters, digits, '.' and '-'."""


class PolicyError(ValueError):
    """A bucket, federation or site name that cannot go into a policy safely."""


def _check(value: str, rule: re.Pattern[str], what: str) -> str:
    if not rule.match(value):
        raise PolicyError(f"{what} {value!r} is not a valid name ({rule.pattern})")
    return value


def _fill(value: Any, names: dict[str, str]) -> Any:
    """The template with every placeholder in every string replaced."""
    if isinstance(value, str):
        for placeholder, name in names.items():
            value = value.replace(placeholder, name)
        return value
    if isinstance(value, list):
        return [_fill(item, names) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, names) for key, item in value.items()}
    return value


def render(bucket: str, federation: str, site: str, template: Path = TEMPLATE) -> dict[str, Any]:
    """The template for one federation: ``<bucket>``, ``<federation>`` and ``<site>`` filled in."""
    names = {
        "<bucket>": _check(bucket, BUCKET, "bucket"),
        "<federation>": _check(federation, NAME, "federation"),
        "<site>": _check(site, NAME, "site"),
    }
    document: dict[str, Any] = _fill(json.loads(template.read_text()), names)
    return document


def _union(first: list[str], second: list[str]) -> list[str]:
    return first + [item for item in second if item not in first]


def site_policy(
    bucket: str, federations: Sequence[str], site: str, template: Path = TEMPLATE
) -> dict[str, Any]:
    """One policy for a site in one or more federations: each statement of the template, with
    the resources and condition values of every federation."""
    if not federations:
        raise PolicyError("a site policy needs at least one federation")
    merged = render(bucket, federations[0], site, template)
    for federation in federations[1:]:
        other = render(bucket, federation, site, template)
        for into, statement in zip(merged["Statement"], other["Statement"], strict=True):
            into["Resource"] = _union(into["Resource"], statement["Resource"])
            for operator, values in statement.get("Condition", {}).items():
                for key, patterns in values.items():
                    known = into["Condition"][operator][key]
                    into["Condition"][operator][key] = _union(known, patterns)
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python infra/site/policy.py",
        description="Print a site's MinIO policy: write its own messages, read the priors.",
    )
    parser.add_argument("--bucket", required=True, help="the federation bucket (storage.bucket)")
    parser.add_argument(
        "--federation",
        required=True,
        action="append",
        help="a federation the site belongs to (name:); repeat for several",
    )
    parser.add_argument("--site", required=True, help="the site's name, also its MinIO user")
    parser.add_argument("--template", type=Path, default=TEMPLATE, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        document = site_policy(args.bucket, args.federation, args.site, args.template)
    except PolicyError as exc:
        print(f"policy.py: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
