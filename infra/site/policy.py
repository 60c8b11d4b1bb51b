"""Print a site's MinIO policy: the site may write only its own messages and read only the priors
and its own messages, in the federations it belongs to.

    python infra/site/policy.py --bucket fedmap --federation heart --site cleveland \\
        > infra/centre/minio/sites/cleveland.json

A site in several federations gets one policy covering all of them (repeat ``--federation``).
The rules are ``site_tasks.access`` (the same ones the local SeaweedFS server enforces);
``tests/infra/test_infra.py`` checks every key a site writes or reads against the rendered
policy, and another site's keys against it.

Standard library only (``site_tasks.access`` is too), so the coordinating centre runs it from a
checkout without installing the platform.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's site_tasks

from site_tasks.access import NAME, minio_policy, site_identity
from site_tasks.access import AccessError as PolicyError

__all__ = ["NAME", "PolicyError", "main", "site_policy"]


def site_policy(bucket: str, federations: Sequence[str], site: str) -> dict[str, Any]:
    """One MinIO policy for a site in one or more federations."""
    if not federations:
        raise PolicyError("a site policy needs at least one federation")
    return minio_policy(site_identity(site, [(f, site) for f in federations]), bucket)


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
    args = parser.parse_args(argv)
    try:
        document = site_policy(args.bucket, args.federation, args.site)
    except PolicyError as exc:
        print(f"policy.py: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
