"""``site-task``: what hospital IT runs at a site, and what the coordinating centre runs between
rounds. Every command reads the same federation file."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fedmap.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="site-task",
        description="Run one FedMAP task. Sites: validate, train. Coordinating centre: init, aggregate. "
        "Only parameters, log omega and aggregate metrics ever leave a site.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, site: bool, round_: bool) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--federation", type=Path, required=True, help="the federation YAML file")
        if site:
            p.add_argument("--site", required=True, help="this site's name in the federation file")
        if round_:
            p.add_argument(
                "--round", type=int, required=True, help="communication round t (from 1)"
            )
        return p

    validate = add(
        "validate",
        "check this site's data against the federation's contract; upload the summary (a file "
        "without storage, or --local: print it, upload nothing)",
        True,
        False,
    )
    validate.add_argument(
        "--local",
        action="store_true",
        help="check the files and print the result; nothing is kept or uploaded (the default "
        "when the federation file has no storage section)",
    )
    train = add(
        "train",
        "train theta_k under the prior of round t; upload theta_k and log omega_k",
        True,
        True,
    )
    train.add_argument(
        "--device", help="cpu, cuda or auto (default: the federation file's, else auto)"
    )
    add("init", "write the prior of round 1 (Algorithm 1: a random site's model)", False, False)
    add("aggregate", "check round t's updates and write the prior of round t + 1", False, True)
    enrol = add(
        "enrol",
        "make this site's Ed25519 key pair (kept at the site, mode 600) and record its public key "
        "in the federation's keyring; at the centre, --public-key records a key a site sent",
        True,
        False,
    )
    enrol.add_argument("--public-key", help="base64 public key a site sent (centre side)")
    add(
        "rotate",
        "give this site (or 'centre') a new key pair and revoke the old public key",
        True,
        False,
    )
    revoke = add(
        "revoke",
        "revoke a site's key (all its active keys unless --key-id): nothing it signs is accepted",
        True,
        False,
    )
    revoke.add_argument("--key-id", help="the key to revoke (16 hex digits, see the keyring)")
    add(
        "keygen",
        "secure aggregation: make the federation's CKKS key pair at this site (once): "
        "ckks.secret (mode 600) for every tier-1 and tier-2 site, ckks.public for the centre; copy them "
        "over the consortium's own channel (docs/privacy.md)",
        True,
        False,
    )
    add(
        "budget",
        "differential privacy: epsilon spent and left, from this site's own ledger (or the "
        "centre's, with --site centre)",
        True,
        False,
    )
    audit = sub.add_parser(
        "audit",
        help="check an audit log's hash chain",
        description="Check an audit log (the centre's or a site's) for edited, moved or deleted "
        "entries; --head also catches entries cut from its end. Exit 0 when intact, 2 if not.",
    )
    audit.add_argument("action", choices=("verify",))
    audit.add_argument("log", type=Path, help="the audit.jsonl file")
    audit.add_argument("--head", help="the head hash recorded elsewhere (a round summary)")
    contract = sub.add_parser(
        "contract",
        help="draft a data contract (Great Expectations suite) from this site's own CSV files",
        description="Draft a first Great Expectations suite from every *.csv in --data, for a "
        "person to review: it runs here and sends nothing, but the suite holds value sets and "
        "widened ranges of the site's data. Exit 0 when written, 2 on an error.",
    )
    contract.add_argument("action", choices=("init",))
    contract.add_argument("--data", type=Path, required=True, help="the folder of CSV files")
    contract.add_argument("--target", required=True, help="the target column")
    contract.add_argument("--time", help="the time column of a survival task")
    contract.add_argument(
        "--missing",
        nargs="+",
        action="extend",
        default=[],
        metavar="TOKEN",
        help="cell text read as missing, on top of pandas' defaults (e.g. '?')",
    )
    contract.add_argument("--name", help="the suite's name (default: the folder's name)")
    contract.add_argument("--out", type=Path, help="the suite's file (default: ./<name>.json)")
    contract.add_argument("--force", action="store_true", help="overwrite an existing --out")
    return parser


def audit_verify(args: argparse.Namespace) -> int:
    from fedmap.audit import AuditError, verify

    try:
        count = verify(args.log, args.head)
    except (AuditError, OSError) as exc:
        print(f"site-task audit: {exc}", file=sys.stderr)
        return 2
    print(f"{args.log}: {count} entries, chain intact")
    return 0


def contract_init(args: argparse.Namespace) -> int:
    """``contract init``: draft a suite from the site's CSV files and write it for review."""
    from site_tasks.site.draft import REVIEW_WARNING, DraftError, draft_folder, write_suite

    try:
        draft = draft_folder(args.data, args.target, args.time, tuple(args.missing), args.name)
        out = args.out or Path(f"{draft.suite['name']}.json")
        write_suite(draft.suite, out, args.force)
    except (DraftError, OSError) as exc:
        print(f"site-task contract init: {exc}", file=sys.stderr)
        return 2
    print(out)
    for column in draft.columns:
        print(f"  {column.line()}", file=sys.stderr)
    for note in draft.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"WARNING: {REVIEW_WARNING}", file=sys.stderr)
    return 0


