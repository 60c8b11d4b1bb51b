"""``site-task`` end to end through its command line, against the real local S3 server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from site_tasks.cli import main
from site_tasks.federation import load_federation
from site_tasks.storage import Keys, S3Store


def test_a_round_through_the_cli(
    make_federation: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    path = make_federation(n_sites=2, n_train=160, n_val=60)
    fed = ["--federation", str(path)]
    assert main(["init", *fed]) == 0
    for site in ("site-01", "site-02"):
        assert main(["validate", *fed, "--site", site]) == 0
        assert main(["train", *fed, "--site", site, "--round", "1", "--device", "auto"]) == 0
    assert "training on cpu" in caplog.text
    assert main(["aggregate", *fed, "--round", "1"]) == 0
    config = load_federation(path)
    store = S3Store(config.storage)
    summary = json.loads(store.get(Keys.of(config).summary(1)) or b"{}")
    assert summary["contributed"] == ["site-01", "site-02"]
    assert store.get(Keys.of(config).prior(2)[1]) is not None


def test_usage_errors_exit_2(
    make_federation: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    path = make_federation(n_sites=1, n_train=100, n_val=40)
    fed = ["--federation", str(path)]
    assert main(["train", *fed, "--site", "site-01", "--round", "1"]) == 2
    assert "never validated in run 'test-run'" in caplog.text  # validate comes first
    assert main(["validate", *fed, "--site", "site-01"]) == 2
    assert "NoSuchBucket" in caplog.text  # the centre has not run init yet
    S3Store(load_federation(path).storage).ensure_bucket()
    assert main(["validate", *fed, "--site", "site-01"]) == 0
    assert main(["train", *fed, "--site", "site-01", "--round", "1"]) == 2
    assert "round 1 is not committed" in caplog.text
    assert main(["validate", *fed, "--site", "site-07"]) == 2
    assert "site 'site-07' is not in federation" in caplog.text
    assert main(["validate", "--federation", str(path.with_name("nope.yaml")), "--site", "x"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["train", *fed, "--site", "site-01"])
    assert exc.value.code == 2


def test_enrol_rotate_revoke_and_audit_verify(
    make_federation: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A site that never enrolled cannot send an update; enrolled it can; after rotation its old
    key is revoked; revoked it cannot; its audit log verifies, and fails once edited."""
    from site_tasks import trust

    monkeypatch.delenv("FEDMAP_ENROL_ON_FIRST_USE")
    path = make_federation(n_sites=1, n_train=100, n_val=40, rounds=2, enrol=False)
    fed = ["--federation", str(path)]
    config = load_federation(path)
    assert main(["init", *fed]) == 0  # the centre enrols its own key
    assert main(["validate", *fed, "--site", "site-01"]) == 0
    assert main(["train", *fed, "--site", "site-01", "--round", "1"]) == 2
    assert "is not enrolled" in caplog.text
    assert main(["enrol", *fed, "--site", "site-01"]) == 0
    assert "public key (send this to the centre)" in capsys.readouterr().out
    old = trust.keyring(config).active("site-01")[0].key_id
    assert main(["rotate", *fed, "--site", "site-01"]) == 0
    ring = trust.keyring(config)
    assert [k.key_id for k in ring.active("site-01")] != [old]
    assert ring.of("site-01")[0].revoked is not None
    assert main(["train", *fed, "--site", "site-01", "--round", "1"]) == 0
    assert main(["revoke", *fed, "--site", "site-01"]) == 0
    assert main(["aggregate", *fed, "--round", "1"]) == 2  # its only update: now revoked
    assert "revoked" in caplog.text
    log = trust.audit_log(config, "site-01").path
    assert main(["audit", "verify", str(log)]) == 0
    log.write_text(log.read_text().replace('"sent"', '"kept"', 1))
    assert main(["audit", "verify", str(log)]) == 2
    assert "was edited" in capsys.readouterr().err


@pytest.mark.privacy
def test_keygen_and_budget_under_a_privacy_section(
    make_federation: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from site_tasks import privacy

    monkeypatch.delenv("FEDMAP_ENROL_ON_FIRST_USE")  # keys only from keygen
    section = {"epsilon": 8.0, "noise_multiplier": 3.0, "secure_aggregation": "ckks"}
    path = make_federation(n_sites=2, n_train=100, n_val=40, rounds=2, min_sites=2, privacy=section)
    fed = ["--federation", str(path)]
    config = load_federation(path)
    assert main(["init", *fed]) == 2  # no public CKKS context at the centre yet: refused
    assert main(["keygen", *fed, "--site", "site-01"]) == 0
    out = capsys.readouterr().out
    assert str(privacy.secret_path(config)) in out and str(privacy.public_path(config)) in out
    assert privacy.secret_path(config).stat().st_mode & 0o777 == 0o600
    assert main(["init", *fed]) == 0
    assert main(["budget", *fed, "--site", "centre"]) == 0
    report = capsys.readouterr().out
    # nothing aggregated yet: the round its sites may be releasing is counted (1 round at z = 3)
    assert "epsilon 1.3863 of 8 spent" in report
    assert "2 round(s) granted at z 3, 0 aggregated, 1 counted" in report
    assert main(["budget", *fed, "--site", "site-02"]) == 0
    assert "epsilon 0.0000 of 8 spent" in capsys.readouterr().out  # nothing released yet
