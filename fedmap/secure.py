"""Secure aggregation of the Gaussian prior's mean with CKKS homomorphic encryption (TenSEAL, the
library NVFlare's HE aggregation uses; no primitive here is our own).

The sites share one CKKS key pair (``generate``: one site makes it, the others get the secret
context over the consortium's own channel, as NVFlare's provisioning hands out startup kits).
The centre holds only the public context, which encrypts and adds but cannot decrypt.

A site sends Enc([N_k, D_k]): its release (``fedmap.dp``) flattened in the model's key order with
the denominator in the last slot. The centre adds the ciphertexts (``add``) and publishes
Enc([sum N_k, sum D_k]); each site decrypts that aggregate with the secret context
(``decrypt``) and forms mu' = mu + sum N_k / max(sum D_k, floor) itself. No ciphertext of one
site is ever decrypted: only sums are, and only at the sites.

Parameters: ring degree 8192, coefficient moduli [60, 40, 40, 60] bits, scale 2^40: about 128-bit
security (the homomorphic encryption standard's bound for 8192 is 218 bits of modulus), one
ciphertext per 4,096 values and a sum exact to about 1e-7 absolute (``docs/privacy.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedmap.messages import TensorSpec
from fedmap.params import Params

POLY_DEGREE = 8192
MODULI = (60, 40, 40, 60)
SCALE_BITS = 40
CIPHERTEXT = "ckks"
"""The one tensor (bytes as uint8) of an encrypted message: the serialised CKKS vector."""


class SecureError(ValueError):
    """A context or ciphertext that cannot be used; the message says why."""


@dataclass(frozen=True)
class Keys:
    """A CKKS key pair as bytes: ``secret`` (sites only) and ``public`` (the centre's)."""

    secret: bytes
    public: bytes


def _tenseal() -> Any:
    import tenseal

    return tenseal


def generate() -> Keys:
    """A fresh CKKS context: its serialised secret form and its public form (no secret key)."""
    ts = _tenseal()
    context = ts.context(ts.SCHEME_TYPE.CKKS, POLY_DEGREE, coeff_mod_bit_sizes=list(MODULI))
    context.global_scale = 2**SCALE_BITS
    secret = context.serialize(save_secret_key=True)
    context.make_context_public()
    return Keys(secret, context.serialize())


def public_of(secret: bytes) -> bytes:
    """The public context of a secret one (what a site that was sent only the secret gives the
    centre)."""
    context = secret_context(secret)
    context.make_context_public()
    return bytes(context.serialize())


def public_context(blob: bytes) -> Any:
    """The centre's context: refused if it holds a secret key (the centre must not decrypt)."""
    context = _load(blob)
    if not context.is_public():
        raise SecureError("the centre's CKKS context holds a secret key; give it the public one")
    return context


def secret_context(blob: bytes) -> Any:
    """A site's context, which must hold the secret key."""
    context = _load(blob)
    if context.is_public():
        raise SecureError("this CKKS context has no secret key: it is the centre's public one")
    return context


def _load(blob: bytes) -> Any:
    try:
        return _tenseal().context_from(blob)
    except Exception as exc:  # TenSEAL raises bare RuntimeError/ValueError on bad bytes
        raise SecureError(f"not a CKKS context: {exc}") from exc


def size(specs: Mapping[str, TensorSpec]) -> int:
    """Slots of one message: every value of the model, plus the denominator."""
    return sum(int(np.prod(s.shape)) for s in specs.values()) + 1


def flatten(params: Mapping[str, torch.Tensor], denominator: float) -> np.ndarray:
    """[N_k in sorted key order, D_k] as float64."""
    parts = [params[k].detach().double().cpu().reshape(-1).numpy() for k in sorted(params)]
    return np.concatenate([*parts, np.array([denominator])])


def unflatten(values: np.ndarray, specs: Mapping[str, TensorSpec]) -> tuple[Params, float]:
    """The inverse of ``flatten``, cast to each tensor's dtype."""
    out: Params = {}
    at = 0
    for key in sorted(specs):
        spec = specs[key]
        count = int(np.prod(spec.shape))
        chunk = torch.from_numpy(np.ascontiguousarray(values[at : at + count]))
        out[key] = chunk.reshape(spec.shape).to(getattr(torch, spec.dtype))
        at += count
    return out, float(values[at])


def encrypt(params: Mapping[str, torch.Tensor], denominator: float, context: Any) -> bytes:
    """Enc([N_k, D_k]) under the (public or secret) context, serialised."""
    vector = _tenseal().ckks_vector(context, flatten(params, denominator).tolist())
    return bytes(vector.serialize())


def ciphertext(blob: bytes, context: Any, expected: int) -> Any:
    """A ciphertext parsed and linked to context; SecureError if it is not a CKKS vector of
    ``expected`` slots under these parameters (a truncated or mangled upload). CKKS itself has
    no integrity check: a ciphertext with one bit flipped, or under another key, still parses
    and decrypts to garbage. Integrity comes from the message's signed SHA-256
    (``fedmap.signing``), checked before a ciphertext is parsed."""
    try:
        vector = _tenseal().ckks_vector_from(context, blob)
        slots = vector.size()
    except Exception as exc:
        raise SecureError(f"not a CKKS ciphertext under the federation's context: {exc}") from exc
    if slots != expected:
        raise SecureError(f"ciphertext holds {slots} values, the model needs {expected}")
    try:  # one at another scale or level parses, then breaks the sum: refuse it here
        _probe(context, expected) + vector
    except (ValueError, RuntimeError) as exc:
        raise SecureError(
            f"ciphertext cannot be added under the federation's context: {exc}"
        ) from exc
    return vector


_PROBES: dict[tuple[int, int], Any] = {}


def _probe(context: Any, expected: int) -> Any:
    """Enc(0) of ``expected`` slots under context, made once: what every ciphertext must add to."""
    key = (id(context), expected)
    if key not in _PROBES:
        _PROBES[key] = _tenseal().ckks_vector(context, [0.0] * expected)
    return _PROBES[key]


def add(blobs: Iterable[bytes], context: Any, expected: int) -> bytes:
    """Enc(sum_k [N_k, D_k]): the ciphertexts added one at a time (one held at once)."""
    total = None
    for blob in blobs:
        vector = ciphertext(blob, context, expected)
        total = vector if total is None else total + vector
    if total is None:
        raise SecureError("no ciphertext to add")
    return bytes(total.serialize())


def decrypt(blob: bytes, context: Any, specs: Mapping[str, TensorSpec]) -> tuple[Params, float]:
    """(sum N_k, sum D_k) from the encrypted aggregate, with the sites' secret context."""
    vector = ciphertext(blob, context, size(specs))
    try:
        values = np.asarray(vector.decrypt(), dtype=np.float64)
    except ValueError as exc:
        raise SecureError(f"cannot decrypt: {exc}") from exc
    return unflatten(values, specs)


def as_tensor(blob: bytes) -> torch.Tensor:
    """A ciphertext as the uint8 tensor a safetensors message carries."""
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


def from_tensor(tensor: torch.Tensor) -> bytes:
    return bytes(tensor.to(torch.uint8).cpu().numpy().tobytes())
