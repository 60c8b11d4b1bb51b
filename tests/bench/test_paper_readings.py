"""``bench/paper_readings.py``: the columns the paper benchmark runs beyond the authors' code."""

from __future__ import annotations

from bench.paper_readings import (
    FEDBN_BATCHNORM,
    FEDMAP_OMEGA,
    MATCHED,
    NOT_THE_CODE,
    at_2cb8dee,
    bench_protocol,
    not_run_by_the_code,
    protocol_2cb8dee,
)
from fedmap.protocols import PAPER, PAPER_2CB8DEE


def test_fedbn_batchnorm_is_fedbn_on_the_batchnorm_mlp_with_the_fedbn_columns_budget() -> None:
    column = bench_protocol().columns[FEDBN_BATCHNORM]
    code = PAPER.columns["fedbn"]
    assert code.method == "fedavg"  # the authors' MLP has no BatchNorm: their FedBN is FedAvg
    assert column.method == "fedbn" and column.algorithm().model == "mlp-bn"
    assert (column.rounds, column.training) == (code.rounds, code.training)
    assert column.reports is None  # beside the paper's FedBN, but not one of the code's cells
    assert NOT_THE_CODE[FEDBN_BATCHNORM][0] == "fedbn"


def test_the_bench_protocol_is_paper_plus_the_columns_that_are_not_the_code() -> None:
    columns = bench_protocol().columns
    assert set(columns) == set(PAPER.columns) | set(NOT_THE_CODE)
    assert all(columns[c] == b for c, b in PAPER.columns.items())
    assert columns[MATCHED].local_epochs == PAPER.columns["fedmap-samples"].local_epochs


def test_the_2cb8dee_reading_names_its_columns_as_recorded() -> None:
    early = protocol_2cb8dee()
    assert list(early.columns) == [at_2cb8dee(c) for c in PAPER_2CB8DEE.columns]
    assert early.columns[at_2cb8dee("fedavg")] == PAPER_2CB8DEE.columns["fedavg"]


def test_the_readings_the_code_never_ran_are_named_with_why() -> None:
    not_code = not_run_by_the_code()
    assert set(not_code) == {
        MATCHED,
        FEDBN_BATCHNORM,
        FEDMAP_OMEGA,
        at_2cb8dee("fedmap-samples"),
        at_2cb8dee("individual"),
    }
    assert not_code[at_2cb8dee("individual")] == "2cb8dee has no Individual runner"
    assert "fedavg" not in not_code and at_2cb8dee("fedavg") not in not_code
