"""Validate once per run: the site's own record of what it validated, and the check that the
files it trains or scores on are still those files.

``site-task validate`` runs the Great Expectations suite (over a second per site, after a 3 s
import) and keeps its summary, with a SHA-256 per file checked, at the site:
``<state_dir>/<federation>/<run>/<site>/validation.json``, beside the site's theta_k. Every later
task of the run at that site (train, evaluate, finetune, tier-3 score) calls
:func:`require_validated`: it reads that record (the site's own, never the copy in the object
store, which whoever can write to the bucket could replace) and re-hashes the files, which takes
milliseconds. A file changed or missing since validation, a site that failed validation and a site
never validated in this run are all refused with a :class:`DataContractError` before the task
reads a row or uploads anything.

Nothing here imports Great Expectations or pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fedmap.report import write_atomic
from site_tasks.federation import FederationConfig
from site_tasks.site.contracts import (
    Contract,
    DataContractError,
    ValidationSummary,
    require_valid,
    scoring_contract,
)
from site_tasks.site.versioning import file_sha256

RECORD = "validation.json"


class NotValidatedError(DataContractError):
    """The site has no validation record for this run, or one for other files or contract."""


class DataChangedError(DataContractError):
    """A file the site validated in this run has changed or gone since."""


def site_contract(config: FederationConfig, site: str) -> Contract:
    """The contract as this site applies it: its splits, or a tier-3 site's features-only files."""
    if config.site(site).tier == 3:
        return scoring_contract(config.data_contract)
    return config.data_contract


def record_path(config: FederationConfig, site: str) -> Path:
    """Where the site keeps its validation summary of this run (local disk; the uploaded copy is
    for the centre)."""
    return config.state_dir / config.name / config.run / site / RECORD


def keep_record(config: FederationConfig, site: str, summary: ValidationSummary) -> Path:
    """Save the summary at the site, through a temporary file and a rename; a re-run of validate
    replaces it."""
    path = record_path(config, site)
    write_atomic(path, summary.to_json())
    return path


def _not_validated(config: FederationConfig, site: str, why: str) -> NotValidatedError:
    return NotValidatedError(
        f"{site}: {why} in run {config.run!r} of federation {config.name!r}; run the site's "
        "validate task for this run first"
    )


def read_record(config: FederationConfig, site: str) -> ValidationSummary:
    """The site's own validation summary of this run; :class:`NotValidatedError` without one."""
    path = record_path(config, site)
    try:
        return ValidationSummary.from_json(path.read_text())
    except FileNotFoundError:
        raise _not_validated(config, site, "the data was never validated") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _not_validated(
            config, site, f"the validation record is unreadable ({type(exc).__name__})"
        ) from exc


def require_unchanged(site: str, folder: Path, digests: Mapping[str, str]) -> None:
    """Re-hash each file named in digests (file name -> SHA-256 at validation) and raise
    :class:`DataChangedError` naming every file that changed or is missing since."""
    problems = []
    for name, expected in digests.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{site}: {name} is missing since validation")
        elif file_sha256(path) != expected:
            problems.append(f"{site}: {name} changed since validation")
    if problems:
        lines = "\n  ".join(problems)
        raise DataChangedError(
            f"{site}: the data changed after it was validated; nothing was used or uploaded:\n"
            f"  {lines}\n"
            "Restore the validated files, or validate the new ones: re-run the site's validate "
            "task, or start a new run."
        )


def require_validated(config: FederationConfig, site: str) -> ValidationSummary:
    """The site's validation record of this run, once its files are known to be unchanged.

    Raises :class:`NotValidatedError` (no record, or one for another contract or other files),
    :class:`DataContractError` with the contract's errors (the site failed validation), or
    :class:`DataChangedError` (a file differs from the one validated). No Great Expectations.
    """
    record = read_record(config, site)
    if record.site != site:
        raise _not_validated(config, site, f"the validation record is {record.site}'s")
    if record.contract != config.contract:
        raise _not_validated(
            config, site, f"the data was validated against the {record.contract!r} contract"
        )
    require_valid(record)
    files = site_contract(config, site).files
    if set(record.sha256) != set(files):
        raise _not_validated(
            config, site, f"the validation record does not cover exactly {', '.join(files)}"
        )
    require_unchanged(site, config.site(site).data, {f: record.sha256[f] for f in files})
    return record
