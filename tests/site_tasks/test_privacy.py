"""Privacy: after validate and train, only the allowed kinds of object exist, and a sentinel
planted in the site's data appears in no uploaded byte."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from site_tasks import server
from site_tasks.federation import load_federation
from site_tasks.storage import S3Store
from site_tasks.train import train
from site_tasks.validate import validate

SENTINEL = "987654.321"  # a feature value no model parameter or metric will print


def test_nothing_but_parameters_omega_and_counts_leave_the_site(
    make_federation: Callable[..., Path], s3_server: Any
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
    # the raw files on the server's disk tell the same story
    for file in Path(str(s3_server.root)).rglob("*"):
        if file.is_file():
            assert SENTINEL.encode() not in file.read_bytes()