def keys(args: argparse.Namespace) -> int:
    import base64

    from fedmap.signing import SignatureError
    from site_tasks import trust
    from site_tasks.federation import load_federation

    try:
        config = load_federation(args.federation)
        if args.site != "centre":
            config.site(args.site)
        if args.command == "enrol":
            public = None if args.public_key is None else base64.b64decode(args.public_key)
            entry = trust.enrol(config, args.site, public)
        elif args.command == "rotate":
            entry = trust.rotate(config, args.site)
        else:
            trust.revoke(config, args.site, args.key_id)
            print(f"revoked {args.site} {args.key_id or '(all active keys)'}")
            return 0
    except (ConfigError, SignatureError, ValueError) as exc:
        print(f"site-task {args.command}: {exc}", file=sys.stderr)
        return 2
    print(f"{entry.owner} key {entry.key_id} enrolled in {config.federation.keyring}")
    print(f"public key (send this to the centre): {entry.public}")
    return 0


def private(args: argparse.Namespace) -> int:
    """``keygen`` and ``budget``: the privacy section's files at a site (or the centre)."""
    from fedmap.config import ConfigError
    from fedmap.secure import SecureError
    from site_tasks import privacy
    from site_tasks.federation import load_federation

    try:
        config = load_federation(args.federation)
        if args.site != "centre":
            config.site(args.site)
        if args.command == "keygen":
            privacy.keygen(config)
            print(
                f"secret CKKS context (tier-1 and tier-2 sites, never the centre): {privacy.secret_path(config)}"
            )
            print(f"public CKKS context (the centre): {privacy.public_path(config)}")
            return 0
        print(privacy.budget_report(config, args.site))
        return 0
    except (ConfigError, SecureError, ValueError) as exc:
        print(f"site-task {args.command}: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    if args.command == "audit":
        return audit_verify(args)
    if args.command == "contract":
        return contract_init(args)
    if args.command in ("keygen", "budget"):
        return private(args)
    if args.command in ("enrol", "rotate", "revoke"):
        return keys(args)
    from fedmap.messages import MessageError
    from fedmap.privacy import BudgetExceeded
    from fedmap.secure import SecureError
    from fedmap.server import NoValidUpdates
    from fedmap.signing import SignatureError
    from site_tasks.centre import server
    from site_tasks.federation import load_federation
    from site_tasks.site.contracts import DataContractError
    from site_tasks.site.train import PriorUnavailable, TrainingDiverged, train
    from site_tasks.site.validate import validate
    from site_tasks.storage import S3Store, StorageError
    from site_tasks.trust import WriteOnceError

    log = logging.getLogger("site_tasks")
    try:
        # validate may run before the site joins, on a file without storage
        config = load_federation(args.federation, deployed=args.command != "validate")
        no_storage = config.federation.storage is None
        local = args.command == "validate" and (args.local or no_storage)
        if getattr(args, "site", None) is not None:
            config.site(args.site)
        if local:  # before joining: check the files, print, keep and upload nothing
            from site_tasks.site.validate import check_locally, report

            summary = check_locally(config, args.site)
            print(report(summary))
            print("checked locally: nothing was uploaded or kept", file=sys.stderr)
            return 0 if summary.success else 2
        store = S3Store(config.storage)
        if args.command == "validate":
            return 0 if validate(config, args.site, store).success else 2
        if args.command == "train":
            train(config, args.site, args.round, store, args.device)
        elif args.command == "init":
            store.ensure_bucket()
            server.init(config, store)
        elif args.command == "aggregate":
            server.aggregate(config, store, args.round)
        return 0
    except (
        ConfigError,
        DataContractError,
        PriorUnavailable,
        NoValidUpdates,
        MessageError,
        NotImplementedError,
        StorageError,
        server.QuorumNotMet,
        TrainingDiverged,
        server.PriorConflict,
        SignatureError,
        WriteOnceError,
        BudgetExceeded,
        SecureError,
    ) as exc:
        log.error("%s", exc)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("site_tasks").setLevel(logging.INFO)
    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
