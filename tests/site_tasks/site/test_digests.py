"""Validate once per run: validate keeps its summary (with a SHA-256 per file) at the site, and
train, evaluate, finetune and tier-3 score check the files against that record instead of running
Great Expectations again. A changed or missing file, a site never validated in the run and a
record for other data are refused before anything is uploaded."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from fedmap.data import read_site, write_features
from site_tasks.centre import server
from site_tasks.centre.registry import Release
from site_tasks.federation import FederationConfig, load_federation
from site_tasks.site import contracts
from site_tasks.site import validate as validate_module
from site_tasks.site.contracts import DataContractError, ValidationSummary
from site_tasks.site.digests import (
    DataChangedError,
    NotValidatedError,
    keep_record,
    record_path,
    require_unchanged,
    require_validated,
)
from site_tasks.site.finalise import evaluate, finetune
from site_tasks.site.score import output_folder, score_site
from site_tasks.site.train import state_path, train
from site_tasks.site.validate import validate
from site_tasks.storage import Keys, S3Store

REPO = Path(__file__).resolve().parents[3]
SITE = "site-01"


def setup(make_federation: Callable[..., Path], **kw: object) -> tuple[FederationConfig, S3Store]:
    config = load_federation(make_federation(n_sites=1, n_train=60, n_val=30, **kw))
    store = S3Store(config.storage)
    store.ensure_bucket()
    server.init(config, store)
    return config, store


def change_one_cell(path: Path) -> None:
    """A different but still valid file: one feature of the first row moves a little."""
    header, first, *rest = path.read_text().splitlines()
    cells = first.split(",")
    cells[0] = f"{float(cells[0]) + 0.25:.6f}"
    path.write_text("\n".join([header, ",".join(cells), *rest]) + "\n")


# --- the record ----------------------------------------------------------------------------------


def test_validate_keeps_the_uploaded_summary_at_the_site_with_each_files_sha256(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation)
    summary = validate(config, SITE, store)
    path = record_path(config, SITE)
    assert path == config.state_dir / config.name / config.run / SITE / "validation.json"
    assert path.read_bytes() == store.get(Keys.of(config).validation(SITE))
    folder = config.site(SITE).data
    assert dict(ValidationSummary.from_json(path.read_text()).sha256) == {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("train.csv", "val.csv")
    }
    assert summary.success and require_validated(config, SITE) == summary
    assert not list(path.parent.glob("*.tmp"))


# --- refusals: nothing is uploaded ---------------------------------------------------------------


Task = Callable[[FederationConfig, S3Store], object]
TASKS: dict[str, Task] = {
    "train": lambda config, store: train(config, SITE, 1, store),
    "evaluate": lambda config, store: evaluate(config, store, SITE, 1),
    "finetune": lambda config, store: finetune(config, store, SITE, 1),
}


@pytest.mark.parametrize("task", TASKS)
def test_a_file_changed_after_validation_is_refused_and_nothing_is_uploaded(
    task: str, make_federation: Callable[..., Path]
) -> None:
    config, store = setup(make_federation)
    assert validate(config, SITE, store).success
    change_one_cell(config.site(SITE).data / "val.csv")
    before = store.list("")
    with pytest.raises(DataChangedError) as info:
        TASKS[task](config, store)
    message = str(info.value)
    assert f"{SITE}: val.csv changed since validation" in message
    assert "train.csv" not in message  # unchanged, so not named
    assert "re-run the site's validate task, or start a new run" in message
    assert isinstance(info.value, DataContractError)  # the DAG's contract handling applies
    assert store.list("") == before
    assert not state_path(config, SITE, 1).exists() and not state_path(config, SITE, 2).exists()


def test_a_file_missing_since_validation_is_refused(make_federation: Callable[..., Path]) -> None:
    config, store = setup(make_federation)
    assert validate(config, SITE, store).success
    (config.site(SITE).data / "train.csv").unlink()
    before = store.list("")
    with pytest.raises(DataChangedError, match=f"{SITE}: train.csv is missing since validation"):
        train(config, SITE, 1, store)
    assert store.list("") == before


def test_a_site_never_validated_in_this_run_is_refused(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation)
    before = store.list("")
    expected = (
        f"{SITE}: the data was never validated in run 'test-run' of federation "
        "'synthetic-label-skew'; run the site's validate task for this run first"
    )
    with pytest.raises(NotValidatedError) as info:
        train(config, SITE, 1, store)
    assert str(info.value) == expected
    assert store.list("") == before
    # a validation of another run does not count for this one
    assert validate(replace(config, run="earlier-run"), SITE, store).success
    with pytest.raises(NotValidatedError, match="never validated in run 'test-run'"):
        train(config, SITE, 1, store)
    assert not any("updates/" in k for k in store.list(""))


def test_a_site_that_failed_validation_is_refused_with_the_contracts_errors(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation)
    (config.site(SITE).data / "val.csv").unlink()
    summary = validate(config, SITE, store)
    assert not summary.success
    with pytest.raises(DataContractError) as info:
        train(config, SITE, 1, store)
    assert not isinstance(info.value, DataChangedError | NotValidatedError)
    assert str(info.value) == (
        f"{SITE}: data does not meet the 'synthetic' contract:\n  " + "\n  ".join(summary.errors)
    )


def test_a_record_for_another_contract_or_other_files_is_refused(
    make_federation: Callable[..., Path],
) -> None:
    config, store = setup(make_federation)
    summary = validate(config, SITE, store)
    keep_record(config, SITE, replace(summary, contract="fed_heart_disease"))
    with pytest.raises(NotValidatedError, match="validated against the 'fed_heart_disease'"):
        train(config, SITE, 1, store)
    keep_record(config, SITE, replace(summary, sha256={"train.csv": summary.sha256["train.csv"]}))
    with pytest.raises(NotValidatedError, match=r"does not cover exactly train\.csv, val\.csv"):
        train(config, SITE, 1, store)
    keep_record(config, SITE, replace(summary, site="site-02"))
    with pytest.raises(NotValidatedError, match="the validation record is site-02's"):
        train(config, SITE, 1, store)
    record_path(config, SITE).write_text("{not json")
    with pytest.raises(NotValidatedError, match=r"record is unreadable \(JSONDecodeError\)"):
        train(config, SITE, 1, store)
    assert not any("updates/" in k for k in store.list(""))


def test_require_unchanged_names_every_changed_or_missing_file(tmp_path: Path) -> None:
    for name in ("a.csv", "b.csv", "c.csv"):
        (tmp_path / name).write_text(f"x00\n{name}\n")
    digests = {
        n: hashlib.sha256((tmp_path / n).read_bytes()).hexdigest()
        for n in ("a.csv", "b.csv", "c.csv")
    }
    require_unchanged("site-09", tmp_path, digests)
    (tmp_path / "a.csv").write_text("x00\nother\n")
    (tmp_path / "c.csv").unlink()
    with pytest.raises(DataChangedError) as info:
        require_unchanged("site-09", tmp_path, digests)
    message = str(info.value)
    assert "site-09: a.csv changed since validation\n" in message
    assert "site-09: c.csv is missing since validation\n" in message
    assert "b.csv" not in message


# --- what the check does not do ------------------------------------------------------------------


def test_train_of_an_unchanged_site_runs_no_great_expectations(
    make_federation: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, store = setup(make_federation)
    assert validate(config, SITE, store).success

    def no_gx(*args: object, **kwargs: object) -> None:
        raise AssertionError("Great Expectations ran in a train task")

    for name in ("validate_site", "_check_file", "_rules", "_batch_definition", "_quiet_gx"):
        monkeypatch.setattr(contracts, name, no_gx)
    monkeypatch.setattr(validate_module, "validate_site", no_gx)
    manifest = train(config, SITE, 1, store).manifest
    assert manifest.site == SITE and manifest.num_examples == 60
    assert store.get(Keys.of(config).update(1, SITE)[1]) is not None


def test_the_site_tasks_import_no_great_expectations() -> None:
    code = (
        "import sys\n"
        "import site_tasks.site.train, site_tasks.site.finalise, site_tasks.site.score\n"
        "import site_tasks.site.digests, site_tasks.site.validate\n"
        "print('great_expectations' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


def test_validating_again_accepts_the_new_files(make_federation: Callable[..., Path]) -> None:
    config, store = setup(make_federation)
    assert validate(config, SITE, store).success
    change_one_cell(config.site(SITE).data / "train.csv")
    with pytest.raises(DataChangedError):
        train(config, SITE, 1, store)
    assert validate(config, SITE, store).success  # the remedy the message names
    assert train(config, SITE, 1, store).manifest.round == 1


# --- tier 3 ----------------------------------------------------------------------------------------


def test_a_tier_3_file_changed_after_validation_is_not_scored(
    make_federation: Callable[..., Path],
) -> None:
    from fedmap.models import build_model

    path = make_federation(n_sites=2, n_train=60, n_val=30)
    body = yaml.safe_load(path.read_text())
    body["sites"]["site-02"]["tier"] = 3
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    config = load_federation(path)
    store = S3Store(config.storage)
    store.ensure_bucket()
    folder = config.site("site-02").data
    split = read_site(folder)
    write_features(folder / "reference.csv", split.x_train)
    write_features(folder / "score.csv", split.x_val)
    release = Release("fedmap-x-prior", "1", dict(build_model("mlp", 30).state_dict()))
    with pytest.raises(NotValidatedError, match="site-02: the data was never validated"):
        score_site(config, "site-02", store, release)
    summary = validate(config, "site-02", store)
    assert set(summary.sha256) == {"reference.csv", "score.csv"}
    write_features(folder / "score.csv", split.x_val[:5])
    before = store.list("")
    with pytest.raises(DataChangedError, match=r"site-02: score\.csv changed since validation"):
        score_site(config, "site-02", store, release)
    assert store.list("") == before
    assert not output_folder(config, "site-02").exists()
    validate(config, "site-02", store)
    assert score_site(config, "site-02", store, release).rows == 5
