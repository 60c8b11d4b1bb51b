"""The steps one task per site and one task at the centre call again and again (sensor pokes):
``train_step`` trains the site's next round once its prior is committed and only then;
``aggregate_step`` waits for every site still in the run, leaves out the ones that ended, and
moves the run on by exactly one round per aggregation. Against the real local S3 server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from site_tasks.centre import steps as centre
from site_tasks.runs import SiteExcluded, committed_rounds, configure
from site_tasks.site import steps as site
from site_tasks.storage import Keys

RUN = "steps-run"


def test_rounds_advance_one_poke_at_a_time(make_federation: Callable[..., Path]) -> None:
    path = make_federation(n_sites=2, n_train=100, n_val=40, rounds=2, min_sites=1)
    config, store = configure(path, RUN)
    keys = Keys.of(config)
    centre.start(path, RUN)
    for s in ("site-01", "site-02"):
        site.validate_site(path, RUN, s)

    nothing = centre.aggregate_step(path, RUN)
    assert (nothing.round, nothing.done, nothing.aggregated) == (1, False, None)
    assert nothing.waiting_for == ("site-01", "site-02")

    first = site.train_step(path, RUN, "site-01")
    assert (first.trained, first.next_round, first.done) == (1, 2, False)
    waiting = site.train_step(path, RUN, "site-01")  # round 2's prior is not there yet
    assert (waiting.trained, waiting.next_round, waiting.done) == (None, 2, False)
    assert centre.aggregate_step(path, RUN).waiting_for == ("site-02",)

    site.train_step(path, RUN, "site-02")
    one = centre.aggregate_step(path, RUN)
    assert (one.aggregated, one.round, one.done) == (1, 2, False)
    assert set(one.weights) == {"site-01", "site-02"}
    assert abs(sum(one.weights.values()) - 1.0) < 1e-9
    assert committed_rounds(config, store) == 2

    # site-02 ends (its task failed after its retries): round 2 goes on without it
    assert site.train_step(path, RUN, "site-01").trained == 2
    two = centre.aggregate_step(path, RUN, ended={"site-02"}, read_validation=False)
    assert (two.aggregated, two.round, two.done, two.left_out) == (2, 3, True, ("site-02",))
    assert store.get(keys.prior(3)[1]) is not None

    assert site.train_step(path, RUN, "site-01").done  # nothing left: the sensor finishes
    again = centre.aggregate_step(path, RUN)
    assert again.done and again.aggregated is None  # idempotent: no round is aggregated twice


def test_a_site_that_failed_validation_is_excluded_and_not_waited_for(
    make_federation: Callable[..., Path],
) -> None:
    path = make_federation(n_sites=2, n_train=100, n_val=40, rounds=1, min_sites=1)
    bad = path.parent / "hospital-data" / "site-02" / "val.csv"
    bad.write_text(bad.read_text().replace(",", ";", 3))
    centre.start(path, RUN)
    site.validate_site(path, RUN, "site-01")
    with pytest.raises(SiteExcluded):
        site.validate_site(path, RUN, "site-02")
    with pytest.raises(SiteExcluded):
        site.train_step(path, RUN, "site-02")
    with pytest.raises(SiteExcluded):
        site.finalise_site(path, RUN, "site-02")
    site.train_step(path, RUN, "site-01")
    step = centre.aggregate_step(path, RUN)
    assert (step.aggregated, step.done, step.left_out) == (1, True, ("site-02",))
