"""Privacy: after validate and train, only the allowed kinds of object exist, and a sentinel
planted in the site's data appears in no uploaded byte."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from site_tasks.centre import server
from site_tasks.federation import load_federation
from site_tasks.site.train import train
from site_tasks.site.validate import validate
from site_tasks.storage import S3Store

SENTINEL = "987654.321"  # a feature value no model parameter or metric will print


def test_nothing_but_parameters_omega_and_counts_leave_the_site(
    make_federation: Callable[..., Path],
    s3_server: Any,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = make_federation(n_sites=2, n_train=200, n_val=60)
    config = load_federation(path)
    for site in config.sites:
        for name in ("train.csv", "val.csv"):
            f = config.site(site).data / name
            lines = f.read_text().splitlines()
            cells = lines[3].split(",")
            cells[7] = SENTINEL
            lines[3] = ",".join(cells)
            cells = lines[4].split(",")
            cells[2] = (
                f'"{SENTINEL}"'  # a quoted cell must parse the same in validation and training
            )
            lines[4] = ",".join(cells)
            f.write_text("\n".join(lines) + "\n")
            assert SENTINEL in f.read_text()
    store = S3Store(config.storage)
    store.ensure_bucket()
    server.init(config, store)
    uploaded_by_sites = []
    for site in config.sites:
        before = set(store.list(""))
        validate(config, site, store)
        train(config, site, 1, store)
        uploaded_by_sites += sorted(set(store.list("")) - before)

    allowed = re.compile(
        r"^synthetic-label-skew/test-run/("
        r"validation/site-0[12]\.json|round-1/updates/site-0[12]\.(safetensors|json))$"
    )
    assert len(uploaded_by_sites) == 6
    assert all(allowed.match(k) for k in uploaded_by_sites), uploaded_by_sites
    needles = [SENTINEL.encode(), b"9876543", "987654.321".encode("utf-16-le")]
    for key in uploaded_by_sites:
        blob = store.get(key) or b""
        assert blob, key
        for needle in needles:
            assert needle not in blob, (key, needle)
    # nor in anything printed or logged
    out, err = capfd.readouterr()
    assert SENTINEL not in out + err + caplog.text
    # the raw files on the server's disk tell the same story
    for file in Path(str(s3_server.root)).rglob("*"):
        if file.is_file():
            assert SENTINEL.encode() not in file.read_bytes()


def test_a_non_numeric_cell_fails_without_showing_it(
    make_federation: Callable[..., Path],
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from site_tasks.site.contracts import DataContractError

    config = load_federation(make_federation(n_sites=1, n_train=60, n_val=30))
    f = config.site("site-01").data / "train.csv"
    lines = f.read_text().splitlines()
    cells = lines[2].split(",")
    cells[4] = '"SENTINEL_TEXT,123"'
    lines[2] = ",".join(cells)
    f.write_text("\n".join(lines) + "\n")
    store = S3Store(config.storage)
    store.ensure_bucket()
    server.init(config, store)
    assert not validate(config, "site-01", store).success
    with pytest.raises(DataContractError) as exc:
        train(config, "site-01", 1, store)
    out, err = capfd.readouterr()
    uploaded = [(store.get(k) or b"").decode(errors="replace") for k in store.list("")]
    for text in (str(exc.value), out, err, caplog.text, *uploaded):
        assert "SENTINEL_TEXT" not in text
