"""safetensors messages and their manifests: round trip, determinism, and every rejection."""

from __future__ import annotations

import math

import pytest
import torch

from fedmap.messages import (
    Manifest,
    MessageError,
    decode_params,
    encode_params,
    make_manifest,
    open_message,
    specs_of,
)


def params() -> dict[str, torch.Tensor]:
    return {
        "body.0.weight": torch.arange(6.0).reshape(2, 3),
        "body.0.bias": torch.tensor([0.5, -1.0]),
    }


def message(**kw: object) -> tuple[Manifest, bytes]:
    p = params()
    blob = encode_params(p)
    args: dict[str, object] = {"site": "site-01", "num_examples": 10, "log_omega": -0.3}
    args.update(kw)
    return make_manifest("update", 2, p, blob, **args), blob  # type: ignore[arg-type]


def test_encode_decode_round_trip_and_determinism() -> None:
    p = params()
    blob = encode_params(p)
    assert blob == encode_params(dict(reversed(list(p.items()))))  # key order does not matter
    back = decode_params(blob)
    assert set(back) == set(p)
    for k in p:
        assert torch.equal(back[k], p[k])
    assert not blob.startswith(b"\x80")  # not a pickle


def test_manifest_json_round_trip() -> None:
    manifest, _ = message(metrics={"train_nll": 0.25})
    back = Manifest.from_json(manifest.to_json())
    assert back == manifest
    assert back.tensors["body.0.weight"].shape == (2, 3)
    assert back.tensors["body.0.weight"].dtype == "float32"


def test_open_message_accepts_a_good_update() -> None:
    manifest, blob = message()
    out = open_message(manifest, blob, "update", 2, specs_of(params()))
    assert torch.equal(out["body.0.bias"], torch.tensor([0.5, -1.0]))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m, b: (m, b[: len(b) // 2]), "checksum mismatch"),
        (lambda m, b: (m, b[:-1] + b"\x00"), "checksum mismatch"),
        (lambda m, b: (Manifest(**{**m.__dict__, "round": 3}), b), "round 3, expected round 2"),
        (lambda m, b: (Manifest(**{**m.__dict__, "kind": "prior"}), b), "expected a update"),
        (lambda m, b: (Manifest(**{**m.__dict__, "log_omega": math.nan}), b), "log omega"),
        (lambda m, b: (Manifest(**{**m.__dict__, "num_examples": 0}), b), "number of examples"),
    ],
)
def test_open_message_rejects(mutate: object, reason: str) -> None:
    manifest, blob = message()
    bad_manifest, bad_blob = mutate(manifest, blob)  # type: ignore[operator]
    with pytest.raises(MessageError, match=reason):
        open_message(bad_manifest, bad_blob, "update", 2, specs_of(params()))


def test_truncated_file_with_matching_checksum_is_unreadable() -> None:
    p = params()
    blob = encode_params(p)[:-7]
    manifest = make_manifest("update", 2, p, blob, site="s", num_examples=1)
    with pytest.raises(MessageError, match="unreadable safetensors"):
        open_message(manifest, blob, "update", 2, specs_of(p))


def test_nan_and_inf_values_are_rejected() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        p = params()
        p["body.0.bias"][1] = bad
        blob = encode_params(p)
        manifest = make_manifest("update", 2, p, blob, site="s", num_examples=1)
        with pytest.raises(MessageError, match=r"'body\.0\.bias' holds NaN or inf"):
            open_message(manifest, blob, "update", 2, specs_of(params()))


def test_wrong_shape_and_missing_tensor_are_rejected() -> None:
    p = params()
    p["body.0.weight"] = torch.zeros(3, 2)
    blob = encode_params(p)
    manifest = make_manifest("update", 2, p, blob, site="s", num_examples=1)
    with pytest.raises(MessageError, match=r"shape \[3, 2\], expected \[2, 3\]"):
        open_message(manifest, blob, "update", 2, specs_of(params()))
    q = {"body.0.weight": params()["body.0.weight"]}
    blob = encode_params(q)
    manifest = make_manifest("update", 2, q, blob, site="s", num_examples=1)
    with pytest.raises(MessageError, match=r"missing \['body.0.bias'\]"):
        open_message(manifest, blob, "update", 2, specs_of(params()))


def test_wrong_dtype_is_rejected() -> None:
    p = {k: v.double() for k, v in params().items()}
    blob = encode_params(p)
    manifest = make_manifest("update", 2, p, blob, site="s", num_examples=1)
    with pytest.raises(MessageError, match="dtype float64, expected float32"):
        open_message(manifest, blob, "update", 2, specs_of(params()))


def test_manifest_that_disagrees_with_its_file_is_rejected() -> None:
    manifest, blob = message()
    lying = Manifest(**{**manifest.__dict__, "tensors": specs_of({"x": torch.zeros(1)})})
    with pytest.raises(MessageError, match="differ from the manifest"):
        open_message(lying, blob, "update", 2, specs_of(params()))


@pytest.mark.parametrize(
    "text", ["not json", "{}", '{"version": 1, "kind": "weird"}', '{"version": 9}']
)
def test_malformed_manifests_raise_message_error(text: str) -> None:
    with pytest.raises(MessageError):
        Manifest.from_json(text)


def test_decode_returns_names_in_sorted_order_and_owned_memory() -> None:
    blob = encode_params(params())
    for _ in range(5):
        out = decode_params(blob)
        assert list(out) == sorted(out)
    out["body.0.bias"][0] = 7.0  # writable: the tensors do not alias the bytes object
    assert decode_params(blob)["body.0.bias"][0] == 0.5
