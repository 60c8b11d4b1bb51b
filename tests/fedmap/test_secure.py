"""CKKS secure aggregation (``fedmap.secure``, TenSEAL): the decrypted sum of the sites' encrypted
releases is the plaintext sum, the centre's public context cannot decrypt, a tampered, truncated
or mis-sized ciphertext is refused, and a site that drops out leaves a sum of those that sent."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from fedmap import secure
from fedmap.dp import Release, floor, private_mean, release, sum_releases
from fedmap.messages import TensorSpec, specs_of
from fedmap.params import Params
from fedmap.privacy import Privacy
from fedmap.secure import SecureError

pytestmark = pytest.mark.privacy

SITES = 5


@pytest.fixture(scope="module")
def keys() -> secure.Keys:
    return secure.generate()


@pytest.fixture(scope="module")
def centre(keys: secure.Keys) -> Any:
    return secure.public_context(keys.public)


@pytest.fixture(scope="module")
def site(keys: secure.Keys) -> Any:
    return secure.secret_context(keys.secret)


def _model(gen: torch.Generator, scale: float = 1.0) -> Params:
    """10,100 values over two tensors (three CKKS ciphertexts of 4,096 slots)."""
    return {
        "layer.weight": torch.randn(100, 100, generator=gen) * scale,
        "layer.bias": torch.randn(100, generator=gen) * scale,
    }


def _releases(
    privacy: Privacy, z: float, log_omegas: list[float], seed: int = 0
) -> tuple[Params, list[Params], list[Release]]:
    gen = torch.Generator().manual_seed(seed)
    mu = _model(gen)
    steps = [_model(gen, 0.05) for _ in log_omegas]
    thetas = [{k: v + step[k] for k, v in mu.items()} for step in steps]
    out = [release(t, mu, lo, privacy, z, gen) for t, lo in zip(thetas, log_omegas, strict=True)]
    return mu, thetas, out


def _max_error(got: Params, want: Params) -> tuple[float, float]:
    error = max(float((got[k].double() - want[k].double()).abs().max()) for k in want)
    scale = max(float(want[k].double().abs().max()) for k in want)
    return error, scale


def test_flatten_and_unflatten_round_trip() -> None:
    params = {
        "b": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "a": torch.tensor([7.5], dtype=torch.float64),
    }
    flat = secure.flatten(params, 0.25)
    np.testing.assert_array_equal(flat, [7.5, 0, 1, 2, 3, 4, 5, 0.25])  # sorted keys, D last
    specs = specs_of(params)
    assert secure.size(specs) == 8
    back, denominator = secure.unflatten(flat, specs)
    assert denominator == 0.25
    for k in params:
        assert back[k].dtype == params[k].dtype and torch.equal(back[k], params[k])


def test_the_secure_sum_is_the_plain_sum(site: Any, centre: Any) -> None:
    """Five sites under DP with omega weights: mu' from the decrypted aggregate is mu' from the
    plaintext sum of their releases, to CKKS's precision."""
    privacy = Privacy(epsilon=3.0, weights="omega", secure_aggregation="ckks", clip=0.5)
    mu, _, releases = _releases(privacy, 0.3, [-0.2, -1.0, -3.0, -0.5, -4.0])
    specs = specs_of(mu)
    blobs = [secure.encrypt(r.numerator, r.denominator, centre) for r in releases]
    total = secure.add(blobs, centre, secure.size(specs))
    numerator, denominator = secure.decrypt(total, site, specs)

    plain_numerator, plain_denominator = sum_releases(releases)
    assert denominator == pytest.approx(plain_denominator, abs=1e-6)
    assert plain_denominator > floor(privacy, SITES)  # the mean divides by the sum itself
    error, scale = _max_error(numerator, plain_numerator)
    assert error <= 1e-5 * scale, f"sum: max abs error {error:.3g} over values up to {scale:.3g}"
    got = private_mean(mu, numerator, denominator, SITES, privacy)
    want = private_mean(mu, plain_numerator, plain_denominator, SITES, privacy)
    error, scale = _max_error(got, want)
    assert error <= 1e-5 * scale, f"mean: max abs error {error:.3g} over values up to {scale:.3g}"
    assert error > 0  # the ciphertexts really were decrypted, not the plaintexts passed through
    for k in mu:
        assert got[k].dtype == mu[k].dtype and got[k].shape == mu[k].shape


def test_a_dropped_site_leaves_the_mean_of_those_that_sent(site: Any, centre: Any) -> None:
    """One site of five never uploads: the centre adds the four ciphertexts that came, and they
    decrypt to the omega-weighted mean of those four (no mask of the missing site to undo)."""
    privacy = Privacy(weights="omega", secure_aggregation="ckks", clip=1e6)
    log_omegas = [-0.2, -1.0, -3.0, -0.5, -4.0]
    mu, thetas, releases = _releases(privacy, 0.0, log_omegas, seed=1)
    specs = specs_of(mu)
    blobs = [secure.encrypt(r.numerator, r.denominator, centre) for r in releases]
    arrived = [0, 1, 3, 4]  # site 3 dropped out after the round began
    total = secure.add([blobs[k] for k in arrived], centre, secure.size(specs))
    numerator, denominator = secure.decrypt(total, site, specs)

    a = [math.exp(log_omegas[k]) for k in arrived]
    assert denominator == pytest.approx(sum(a), abs=1e-6)
    got = private_mean(mu, numerator, denominator, len(arrived), privacy)
    want = {
        k: torch.stack([w * thetas[j][k].double() for w, j in zip(a, arrived, strict=True)]).sum(0)
        / sum(a)
        for k in mu
    }
    error, scale = _max_error(got, want)
    assert error <= 1e-5 * scale, f"max abs error {error:.3g} over values up to {scale:.3g}"
    everyone = private_mean(mu, *sum_releases(releases), SITES, privacy)
    assert _max_error(everyone, want)[0] > 1e-3  # the missing site did change the mean


