"""``fedmap.protocols``: the authors' protocol holds the numbers its docstring cites, its sites are
the generator's, and ``fedmap simulate --protocol paper`` runs end to end on a tiny budget, while
the default (converged) protocol is the one ``fedmap.experiment`` has always run."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmap.algorithms import FedAvg, FedMAP, FedProx, Individual, SiteUpdate
from fedmap.cli import main
from fedmap.config import ExperimentConfig
from fedmap.experiment import Run, SiteRecord, records_of, run_all
from fedmap.models import build_model
from fedmap.protocols import (
    PAPER,
    PAPER_TABLES,
    EvaluationProtocol,
    MethodBudget,
    ProtocolRun,
    SiteRows,
    comparison_markdown,
    protocol_sites,
    run_protocol,
    seed_summary,
)
from fedmap.simulator import SimulationConfig
from fedmap.synthetic import SCENARIOS, SyntheticConfig, generate
from fedmap.training import LocalTraining

COMMIT = re.compile(r"\b(0c80483|2cb8dee|3829d55|f01521c)\b")
FEDERATED = LocalTraining(epochs=50, batch_size=64, lr=1e-4)


def test_paper_protocol_generator_and_metric() -> None:
    assert PAPER.metric == "balanced_accuracy"
    assert SyntheticConfig(noise_var=9.0) == PAPER.synthetic  # the rest as appendix B.1
    assert PAPER.rows == {
        "feature-skew": SiteRows(1250, 1250),
        "quantity-skew": SiteRows(2000, 500),
        "label-skew": SiteRows(1250, 1250),
    }


def test_paper_protocol_budgets_per_column() -> None:
    c = PAPER.columns
    assert list(c) == ["fedmap-samples", "fedmap-omega", "individual", "fedavg", "fedprox", "fedbn"]
    for name in ("fedmap-samples", "fedmap-omega", "fedavg", "fedprox", "fedbn"):
        assert (c[name].rounds, c[name].training) == (20, FEDERATED), name
        assert c[name].local_epochs == 1000
    assert (c["individual"].rounds, c["individual"].training) == (1, LocalTraining(10, 64, 1e-4))
    assert c["fedprox"].options == {"mu": 2.0}
    assert c["fedbn"].method == "fedavg"  # their MLP has no BatchNorm: their FedBN is FedAvg
    assert {n: b.reports for n, b in c.items()} == {
        "fedmap-samples": "fedmap",
        "fedmap-omega": "fedmap",
        "individual": "individual",
        "fedavg": "fedavg",
        "fedprox": "fedprox",
        "fedbn": "fedbn",
    }
    for name, budget in c.items():
        if name != "fedmap-omega":  # the one column that is ours, not theirs
            assert COMMIT.search(budget.source), f"{name}: no commit in {budget.source!r}"


def test_paper_fedmap_penalises_every_layer_with_variance_15() -> None:
    state = build_model("mlp", 30).state_dict()
    for name, weighting in (("fedmap-samples", "samples"), ("fedmap-omega", "omega")):
        method = PAPER.columns[name].algorithm()
        assert isinstance(method, FedMAP)
        assert (method.weighting, method.warm_start, method.prior) == (weighting, True, "gaussian")
        assert method.variances(state) == dict.fromkeys(state, 15.0)  # input layer included


def test_paper_fedmap_samples_weights_by_counts_and_omega_by_omega() -> None:
    updates = [
        SiteUpdate("a", 1, {}, num_examples=100, log_omega=-0.1),
        SiteUpdate("b", 1, {}, num_examples=300, log_omega=-2.0),
    ]
    samples = PAPER.columns["fedmap-samples"].algorithm()
    omega = PAPER.columns["fedmap-omega"].algorithm()
    assert isinstance(samples, FedMAP) and isinstance(omega, FedMAP)
    torch.testing.assert_close(
        samples.weights(updates), torch.tensor([0.25, 0.75], dtype=torch.float64)
    )
    w = omega.weights(updates)
    torch.testing.assert_close(w[0] / w[1], torch.tensor(np.exp(1.9), dtype=w.dtype))


def test_paper_columns_build_the_methods_they_name() -> None:
    kinds = {n: type(b.algorithm()) for n, b in PAPER.columns.items()}
    assert kinds["individual"] is Individual
    assert kinds["fedavg"] is FedAvg and kinds["fedbn"] is FedAvg
    assert kinds["fedprox"] is FedProx
    prox = PAPER.columns["fedprox"].algorithm()
    assert isinstance(prox, FedProx) and prox.mu == 2.0
    assert {PAPER.simulation(n).engine for n in PAPER.columns} == {"batched"}


def test_method_budget_rejects_unknown_methods_and_options() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        MethodBudget("fedsomething", 1, FEDERATED)
    with pytest.raises(ValueError, match="unknown option"):
        MethodBudget("fedprox", 1, FEDERATED, {"lam": 1.0})
    with pytest.raises(ValueError, match="rounds"):
        MethodBudget("fedavg", 0, FEDERATED)
    with pytest.raises(ValueError, match="no column"):
        PAPER.budget("ditto")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_protocol_sites_with_the_default_sizes_are_generate(scenario: str) -> None:
    ours = protocol_sites(scenario, 4, SyntheticConfig(), SiteRows(2000, 500))
    for a, b in zip(ours, generate(scenario, 4), strict=True):
        assert a.name == b.name
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.x_val, b.x_val)
        np.testing.assert_array_equal(a.y_train, b.y_train)


def test_paper_sites_sizes_and_class_balance() -> None:
    rows = {sc: [s.num_train + len(s.y_val) for s in PAPER.sites(sc, 0)] for sc in SCENARIOS}
    assert rows == {
        "feature-skew": [1250] * 10,
        "quantity-skew": [2000] * 5 + [500] * 5,
        "label-skew": [1250] * 10,
    }
    label = PAPER.sites("label-skew", 0)
    frac0 = [float(np.mean(np.concatenate([s.y_train, s.y_val]) == 0)) for s in label]
    np.testing.assert_allclose(frac0, [0.5] * 5 + [0.85] * 5, atol=1e-3)
    assert [len(s.y_val) for s in label[:1]] == [376]  # 30% held out, per class


def test_capped_caps_rounds_and_epochs_only() -> None:
    assert PAPER.capped() == PAPER
    quick = PAPER.capped(rounds=2, epochs=3)
    assert {n: (b.rounds, b.training.epochs) for n, b in quick.columns.items()} == {
        "fedmap-samples": (2, 3),
        "fedmap-omega": (2, 3),
        "individual": (1, 3),
        "fedavg": (2, 3),
        "fedprox": (2, 3),
        "fedbn": (2, 3),
    }
    assert quick.columns["fedprox"].options == {"mu": 2.0}
    assert quick.columns["fedbn"].training.lr == 1e-4
    with pytest.raises(ValueError, match="rounds"):
        PAPER.capped(rounds=0)


def test_a_protocol_must_cover_every_scenario_with_a_binary_metric() -> None:
    with pytest.raises(ValueError, match="no rows for label-skew"):
        rows = {"feature-skew": SiteRows(20, 20), "quantity-skew": SiteRows(20, 20)}
        EvaluationProtocol("x", "accuracy", SyntheticConfig(), rows, {})
    with pytest.raises(ValueError, match="metric"):
        EvaluationProtocol("x", "c_index", SyntheticConfig(), PAPER.rows, {})


def _record(method: str, seed: int, site: str, value: float) -> SiteRecord:
    return SiteRecord("feature-skew", method, seed, site, {"balanced_accuracy": value})


def test_seed_summary_and_comparison_table() -> None:
    records = [
        _record("individual", 0, "site-01", 0.80),
        _record("individual", 0, "site-02", 0.90),  # seed 0: 85
        _record("individual", 1, "site-01", 0.75),
        _record("individual", 1, "site-02", 0.85),  # seed 1: 80
        _record("fedavg", 0, "site-01", 0.40),
    ]
    summary = seed_summary(records, "balanced_accuracy")
    mean, std, n = summary[("feature-skew", "individual")]
    assert n == 2
    assert mean == pytest.approx(82.5)
    assert std == pytest.approx(statistics.stdev([85.0, 80.0]))
    fedavg = summary[("feature-skew", "fedavg")]
    assert fedavg[1:] == (0.0, 1)
    assert fedavg[0] == pytest.approx(40.0)
    table = comparison_markdown(PAPER, records)
    paper = PAPER_TABLES["feature-skew"]
    assert (
        f"| feature-skew | individual | 82.50 ± 3.54 (2 seeds) | {paper['individual']:.2f} | "
        in table
    )
    assert f"{82.5 - paper['individual']:+.2f} | yes |" in table  # within 3 pp of 83.38
    assert f"| {40.0 - paper['fedavg']:+.2f} | **no** |" in table


def _paper_cli(out: Path, *extra: str) -> int:
    return main(
        ["simulate", "--protocol", "paper", "--scenario", "label-skew", "--rounds", "2",
         "--epochs", "1", "--sites", "2", "--seeds", "0", "--out", str(out), *extra]
    )  # fmt: skip


def test_simulate_protocol_paper_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _paper_cli(tmp_path) == 0
    records = json.loads((tmp_path / "results.json").read_text())
    assert {r["method"] for r in records} == set(PAPER.columns)
    assert {r["site"] for r in records} == {"site-01", "site-02"}
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# label-skew: the authors' protocol")
    assert "Reported metric: balanced_accuracy" in summary
    assert "noise_var=9.0" in summary
    printed = capsys.readouterr().out
    for column in ("fedmap-samples", "fedmap-omega"):
        rows = [r for r in records if r["method"] == column]
        reported = 100.0 * statistics.fmean(float(r["balanced_accuracy"]) for r in rows)
        paper = PAPER_TABLES["label-skew"]["fedmap"]
        line = f"| label-skew | {column} | {reported:.2f} ± 0.00 (1 seed) | {paper:.2f} |"
        assert line in summary and line in printed
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_simulate_protocol_paper_picks_columns_and_refuses_the_rest(tmp_path: Path) -> None:
    assert _paper_cli(tmp_path / "a", "--methods", "fedmap-omega,individual") == 0
    records = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {r["method"] for r in records} == {"fedmap-omega", "individual"}
    assert _paper_cli(tmp_path / "b", "--methods", "ditto") == 2
    assert _paper_cli(tmp_path / "c", "--config", "params.yaml") == 2
    assert _paper_cli(tmp_path / "d", "--engine", "loop") == 2
    converged = ["simulate", "--scenario", "label-skew", "--methods", "fedmap-omega"]
    rc = main([*converged, "--out", str(tmp_path / "e")])
    assert rc == 2  # a paper column under the converged protocol


def test_converged_is_the_default_and_unchanged(tmp_path: Path) -> None:
    """--protocol converged and no --protocol give what fedmap.experiment runs for the config."""
    args = ["simulate", "--scenario", "quantity-skew", "--methods", "fedmap,individual",
            "--rounds", "2", "--sites", "2", "--seeds", "1"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "default")]) == 0
    assert main([*args, "--protocol", "converged", "--out", str(tmp_path / "converged")]) == 0
    default = json.loads((tmp_path / "default" / "results.json").read_text())
    converged = json.loads((tmp_path / "converged" / "results.json").read_text())
    assert default == converged
    config = ExperimentConfig(simulation=SimulationConfig(rounds=2))
    runs = [Run("quantity-skew", m, 1, sites=2) for m in ("fedmap", "individual")]
    direct = [r.as_dict() for run, res in run_all(runs, config) for r in records_of(run, res)]
    assert len(default) == len(direct) == 4
    for a, b in zip(default, direct, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            assert value == (pytest.approx(b[key]) if isinstance(value, float) else b[key])


def test_columns_that_train_the_same_thing_run_once() -> None:
    quick = PAPER.capped(rounds=1, epochs=1)
    runs = [ProtocolRun("feature-skew", c, 0, sites=2) for c in ("fedavg", "fedbn", "individual")]
    told: list[str] = []
    results = run_protocol(quick, runs, progress=lambda r: told.append(r.column))
    assert sorted(told) == ["fedavg", "fedbn", "individual"]
    (_, avg), (_, bn), (_, ind) = results
    assert (avg.method, bn.method, ind.method) == ("fedavg", "fedbn", "individual")
    assert bn.final == avg.final and bn.history == avg.history  # FedBN is FedAvg there
    assert ind.final != avg.final


def test_the_2cb8dee_reading_runs_that_commits_lr_and_methods() -> None:
    from fedmap.protocols import AUTHORS_PROTOCOLS, PAPER_2CB8DEE, PROTOCOLS

    assert AUTHORS_PROTOCOLS == {"paper": PAPER, "paper-2cb8dee": PAPER_2CB8DEE}
    assert set(AUTHORS_PROTOCOLS) < set(PROTOCOLS)
    c = PAPER_2CB8DEE.columns
    assert (PAPER_2CB8DEE.metric, PAPER_2CB8DEE.synthetic, PAPER_2CB8DEE.rows) == (
        PAPER.metric,
        PAPER.synthetic,
        PAPER.rows,
    )
    at_1e3 = LocalTraining(epochs=50, batch_size=64, lr=1e-3)
    for name in c:
        assert (c[name].rounds, c[name].training) == (20, at_1e3), name
    assert {n: b.method for n, b in c.items()} == {
        "fedmap-samples": "fedmap",
        "individual": "individual",
        "fedavg": "fedavg",
        "fedprox": "fedavg",  # FedProx sites ran fit_fedavg at 2cb8dee
        "fedbn": "fedavg",
    }
    fedmap = c["fedmap-samples"].algorithm()
    assert isinstance(fedmap, FedMAP) and fedmap.weighting == "samples"
    assert {PAPER_2CB8DEE.simulation(n).engine for n in c} == {"batched"}
    for name, budget in c.items():
        assert COMMIT.search(budget.source), f"{name}: no commit in {budget.source!r}"


def test_simulate_protocol_paper_2cb8dee_end_to_end(tmp_path: Path) -> None:
    args = ["simulate", "--protocol", "paper-2cb8dee", "--scenario", "feature-skew",
            "--rounds", "1", "--epochs", "1", "--sites", "2", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    records = json.loads((tmp_path / "results.json").read_text())
    assert {r["method"] for r in records} == {
        "fedmap-samples", "individual", "fedavg", "fedprox", "fedbn"
    }  # fmt: skip
    summary = (tmp_path / "summary.md").read_text()
    assert "(fedmap simulate --protocol paper-2cb8dee)" in summary
    assert "- fedavg: fedavg, 1 round(s) x 1 epoch(s) of Adam, lr 0.001, batch 64 [" in summary
    assert "- fedprox: fedavg, 1 round(s) x 1 epoch(s) of Adam, lr 0.001, batch 64 [" in summary
    assert main([*args[:-1], str(tmp_path / "omega"), "--methods", "fedmap-omega"]) == 2
