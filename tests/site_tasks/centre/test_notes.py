"""The DAG runs' notes without a run: a round's line, rounds alike sharing one, Airflow's
1,000-character limit, and the inference run's note. (A whole run's note read back through the
API server: tests/dags/test_run_pages.py.)"""

from __future__ import annotations

from site_tasks.centre.steps import NOTE_LIMIT, _fit, _round_line, _rounds, inference_note


def test_a_round_line_names_who_counted_who_did_not_and_the_quorum() -> None:
    summary = {"contributed": ["a", "b"], "rejected": {"c": "bad signature"}, "missing": ["d"]}
    assert _round_line(summary, 4, 2) == (
        "2 of 4 sites, rejected c (bad signature), missing d; quorum met"
    )
    assert _round_line(summary, 4, 3).endswith("; **quorum 3 not met**")


def test_rounds_alike_share_a_line_and_the_note_keeps_to_airflows_limit() -> None:
    same, odd = "10 of 10 sites; quorum met", "9 of 10 sites, missing x; quorum met"
    lines = [(1, same), (2, same), (3, odd), (4, same), (5, same), (6, same)]
    assert _rounds(lines) == [f"- rounds 1-2: {same}", f"- round 3: {odd}", f"- rounds 4-6: {same}"]
    many = [f"- round {t}: {'x' * 60}" for t in range(1, 41)]
    note = _fit(["head"], many, ["- gate: ...", "- equity: ..."])
    assert len(note) <= NOTE_LIMIT
    kept = [line for line in note.splitlines() if line.startswith("- round ")]
    assert 0 < len(kept) < 40 and note.splitlines()[0] == "head"
    assert f"- ... {40 - len(kept)} more (rounds_sites.png in MLflow)" in note
    assert note.endswith("- gate: ...\n- equity: ...")  # the gate and equity always stay


def test_the_inference_note_names_the_version_each_site_scored_with() -> None:
    results = {"site-07": {"model": "fedmap-demo-prior", "version": "3", "n_scored": 160}}
    note = inference_note("demo", ["site-07", "site-14"], results)
    assert note.splitlines() == [
        "**fedmap-demo inference**: scored with `fedmap-demo-prior` v3",
        "- site-07: 160 rows with v3",
        "- site-14: no result (see its score log)",
    ]
