"""What travels between a site and the server: a safetensors tensor file plus a JSON manifest.

Parameters are always safetensors (plain tensors, never a pickle that would run the sender's code
on load). The manifest describes the tensor file (sha256, names, shapes, dtypes) and carries the
scalars of a ``SiteUpdate`` (round, number of examples, log omega, aggregate metrics). It is written
after the tensor file and is the commit marker: a tensor file without a manifest is an unfinished
upload and is ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from fedmap.params import Params

Kind = Literal["prior", "update"]
MANIFEST_VERSION = 1


class MessageError(ValueError):
    """A tensor file or manifest that cannot be trusted; the message says why."""


@dataclass(frozen=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Manifest:
    """The JSON half of a message. ``site`` is empty for a prior."""

    kind: Kind
    round: int
    sha256: str
    tensors: Mapping[str, TensorSpec]
    site: str = ""
    num_examples: int = 0
    log_omega: float = 0.0
    metrics: Mapping[str, float] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Small, non-tensor facts about a prior (model name, seed site); never data."""
    federation: str = ""
    run: str = ""
    """The federation and run the message belongs to: signed, so it cannot be replayed in another."""
    nonce: str = ""
    """Random hex, fresh for every message: two signed messages are never byte-identical."""
    key_id: str = ""
    signature: str = ""
    """Ed25519 over every other field (``fedmap.signing.canonical``); empty when unsigned."""

    def to_json(self) -> str:
        return json.dumps(self.body(), indent=1, sort_keys=True, allow_nan=True) + "\n"

    def body(self) -> dict[str, Any]:
        """The manifest as a JSON object; what ``fedmap.signing`` signs, less the signature."""
        return {
            "version": MANIFEST_VERSION,
            "federation": self.federation,
            "run": self.run,
            "nonce": self.nonce,
            "key_id": self.key_id,
            "signature": self.signature,
            "kind": self.kind,
            "round": self.round,
            "site": self.site,
            "num_examples": self.num_examples,
            "log_omega": self.log_omega,
            "metrics": dict(self.metrics),
            "sha256": self.sha256,
            "tensors": {
                k: {"shape": list(v.shape), "dtype": v.dtype} for k, v in self.tensors.items()
            },
            "extra": dict(self.extra),
        }

    @staticmethod
    def from_json(text: str | bytes) -> Manifest:
        """Parse strictly: every field of the right type, numbers finite, at most 1 MB.

        Anything else, however malformed, is a MessageError and never an uncaught exception.
        """
        if len(text) > MAX_MANIFEST_BYTES:
            raise MessageError(f"manifest is {len(text)} bytes, more than {MAX_MANIFEST_BYTES}")
        try:
            body = json.loads(text)
            if not isinstance(body, dict):
                raise MessageError("manifest is not a JSON object")
            if body.get("version") != MANIFEST_VERSION:
                raise MessageError(f"unsupported manifest version {body.get('version')!r}")
            kind = body.get("kind")
            if kind not in ("prior", "update"):
                raise MessageError(f"unknown manifest kind {kind!r}")
            tensors_raw = _field(body, "tensors", dict)
            tensors = {}
            for name, spec in tensors_raw.items():
                if not isinstance(spec, dict):
                    raise MessageError(f"tensor {name!r}: spec must be an object")
                shape = _field(spec, "shape", list)
                if not all(_is_int(d) and d >= 0 for d in shape):
                    raise MessageError(f"tensor {name!r}: shape must be non-negative integers")
                tensors[str(name)] = TensorSpec(tuple(shape), _field(spec, "dtype", str))
            metrics = _field(body, "metrics", dict, {})
            return Manifest(
                kind=kind,
                round=_int(body, "round"),
                sha256=_field(body, "sha256", str),
                tensors=tensors,
                site=_field(body, "site", str, ""),
                num_examples=_int(body, "num_examples", 0),
                log_omega=_float(body, "log_omega", 0.0),
                metrics={str(k): _float(metrics, k) for k in metrics},
                extra=_field(body, "extra", dict, {}),
                federation=_field(body, "federation", str, ""),
                run=_field(body, "run", str, ""),
                nonce=_field(body, "nonce", str, ""),
                key_id=_field(body, "key_id", str, ""),
                signature=_field(body, "signature", str, ""),
            )
        except MessageError:
            raise
        except Exception as exc:  # a hostile file may trigger any parser error
            raise MessageError(f"malformed manifest: {type(exc).__name__}") from exc


