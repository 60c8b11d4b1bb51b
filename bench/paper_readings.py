"""The paper protocol benchmark's readings of the authors' code and its results file.

The columns ``bench/paper_protocol.py`` runs beyond ``fedmap.protocols.PAPER`` (Individual on
FedMAP's budget, FedBN with BatchNorm), which readings the authors' code never ran, the names
its records carry (``<column> @2cb8dee``, ``<column> (noise v)``), and ``PaperResults``, what
docs/results/synthetic_paper_results.json holds, read back by ``bench/paper_report.py`` and
``bench/synthetic.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fedmap.experiment import SiteRecord
from fedmap.protocols import PAPER, PAPER_2CB8DEE, EvaluationProtocol, MethodBudget

MATCHED = "individual-matched"
FEDMAP = "fedmap-samples"
FEDMAP_OMEGA = "fedmap-omega"
FEDBN_BATCHNORM = "fedbn-batchnorm"

NOT_THE_CODE: dict[str, tuple[str, str]] = {
    MATCHED: ("individual", "not the code's budget"),
    FEDBN_BATCHNORM: ("fedbn", "not the code's model"),
}
"""Columns that are not the authors' code: the paper's method each sits beside, and why not.
They are reported next to the paper's figure but not counted among the protocol's cells."""


def bench_protocol() -> EvaluationProtocol:
    """PAPER plus the columns of ``NOT_THE_CODE``: ``individual-matched``, Individual on
    fedmap-samples' rounds and epochs, and ``fedbn-batchnorm``, FedBN as its paper defines it
    (Li et al. 2021: BatchNorm layers stay local) on the MLP with BatchNorm, on the fedbn
    column's budget. The authors' MLP has no BatchNorm, so their fedbn column is FedAvg."""
    fm, fb = PAPER.columns[FEDMAP], PAPER.columns["fedbn"]
    matched = MethodBudget(
        "individual", fm.rounds, fm.training, {}, None, f"Individual on the budget of {FEDMAP}"
    )
    batchnorm = MethodBudget(
        "fedbn",
        fb.rounds,
        fb.training,
        {},
        None,
        "FedBN with BatchNorm kept local, on the MLP with BatchNorm and the budget of fedbn "
        "(src/models/map_mlp.py has no BatchNorm)",
    )
    return replace(PAPER, columns={**PAPER.columns, MATCHED: matched, FEDBN_BATCHNORM: batchnorm})


AT_2CB8DEE = " @2cb8dee"


def at_2cb8dee(column: str) -> str:
    """The records' name of a ``PAPER_2CB8DEE`` column."""
    return column + AT_2CB8DEE


def protocol_2cb8dee() -> EvaluationProtocol:
    """``PAPER_2CB8DEE`` with its columns named as recorded (``at_2cb8dee``)."""
    return replace(
        PAPER_2CB8DEE, columns={at_2cb8dee(c): b for c, b in PAPER_2CB8DEE.columns.items()}
    )


def not_run_by_the_code() -> dict[str, str]:
    """Every recorded column the authors' code never ran, and why: those of ``NOT_THE_CODE``,
    FedMAP weighted by omega (the code weights by sample counts), and 2cb8dee's Individual and
    FedMAP (that commit has no Individual runner, and its FedMAP loss raises a TypeError)."""
    early = {
        FEDMAP: "2cb8dee's FedMAP loss raises a TypeError",
        "individual": "2cb8dee has no Individual runner",
    }
    return {
        **{column: why for column, (_, why) in NOT_THE_CODE.items()},
        FEDMAP_OMEGA: "the code weights by sample counts",
        **{at_2cb8dee(c): why for c, why in early.items() if c in PAPER_2CB8DEE.columns},
    }


def noise_label(column: str, noise_var: float) -> str:
    return f"{column} (noise {noise_var:g})"


@dataclass(frozen=True)
class PaperResults:
    """What synthetic_paper_results.json holds."""

    records: list[SiteRecord]
    curves: dict[str, dict[str, dict[str, list[float]]]]
    protocol: list[str]
    seeds: list[int]
    noise_var: float
    wall_seconds: float
    seconds_per_round: dict[str, float]
    cpu_seconds: float = float("nan")
    """CPU time of the worker processes: wall clock on two idle cores is at least half of it."""

    def as_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "seeds": self.seeds,
            "ablation_noise_var": self.noise_var,
            "wall_seconds": round(self.wall_seconds, 1),
            "cpu_seconds": round(self.cpu_seconds, 1),
            "seconds_per_round": {k: round(v, 4) for k, v in self.seconds_per_round.items()},
            "curves": self.curves,
            "records": [r.as_dict() for r in self.records],
        }


RECORD_KEYS = ("scenario", "method", "seed", "site", "n_scored")


def load_paper_results(path: Path) -> PaperResults:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no paper-protocol results (run 'python -m bench.paper_protocol' or "
            "'dvc repro paper_protocol' first)"
        )
    data = json.loads(path.read_text())
    records = [
        SiteRecord(
            r["scenario"],
            r["method"],
            r["seed"],
            r["site"],
            {
                k: float("nan") if v is None else float(v)
                for k, v in r.items()
                if k not in RECORD_KEYS
            },
            r.get("n_scored"),
        )
        for r in data["records"]
    ]
    return PaperResults(
        records,
        data["curves"],
        data["protocol"],
        data["seeds"],
        float(data["ablation_noise_var"]),
        float(data["wall_seconds"]),
        data["seconds_per_round"],
        float(data.get("cpu_seconds", float("nan"))),
    )
