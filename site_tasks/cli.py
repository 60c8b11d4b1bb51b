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

    add(
        "validate",
        "check this site's data against the federation's contract; upload the summary",
        True,
        False,
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
    return parser


def run(args: argparse.Namespace) -> int:
    from fedmap.messages import MessageError
    from fedmap.server import NoValidUpdates
    from site_tasks.centre import server
    from site_tasks.federation import load_federation
    from site_tasks.site.contracts import DataContractError
    from site_tasks.site.train import PriorUnavailable, TrainingDiverged, train
    from site_tasks.site.validate import validate
    from site_tasks.storage import S3Store, StorageError

    log = logging.getLogger("site_tasks")
    try:
        config = load_federation(args.federation)
        if getattr(args, "site", None) is not None:
            config.site(args.site)
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