def test_the_centre_cannot_decrypt(keys: secure.Keys, centre: Any) -> None:
    specs = {"w": TensorSpec((10,), "float32")}
    blob = secure.encrypt({"w": torch.ones(10)}, 1.0, centre)
    with pytest.raises(SecureError, match="cannot decrypt"):
        secure.decrypt(blob, centre, specs)
    with pytest.raises(SecureError, match="holds a secret key"):
        secure.public_context(keys.secret)
    with pytest.raises(SecureError, match="no secret key"):
        secure.secret_context(keys.public)
    assert centre.is_public() and not secure.secret_context(keys.secret).is_public()


def test_a_context_that_is_not_one_is_refused() -> None:
    with pytest.raises(SecureError, match="not a CKKS context"):
        secure.public_context(b"not a context")
    with pytest.raises(SecureError, match="not a CKKS context"):
        secure.secret_context(b"")


@pytest.fixture(scope="module")
def upload(centre: Any) -> tuple[bytes, int]:
    params = _model(torch.Generator().manual_seed(2))
    return secure.encrypt(params, 0.5, centre), secure.size(specs_of(params))


@pytest.mark.parametrize("where", [0.5, 0.25, 0.75, 0.999])
def test_flipped_bytes_are_refused(centre: Any, upload: tuple[bytes, int], where: float) -> None:
    blob, slots = upload
    assert secure.ciphertext(blob, centre, slots).size() == slots
    tampered = bytearray(blob)
    at = int(len(blob) * where) - 16
    for i in range(at, at + 16):
        tampered[i] ^= 0xFF
    with pytest.raises(SecureError, match="not a CKKS ciphertext"):
        secure.ciphertext(bytes(tampered), centre, slots)
    with pytest.raises(SecureError, match="not a CKKS ciphertext"):
        secure.add([blob, bytes(tampered)], centre, slots)


@pytest.mark.parametrize("keep", [0.5, 0.999, 0.01])
def test_a_truncated_ciphertext_is_refused(
    centre: Any, upload: tuple[bytes, int], keep: float
) -> None:
    blob, slots = upload
    cut = blob[: int(len(blob) * keep)]
    with pytest.raises(SecureError, match="not a CKKS ciphertext"):
        secure.ciphertext(cut, centre, slots)
    with pytest.raises(SecureError, match="not a CKKS ciphertext"):
        secure.add([blob, cut], centre, slots)


def test_an_empty_upload_is_refused(centre: Any, upload: tuple[bytes, int]) -> None:
    blob, slots = upload
    with pytest.raises(SecureError):
        secure.add([blob, b""], centre, slots)


def test_another_model_s_ciphertext_names_both_sizes(
    centre: Any, upload: tuple[bytes, int]
) -> None:
    blob, slots = upload
    other = secure.encrypt({"w": torch.ones(50)}, 1.0, centre)
    with pytest.raises(SecureError, match=rf"holds 51 values, the model needs {slots}"):
        secure.add([blob, other], centre, slots)
    with pytest.raises(SecureError, match=rf"holds {slots} values, the model needs 51"):
        secure.ciphertext(blob, centre, 51)


def test_nothing_to_add(centre: Any) -> None:
    with pytest.raises(SecureError, match="no ciphertext"):
        secure.add([], centre, 3)


def test_a_ciphertext_travels_as_a_uint8_tensor(centre: Any, site: Any) -> None:
    blob = secure.encrypt({"w": torch.tensor([1.5, -2.0])}, 0.75, centre)
    tensor = secure.as_tensor(blob)
    assert tensor.dtype == torch.uint8 and tensor.numel() == len(blob)
    assert secure.from_tensor(tensor) == blob
    params, denominator = secure.decrypt(
        secure.from_tensor(tensor), site, {"w": TensorSpec((2,), "float32")}
    )
    assert denominator == pytest.approx(0.75, abs=1e-6)
    torch.testing.assert_close(params["w"], torch.tensor([1.5, -2.0]), atol=1e-6, rtol=0)


def test_a_ciphertext_at_another_scale_is_refused_before_it_breaks_the_sum() -> None:
    import tenseal as ts

    keys = secure.generate()
    context = secure.public_context(keys.public)
    other = secure.public_context(keys.public)
    other.global_scale = 2**30  # same key, same size: it parses, but cannot be added
    blob = bytes(ts.ckks_vector(other, [1.0] * 5).serialize())
    with pytest.raises(secure.SecureError, match="scale mismatch"):
        secure.ciphertext(blob, context, 5)
