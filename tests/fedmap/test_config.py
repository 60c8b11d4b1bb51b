"""Configuration: YAML onto frozen dataclasses; every unknown key is an error naming its path."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fedmap.algorithms import METHODS, FedMAP, FedProx, build_algorithm
from fedmap.config import (
    BenchmarkConfig,
    ConfigError,
    ExperimentConfig,
    from_mapping,
    load_config,
)
from fedmap.simulator import SimulationConfig
from fedmap.synthetic import SCENARIOS, SyntheticConfig
from fedmap.training import LocalTraining

REPO = Path(__file__).resolve().parents[2]


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config(None)
    assert config == ExperimentConfig()
    assert config.synthetic == SyntheticConfig()
    assert config.simulation == SimulationConfig()
    assert config.simulation.training == LocalTraining()
    assert config.methods == {}
    assert config.benchmark == BenchmarkConfig()
    # the paper's generator constants (appendix B.1)
    s = config.synthetic
    assert (s.n_features, s.intrinsic_dim, s.val_fraction) == (30, 4, 0.3)
    assert (s.var_class0, s.radius_mean, s.radius_var, s.noise_var) == (2.0, 8.0, 2.0, 2.0)
    assert config.simulation.model == "mlp" and config.simulation.device == "cpu"
    assert config.benchmark.scenarios == SCENARIOS
    assert config.benchmark.methods == METHODS


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_yaml(tmp_path, "")) == ExperimentConfig()


def test_round_trip_sets_values(tmp_path: Path) -> None:
    path = _yaml(
        tmp_path,
        """
synthetic:
  noise_var: 9.0
  shift_scale: 2.5
simulation:
  rounds: 7
  model: mlp-bn
  training:
    epochs: 3
    batch_size: 16
    lr: 0.05
methods:
  fedmap:
    variance: 2.0
    input_variance: .inf
    weighting: samples
    warm_start: false
  fedprox:
    mu: 0.5
benchmark:
  scenarios: [label-skew]
  methods: [fedmap, individual]
  seeds: [3, 4]
  jobs: 1
""",
    )
    c = load_config(path)
    assert c.synthetic == SyntheticConfig(noise_var=9.0, shift_scale=2.5)
    assert c.simulation == SimulationConfig(
        rounds=7, model="mlp-bn", training=LocalTraining(epochs=3, batch_size=16, lr=0.05)
    )
    assert c.methods["fedmap"]["input_variance"] == math.inf
    fedmap = build_algorithm("fedmap", c.methods["fedmap"])
    assert isinstance(fedmap, FedMAP)
    assert (fedmap.variance, fedmap.weighting, fedmap.warm_start) == (2.0, "samples", False)
    fedprox = build_algorithm("fedprox", c.methods["fedprox"])
    assert isinstance(fedprox, FedProx) and fedprox.mu == 0.5
    assert c.benchmark == BenchmarkConfig(("label-skew",), ("fedmap", "individual"), (3, 4), 1)
    assert isinstance(c.benchmark.seeds, tuple)


def test_repository_params_yaml_loads() -> None:
    path = REPO / "params.yaml"
    if not path.is_file():
        pytest.skip("no params.yaml in this checkout")
    config = load_config(path)
    for name, options in config.methods.items():
        assert build_algorithm(name, options).name == name


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("foo: 1\n", "foo"),
        ("simulation:\n  rounds: 3\n  foo: 1\n", "simulation.foo"),
        ("simulation:\n  training:\n    foo: 1\n", "simulation.training.foo"),
        ("synthetic:\n  n_featuers: 10\n", "synthetic.n_featuers"),
        ("benchmark:\n  job: 3\n", "benchmark.job"),
    ],
)
def test_unknown_key_names_its_path(tmp_path: Path, text: str, key: str) -> None:
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError, match="unknown config key") as err:
        load_config(path)
    message = str(err.value)
    assert key in message
    assert str(path) in message


def test_unknown_method_option_names_method_and_option(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "methods:\n  fedmap:\n    variance: 1.0\n    bogus: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "methods.fedmap" in str(err.value)
    assert "bogus" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_method_and_bad_method_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"methods\.fedmapp"):
        load_config(_yaml(tmp_path, "methods:\n  fedmapp: {}\n"))
    with pytest.raises(ConfigError, match=r"methods\.fedmap.*variance"):
        load_config(_yaml(tmp_path, "methods:\n  fedmap:\n    variance: -1\n"))


def test_invalid_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"simulation.*rounds must be at least 1"):
        load_config(_yaml(tmp_path, "simulation:\n  rounds: 0\n"))
    with pytest.raises(ConfigError, match=r"simulation\.training.*invalid local training"):
        load_config(_yaml(tmp_path, "simulation:\n  training:\n    lr: 0\n"))
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_yaml(tmp_path, "a: [\n"))


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="simulation: expected a mapping, got int"):
        load_config(_yaml(tmp_path, "simulation: 5\n"))
    with pytest.raises(ConfigError, match=r"simulation\.training: expected a mapping, got list"):
        load_config(_yaml(tmp_path, "simulation:\n  training: [1, 2]\n"))
    with pytest.raises(ConfigError, match="<root>: expected a mapping"):
        from_mapping(ExperimentConfig, [1, 2])  # type: ignore[arg-type]


def test_tuple_field_given_a_scalar_int(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"benchmark\.seeds"):
        load_config(_yaml(tmp_path, "benchmark:\n  seeds: 3\n"))


def test_tuple_field_given_a_string(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "benchmark:\n  scenarios: label-skew\n")
    with pytest.raises(ConfigError, match=r"benchmark\.scenarios"):
        load_config(path)


def test_methods_given_a_list(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="methods"):
        load_config(_yaml(tmp_path, "methods: [fedmap]\n"))


def test_method_options_given_a_scalar(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"methods\.fedmap"):
        load_config(_yaml(tmp_path, "methods:\n  fedmap: 5\n"))


def test_the_error_and_the_reader_are_the_schemas() -> None:
    """One ConfigError: ``except ConfigError`` from either module catches a federation file's."""
    from fedmap import schema

    assert ConfigError is schema.ConfigError and from_mapping is schema.from_mapping