MAX_MANIFEST_BYTES = 1 << 20
_MISSING = object()


def _field(body: Mapping[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    if key not in body:
        if default is _MISSING:
            raise MessageError(f"manifest lacks {key!r}")
        return default
    value = body[key]
    if not isinstance(value, kind):
        raise MessageError(f"manifest field {key!r} must be a {kind.__name__}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(body: Mapping[str, Any], key: str, default: Any = _MISSING) -> int:
    value = _field(body, key, object, default)
    if not _is_int(value):
        raise MessageError(f"manifest field {key!r} must be an integer")
    return int(value)


def _float(body: Mapping[str, Any], key: str, default: Any = _MISSING) -> float:
    value = _field(body, key, object, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MessageError(f"manifest field {key!r} must be a finite number")
    return float(value)


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def specs_of(params: Mapping[str, torch.Tensor]) -> dict[str, TensorSpec]:
    """Names, shapes and dtypes of params, as a manifest records them."""
    return {
        k: TensorSpec(tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in params.items()
    }


def encode_params(params: Mapping[str, torch.Tensor]) -> bytes:
    """safetensors bytes of params, moved to the CPU; identical params give identical bytes."""
    return st_save({k: v.detach().to("cpu").contiguous() for k, v in sorted(params.items())})


def decode_params(blob: bytes) -> Params:
    """Tensors from safetensors bytes; truncated or garbled bytes raise MessageError."""
    try:
        loaded = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise MessageError(f"unreadable safetensors file ({len(blob)} bytes): {exc}") from exc
    # the loader's dict order varies from call to call: fix it, and copy into memory we own
    return {k: loaded[k].clone() for k in sorted(loaded)}


def make_manifest(
    kind: Kind,
    round_: int,
    params: Mapping[str, torch.Tensor],
    blob: bytes,
    site: str = "",
    num_examples: int = 0,
    log_omega: float = 0.0,
    metrics: Mapping[str, float] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    return Manifest(
        kind,
        round_,
        sha256_hex(blob),
        specs_of(params),
        site,
        num_examples,
        log_omega,
        dict(metrics or {}),
        dict(extra or {}),
    )


def open_message(
    manifest: Manifest, blob: bytes, kind: Kind, round_: int, expected: Mapping[str, TensorSpec]
) -> Params:
    """Check a message against what the reader expects and return its tensors.

    Rejects, with the reason: another kind or round, a checksum mismatch, an unreadable (e.g.
    truncated) tensor file, names, shapes or dtypes that differ from the manifest or from
    ``expected``, and any NaN or inf value; for an update also a non-finite log omega and a
    non-positive number of examples.
    """
    if manifest.kind != kind:
        raise MessageError(f"manifest is a {manifest.kind}, expected a {kind}")
    if manifest.round != round_:
        raise MessageError(f"manifest is for round {manifest.round}, expected round {round_}")
    actual = sha256_hex(blob)
    if actual != manifest.sha256:
        raise MessageError(
            f"checksum mismatch: manifest {manifest.sha256[:12]}, file {actual[:12]}"
        )
    params = decode_params(blob)
    if specs_of(params) != dict(manifest.tensors):
        raise MessageError("tensor names, shapes or dtypes differ from the manifest")
    _check_specs(specs_of(params), expected)
    for name, value in params.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise MessageError(f"tensor {name!r} holds NaN or inf values")
    if kind == "update":
        if not math.isfinite(manifest.log_omega):
            raise MessageError(f"log omega is not finite ({manifest.log_omega})")
        if manifest.log_omega > 0:
            raise MessageError(
                f"log omega must be <= 0 (a mean log-likelihood minus a penalty), got {manifest.log_omega}"
            )
        if manifest.num_examples <= 0:
            raise MessageError(f"number of examples must be positive, got {manifest.num_examples}")
    return params


def _check_specs(actual: Mapping[str, TensorSpec], expected: Mapping[str, TensorSpec]) -> None:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        raise MessageError(f"tensor names differ: missing {missing}, unexpected {extra}")
    for name, spec in expected.items():
        got = actual[name]
        if got.shape != spec.shape:
            raise MessageError(
                f"tensor {name!r} has shape {list(got.shape)}, expected {list(spec.shape)}"
            )
        if got.dtype != spec.dtype:
            raise MessageError(f"tensor {name!r} has dtype {got.dtype}, expected {spec.dtype}")
