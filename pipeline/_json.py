"""Strict JSON for untrusted documents: seal.json, AdmissionReviews, safetensors headers.

Why not plain :func:`json.loads`: it accepts documents that mean different things to
different readers, and it fails on hostile ones with exceptions no caller expects.

* Duplicate keys: ``{"size": 1, "size": 9}`` is 9 to Python and may be 1 to another
  reader, so a signer and a verifier can disagree about what was signed. Refused.
* Huge integers: ``int()`` of more than 4300 digits raises a bare ``ValueError``
  (CPython's limit against quadratic-time conversion), which escapes ``except
  JSONDecodeError``. No field of these formats holds more than 64 bits, so an integer
  longer than :data:`MAX_INT_DIGITS` is refused before it is converted.
* ``NaN`` and ``Infinity`` are not JSON (RFC 8259) but Python reads them. Refused, as are
  float literals that overflow to infinity.
* Deep nesting: ``[[[[...]]]]`` 5000 levels deep raises ``RecursionError`` inside the
  decoder, and a shallower document can still exhaust the recursive code that walks it
  later (CEL conversion, deep copies). Anything deeper than ``max_depth`` is refused.

Every refusal is an :class:`~pipeline.errors.InputError` (or the error class the caller
names: signatures are refused as :class:`~pipeline.errors.VerificationError`) whose
message starts with what was being read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from pipeline.errors import InputError, PipelineError

#: Longest integer literal accepted (2**64 has 20 digits; leave room for odd signed forms).
MAX_INT_DIGITS = 32
#: Deepest nesting accepted by default (a Kubernetes object is rarely deeper than 20).
MAX_DEPTH = 100


class _Refused(Exception):
    """Raised from inside a decoder hook; turned into the caller's error class."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {_short(key)}")
        out[key] = value
    return out


def _int(text: str) -> int:
    digits = len(text) - (text[0] == "-")
    if digits > MAX_INT_DIGITS:
        raise _Refused(f"integer of {digits} digits (at most {MAX_INT_DIGITS} are accepted)")
    return int(text)


def _float(text: str) -> float:
    if len(text) > 2 * MAX_INT_DIGITS + 16:
        raise _Refused(f"number literal of {len(text)} characters")
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(f"number {_short(text)} is out of range")
    return value


def _constant(name: str) -> Any:
    raise _Refused(f"{name} is not JSON")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests deeper than ``limit`` containers (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, (dict, list)))
    return False


def loads_strict(
    data: bytes | bytearray | memoryview | str,
    what: str,
    *,
    max_depth: int = MAX_DEPTH,
    error: type[PipelineError] = InputError,
) -> Any:
    """Parse ``data`` (UTF-8 JSON) or raise ``error("<what>: <why>")``; never anything else."""
    try:
        text = data if isinstance(data, str) else bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{what}: not valid JSON (not UTF-8)") from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_int=_int,
                           parse_float=_float, parse_constant=_constant)
    except _Refused as exc:
        raise error(f"{what}: {exc}") from None
    except RecursionError:
        raise error(f"{what}: nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                    f"{exc.colno})") from None
    except ValueError as exc:  # any other conversion failure of a literal
        raise error(f"{what}: not valid JSON ({exc.__class__.__name__})") from None
    if _depth_exceeds(value, max_depth):
        raise error(f"{what}: nested deeper than {max_depth} levels")
    return value


__all__ = ["MAX_DEPTH", "MAX_INT_DIGITS", "loads_strict"]
