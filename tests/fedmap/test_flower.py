"""fedmap.flower: a 3-site Flower simulation (Ray backend) ends on the simulator's prior.

Flower lives in its own venv (``make flower``: .state/flower), so the federation runs there in a
subprocess and this process compares its final prior with ``fedmap.simulator.simulate``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from fedmap.algorithms import FedMAP
from fedmap.data import standardise
from fedmap.params import Params
from fedmap.priors import PriorName
from fedmap.simulator import SimulationConfig, SimulationResult, simulate
from fedmap.synthetic import generate

REPO = Path(__file__).resolve().parents[2]
FLOWER_PY = REPO / ".state" / "flower" / "bin" / "python"
SITES, ROUNDS, SEED = 3, 3, 0
PRIORS: tuple[PriorName, ...] = ("gaussian", "diagonal")

# gaussian: the sites travel as a list, and are scored each round; diagonal: each node builds
# its own (a SiteSource)
_CHILD = f"""
import json, sys
from pathlib import Path
from safetensors.torch import save_file
from fedmap import flower
from fedmap.algorithms import FedMAP
from fedmap.data import standardise
from fedmap.simulator import SimulationConfig
from fedmap.synthetic import generate

out, ray = Path(sys.argv[1]), Path(sys.argv[2])
config = SimulationConfig(rounds={ROUNDS})
sources = {{
    "gaussian": [standardise(s) for s in generate("label-skew", {SEED}, num_sites={SITES})],
    "diagonal": flower.SyntheticSites("label-skew", {SEED}, {SITES}),
}}
for prior, sites in sources.items():
    strategy = flower.simulate(
        FedMAP(prior=prior), sites, config, {SEED}, num_sites={SITES}, n_features=30,
        evaluate=prior == "gaussian", backend=flower.ray_backend(temp_dir=ray),
    )
    assert len(strategy.round_seconds) == {ROUNDS}, strategy.round_seconds
    save_file({{k: v.contiguous() for k, v in strategy.prior.items()}}, out / f"{{prior}}.safetensors")
    (out / f"{{prior}}.json").write_text(json.dumps(strategy.scores))
"""


def _max_abs_difference(a: Params, b: Params) -> float:
    assert sorted(a) == sorted(b)
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _simulated(prior: PriorName, warm_start: bool = True) -> SimulationResult:
    sites = [standardise(s) for s in generate("label-skew", SEED, num_sites=SITES)]
    algorithm = FedMAP(prior=prior, warm_start=warm_start)
    return simulate(algorithm, sites, SimulationConfig(rounds=ROUNDS), SEED)


def _pooled_accuracy(result: SimulationResult, round_: int) -> float:
    """sum_k (N_k^val / N^val) accuracy_k after round_, as the Strategy averages the sites."""
    sites = [standardise(s) for s in generate("label-skew", SEED, num_sites=SITES)]
    n_val = [int(s.y_val.shape[0]) for s in sites]
    per_site = result.history[round_ - 1]
    return sum(a * n for a, n in zip(per_site, n_val, strict=True)) / sum(n_val)


@pytest.mark.flower
@pytest.mark.skipif(
    not FLOWER_PY.exists(), reason="no Flower venv at .state/flower (make flower builds it)"
)
def test_a_flower_simulation_ends_on_the_simulators_prior(tmp_path: Path) -> None:
    state = REPO / ".state"
    env = {
        **os.environ,
        "FLWR_HOME": str(state / "flwr-home"),  # else Flower writes ~/.flwr
        "FLWR_TELEMETRY_ENABLED": "0",
        "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    }
    run = subprocess.run(
        [str(FLOWER_PY), "-c", _CHILD, str(tmp_path), str(state / "ray")],
        cwd=REPO,
        env=env,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for prior in PRIORS:
        flower = load_file(tmp_path / f"{prior}.safetensors")
        ours = _simulated(prior)
        if prior == "diagonal":  # the learned prior's state travelled with the mean
            assert any(k.startswith("prior/") for k in flower)
        assert _max_abs_difference(flower, ours.prior) <= 1e-5, prior
        # the match needs theta_k kept on the node between rounds: from the prior mean it differs
        cold = _simulated(prior, warm_start=False).prior
        assert _max_abs_difference(flower, cold) > 1e-3
    # the nodes scored their own theta_k after each round, as the simulator does
    scores = json.loads((tmp_path / "gaussian.json").read_text())
    assert sorted(scores) == [str(t) for t in range(1, ROUNDS + 1)]
    gaussian = _simulated("gaussian")
    for t in range(1, ROUNDS + 1):
        assert scores[str(t)]["accuracy"] == pytest.approx(_pooled_accuracy(gaussian, t), abs=1e-9)


def test_only_fedmap_flower_imports_flwr() -> None:
    """The main install has no flwr: no other module of the library may import it."""
    importers = set()
    for path in sorted((REPO / "fedmap").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if any(n.split(".")[0] == "flwr" for n in names):
                importers.add(path.relative_to(REPO).as_posix())
    assert importers == {"fedmap/flower.py"}
