"""The ``privacy`` section and its accountant: Opacus's golden values, the exact Gaussian
composition the accountants bound, the noise a budget needs, the refusal of a plan over budget,
the section's errors in a federation file, and ``fedmap privacy`` on the command line."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedmap.cli import main
from fedmap.privacy import (
    BudgetExceeded,
    Privacy,
    Spent,
    affordable_rounds,
    check_privacy,
    epsilon,
    noise_for,
    noise_multiplier,
    plan_epsilon,
)
from fedmap.schema import ConfigError, read_federation
from tests.federation_files import synthetic_federation

pytestmark = pytest.mark.privacy

DELTA = 1e-5
# Opacus's own accountant test case (tests/accountants_test.py): DP-SGD on MNIST.
GOLDEN = Spent(rounds=2250, noise_multiplier=1.5, mechanisms=1, sample_rate=0.04)
GOLDEN_RDP, GOLDEN_PRV = 7.3291, 6.7774


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def exact_gaussian_epsilon(rounds: int, z: float, delta: float) -> float:
    """epsilon(delta) of ``rounds`` Gaussian mechanisms of multiplier z without sampling, exactly:
    they compose to mu-GDP with mu = sqrt(T) / z, whose privacy profile is
    delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) (Dong, Roth and Su 2019)."""
    mu = math.sqrt(rounds) / z

    def profile(eps: float) -> float:
        return _phi(-eps / mu + mu / 2) - math.exp(eps) * _phi(-eps / mu - mu / 2)

    low, high = 0.0, 200.0
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if profile(mid) > delta else (low, mid)
    return high


# --- the accountant ---------------------------------------------------------------------------


def test_rdp_golden_value() -> None:
    assert epsilon([GOLDEN], DELTA, "rdp") == pytest.approx(GOLDEN_RDP, abs=1e-3)


def test_prv_golden_value() -> None:
    # PRVAccountant's default eps_error is 0.01
    assert epsilon([GOLDEN], DELTA, "prv") == pytest.approx(GOLDEN_PRV, abs=0.01)


def test_no_rounds_spend_nothing() -> None:
    assert epsilon([], DELTA) == 0.0
    assert epsilon([Spent(0, 1.0, 1)], DELTA) == 0.0


@pytest.mark.parametrize(("rounds", "z"), [(1, 1.0), (15, 2.0), (15, 5.0), (40, 3.0)])
def test_accountants_bound_the_exact_composition(rounds: int, z: float) -> None:
    """At q = 1 the T rounds are one Gaussian mechanism of multiplier z / sqrt(T): RDP is an upper
    bound on its exact epsilon, PRV the exact value to its error of 0.01 (from above)."""
    exact = exact_gaussian_epsilon(rounds, z, DELTA)
    prv = epsilon([Spent(rounds, z, 1)], DELTA, "prv")
    rdp = epsilon([Spent(rounds, z, 1)], DELTA, "rdp")
    assert exact - 1e-6 <= prv <= exact + 0.02, (exact, prv)
    assert rdp >= exact, (exact, rdp)
    assert rdp <= exact * 1.15, (exact, rdp)  # a bound, not a vacuous one


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_two_mechanisms_at_z_are_one_at_z_over_root_two(accountant: str) -> None:
    z = 2.0
    two = epsilon([Spent(15, z, mechanisms=2)], DELTA, accountant)
    one = epsilon([Spent(15, z / math.sqrt(2), mechanisms=1)], DELTA, accountant)
    assert two == pytest.approx(one, rel=1e-9)
    assert two > epsilon([Spent(15, z, mechanisms=1)], DELTA, accountant) + 1.0


def test_stretches_compose() -> None:
    """Two stretches under one z cost what one stretch of their total rounds costs."""
    z = 3.0
    split = epsilon([Spent(10, z, 1), Spent(5, z, 1)], DELTA)
    assert split == pytest.approx(epsilon([Spent(15, z, 1)], DELTA), rel=1e-9)
    assert split > epsilon([Spent(10, z, 1)], DELTA)


# --- the noise a budget needs -----------------------------------------------------------------


@pytest.mark.parametrize("target", [1.0, 3.0, 8.0])
def test_noise_for_round_trips(target: float) -> None:
    z = noise_for(target, DELTA, 15, 1.0)
    spent = epsilon([Spent(15, z, 1)], DELTA)
    assert spent <= target
    assert spent == pytest.approx(target, abs=0.05), (z, spent)


def test_noise_for_two_mechanisms_is_root_two_times_one() -> None:
    one = noise_for(3.0, DELTA, 15, mechanisms=1)
    two = noise_for(3.0, DELTA, 15, mechanisms=2)
    assert two == pytest.approx(one * math.sqrt(2), rel=1e-12)
    assert epsilon([Spent(15, two, 2)], DELTA) <= 3.0


def test_noise_multiplier_is_the_section_s_or_the_budget_s() -> None:
    assert noise_multiplier(Privacy(epsilon=3.0, noise_multiplier=1.25), 15) == 1.25
    fitted = noise_multiplier(Privacy(epsilon=3.0), 15)
    assert fitted == noise_for(3.0, DELTA, 15)
    omega = noise_multiplier(Privacy(epsilon=3.0, weights="omega"), 15)
    assert omega == pytest.approx(fitted * math.sqrt(2), rel=1e-12)
    assert plan_epsilon(Privacy(epsilon=3.0, weights="omega"), 15) <= 3.0


def test_weights_auto_resolves_by_dp() -> None:
    assert (Privacy().weighting, Privacy().mechanisms) == ("omega", 2)
    assert (Privacy(epsilon=3.0).weighting, Privacy(epsilon=3.0).mechanisms) == ("equal", 1)
    assert not Privacy().active and not Privacy().dp
    assert Privacy(secure_aggregation="ckks").active and not Privacy(secure_aggregation="ckks").dp


# --- the budget -------------------------------------------------------------------------------


def test_a_plan_over_budget_is_refused_with_its_numbers() -> None:
    privacy = Privacy(epsilon=3.0)
    planned = plan_epsilon(privacy, 15, 1.0)
    assert planned > 20  # z = 1 over 15 rounds is far over a budget of 3
    with pytest.raises(BudgetExceeded) as caught:
        affordable_rounds(privacy, [], 15, 1.0)
    message = str(caught.value)
    assert f"epsilon = {planned:.4g}" in message
    assert "privacy.epsilon = 3" in message
    needed = float(re.findall(r"raise noise_multiplier to ([0-9.]+)", message)[0])
    assert needed == pytest.approx(noise_for(3.0, DELTA, 15), abs=1e-3)
    assert epsilon([Spent(15, needed, 1)], DELTA) <= 3.0 + 1e-3


def test_a_plan_that_spends_exactly_the_budget_runs_every_round() -> None:
    privacy = Privacy(epsilon=3.0)
    z = noise_multiplier(privacy, 15)
    assert affordable_rounds(privacy, [], 15, z) == 15


@pytest.mark.parametrize("weights", ["equal", "omega"])
def test_spent_rounds_truncate_the_plan_at_the_boundary(weights: str) -> None:
    privacy = Privacy(epsilon=3.0, weights=weights)  # type: ignore[arg-type]
    z = noise_multiplier(privacy, 15)
    m = privacy.mechanisms
    spent = [Spent(10, z, m)]
    t = affordable_rounds(privacy, spent, 15, z)
    assert 0 < t < 15
    assert epsilon([*spent, Spent(t, z, m)], DELTA) <= 3.0
    assert epsilon([*spent, Spent(t + 1, z, m)], DELTA) > 3.0
    assert t == 5  # 10 spent + 5 = the 15 rounds the budget was fitted to


def test_a_budget_already_spent_affords_no_round() -> None:
    privacy = Privacy(epsilon=3.0)
    z = noise_multiplier(privacy, 15)
    spent = [Spent(100, z, 1)]
    assert epsilon(spent, DELTA) > 3.0
    assert affordable_rounds(privacy, spent, 15, z) == 0


# --- the section's rules ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"delta": 1.0}, "delta"),
        ({"clip": math.inf}, "clip"),
        ({"log_omega_range": 51.0}, "log_omega_range"),
        ({"epsilon": 1.0, "noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": 1.0}, "noise_multiplier"),  # a multiplier without a budget
        ({"weights": "samples"}, "weights"),
        ({"accountant": "gdp"}, "accountant"),
        ({"secure_aggregation": "paillier"}, "secure_aggregation"),
    ],
)
def test_check_privacy_names_the_key(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=rf"^privacy\.{key} "):
        check_privacy(Privacy(**section))


SITES: dict[str, dict[str, Any]] = {
    "site-01": {"data": "data/site-01"},
    "site-02": {"data": "data/site-02", "tier": 2},
    "site-03": {"data": "data/site-03"},
}
STORAGE = {"bucket": "b", "endpoint_url": "http://127.0.0.1:1"}


def _federation(tmp_path: Path, privacy: Any, **algorithm: Any) -> Path:
    body = synthetic_federation("fed", "run-1", SITES, STORAGE, "state", privacy=privacy)
    body["algorithm"].update(algorithm)
    if isinstance(privacy, dict) and privacy.get("secure_aggregation") == "ckks":
        body["min_sites"] = 2  # a sum of one ciphertext is that site's update
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_a_federation_file_reads_its_privacy_section(tmp_path: Path) -> None:
    section = {
        "epsilon": 3,
        "delta": 1e-6,
        "clip": 0.5,
        "weights": "omega",
        "secure_aggregation": "ckks",
        "register_personal": ["site-01"],
    }
    privacy = read_federation(_federation(tmp_path, section)).privacy
    assert privacy == Privacy(
        epsilon=3,
        delta=1e-6,
        clip=0.5,
        weights="omega",
        secure_aggregation="ckks",
        register_personal=("site-01",),
    )
    assert privacy.dp and privacy.secure and privacy.mechanisms == 2


@pytest.mark.parametrize("infinity", [math.inf, ".inf", "inf"])
def test_an_infinite_budget_is_no_dp(tmp_path: Path, infinity: Any) -> None:
    privacy = read_federation(_federation(tmp_path, {"epsilon": infinity})).privacy
    assert privacy.epsilon == math.inf and not privacy.dp and not privacy.active


def test_a_learned_prior_runs_without_an_active_section(tmp_path: Path) -> None:
    federation = read_federation(_federation(tmp_path, {}, prior="icnn"))
    assert federation.algorithm.prior == "icnn" and not federation.privacy.active


@pytest.mark.parametrize(
    ("section", "algorithm", "key"),
    [
        pytest.param({"epsilon": -1}, {}, "privacy.epsilon", id="epsilon-negative"),
        pytest.param({"epsilon": 0}, {}, "privacy.epsilon", id="epsilon-zero"),
        pytest.param({"epsilon": "ten"}, {}, "privacy.epsilon", id="epsilon-string"),
        pytest.param({"epsilon": None}, {}, "privacy.epsilon", id="epsilon-null"),
        pytest.param({"epsilon": True}, {}, "privacy.epsilon", id="epsilon-bool"),
        pytest.param({"delta": 0}, {}, "privacy.delta", id="delta-zero"),
        pytest.param({"delta": 1.5}, {}, "privacy.delta", id="delta-above-one"),
        pytest.param({"delta": "1e-5x"}, {}, "privacy.delta", id="delta-string"),
        pytest.param({"clip": None}, {}, "privacy.clip", id="clip-null"),
        pytest.param(
            {"epsilon": 3, "noise_multiplier": "big"},
            {},
            "privacy.noise_multiplier",
            id="noise-multiplier-string",
        ),
        pytest.param({"epsilom": 3}, {}, "privacy.epsilom", id="unknown-key"),
        pytest.param(
            {"register_personal": ["site-02"]},
            {},
            "privacy.register_personal",
            id="register-tier-2",
        ),
        pytest.param(
            {"register_personal": ["nowhere"]},
            {},
            "privacy.register_personal",
            id="register-unknown-site",
        ),
        pytest.param(
            {"register_personal": "site-01"},
            {},
            "privacy.register_personal",
            id="register-not-a-list",
        ),
        pytest.param({"epsilon": 3}, {"prior": "icnn"}, "algorithm.prior", id="icnn-under-dp"),
        pytest.param(
            {"secure_aggregation": "ckks"},
            {"prior": "diagonal"},
            "algorithm.prior",
            id="diagonal-under-secagg",
        ),
        pytest.param(
            {"epsilon": 3}, {"weighting": "samples"}, "algorithm.weighting", id="samples-under-dp"
        ),
    ],
)
def test_a_bad_privacy_section_is_a_config_error_naming_the_key(
    tmp_path: Path, section: dict[str, Any], algorithm: dict[str, Any], key: str
) -> None:
    path = _federation(tmp_path, section, **algorithm)
    with pytest.raises(ConfigError) as caught:
        read_federation(path)
    message = str(caught.value)
    assert message.startswith(str(path)) and key in message, message


def test_the_privacy_section_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="privacy must be a mapping"):
        read_federation(_federation(tmp_path, 3.0))


# --- fedmap privacy ---------------------------------------------------------------------------


def _table(out: str) -> dict[int, list[float]]:
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", out, flags=re.MULTILINE)
    return {int(t): [float(c) for c in cells.split(" | ")] for t, cells in rows}


def test_cli_prints_the_golden_epsilon(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["privacy", "--noise-multiplier", "1.5", "--rounds", "2250", "--sample-rate", "0.04"]
    assert main([*argv, "--delta", "1e-5"]) == 0
    out = capsys.readouterr().out
    assert "| rounds | rdp | prv |" in out
    table = _table(out)
    assert sorted(table) == [1, 562, 1125, 2250]
    rdp, prv = table[2250]
    assert f"| 2250 | {rdp:.4f} |" in out and f"{rdp:.4f}" == "7.3291"
    assert prv == pytest.approx(GOLDEN_PRV, abs=0.01)
    assert table[1][0] < table[562][0] < table[1125][0] < rdp


def test_cli_two_mechanisms(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["privacy", "--noise-multiplier", "2", "--rounds", "15", "--accountant", "rdp"]
    assert main([*argv, "--mechanisms", "2"]) == 0
    table = _table(capsys.readouterr().out)
    expected = epsilon([Spent(15, 2.0 / math.sqrt(2), 1)], DELTA, "rdp")
    assert table[15] == [pytest.approx(expected, abs=1e-4)]


def test_cli_prints_the_noise_a_budget_needs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", "--epsilon", "8", "--rounds", "15"]) == 0
    out = capsys.readouterr().out
    found = dict(re.findall(r"^  (rdp|prv): z = ([0-9.]+)$", out, flags=re.MULTILINE))
    assert set(found) == {"rdp", "prv"}, out
    for name, text in found.items():
        z = float(text)
        spent = epsilon([Spent(15, z, 1)], DELTA, name)
        assert spent <= 8.0, (name, z, spent)
        assert spent == pytest.approx(8.0, abs=0.05), (name, z, spent)


@pytest.mark.parametrize(
    "extra",
    [
        ["--noise-multiplier", "0", "--rounds", "15"],
        ["--noise-multiplier", "1", "--rounds", "0"],
        ["--noise-multiplier", "1", "--rounds", "15", "--delta", "1"],
        ["--epsilon", "-1", "--rounds", "15"],
    ],
)
def test_cli_refuses_a_bad_plan(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["privacy", *extra]) == 2
    assert capsys.readouterr().err.startswith("fedmap: error: ")


def test_a_budget_no_noise_can_fit_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no noise multiplier fits epsilon = 0.05 .* 15 rounds"):
        noise_for(0.05, 1e-5, 15)


def test_secure_aggregation_needs_a_quorum_of_two(tmp_path: Path) -> None:
    body = synthetic_federation(
        "fed", "run-1", SITES, STORAGE, "state", privacy={"secure_aggregation": "ckks"}
    )
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))  # min_sites: 1
    with pytest.raises(ConfigError, match=r"ckks needs min_sites >= 2, got 1"):
        read_federation(path)
