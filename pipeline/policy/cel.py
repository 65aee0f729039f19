"""The CEL engine: Google's cel-cpp through ``cel-expr-python``, set up like Kubernetes.

Why this library: it is the only Python CEL found whose semantics match the API
server's (errors inside ``all``/``exists``, ``has()`` on a missing parent is an error,
``.?`` optionals, compile-time checks). The environment declares what a
ValidatingAdmissionPolicy expression sees: ``object``, ``oldObject``, ``request``,
``params`` (always null: our policies have no paramKind) and ``variables``, with the
``optional`` and ``strings`` extensions that Kubernetes enables.

Two traps this module exists to close:

* a runtime error is *returned* as a value of type ERROR, never raised; every result
  goes through :func:`evaluate`, which turns it into an :class:`Outcome` with
  ``error`` set, and callers treat an error as a failure (fail closed);
* compile errors are raised as ``RuntimeError``; :func:`compile_expression` turns them
  into :class:`~pipeline.errors.ConfigError` naming the policy and the expression.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext.ext_optional import ExtOptional
from cel_expr_python.ext.ext_strings import ExtStrings

from pipeline.errors import ConfigError

#: The names every admission expression may use (Kubernetes' ValidatingAdmissionPolicy).
ROOT_VARIABLES = ("object", "oldObject", "request", "params", "variables")


@lru_cache(maxsize=1)
def environment() -> cel.Env:
    """The one shared CEL environment (built once: creating it costs milliseconds)."""
    dyn = cel.Type.DYN
    return cel.NewEnv(
        variables={
            "object": dyn,
            "oldObject": dyn,
            "request": dyn,
            "params": dyn,
            "variables": cel.Type.Map(cel.Type.STRING, dyn),
        },
        extensions=[ExtOptional(), ExtStrings()],
    )


@dataclass(frozen=True)
class Outcome:
    """The result of one evaluation: a plain Python ``value``, or ``error`` text."""

    value: Any = None
    error: str | None = None
    type_name: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class Program:
    """One compiled expression, evaluated many times against prepared activations."""

    __slots__ = ("expression", "label", "_compiled")

    def __init__(self, expression: str, label: str, compiled: cel.Expression) -> None:
        self.expression = expression
        self.label = label
        self._compiled = compiled

    def evaluate(self, activation: cel.Activation) -> Outcome:
        """Evaluate; an ERROR value (or an exception from the binding) becomes ``error``."""
        try:
            result = self._compiled.eval(activation)
            kind = result.type()
            if kind == cel.Type.ERROR:
                return Outcome(error=str(result.value()), type_name="error")
            if kind == cel.Type.BOOL:
                return Outcome(value=bool(result.value()), type_name="bool")
            return Outcome(value=result.plain_value(), type_name=kind.name())
        except Exception as exc:  # a conversion the binding refuses: fail closed
            return Outcome(error=f"{exc.__class__.__name__}: {exc}", type_name="error")


def compile_expression(expression: Any, label: str) -> Program:
    """Compile once; a syntax or type error is a ConfigError that names ``label``."""
    if not isinstance(expression, str) or not expression.strip():
        raise ConfigError(f"{label}: expression must be a non-empty string")
    try:
        compiled = environment().compile(expression)
    except Exception as exc:
        detail = str(exc).replace("\n", " ").strip()
        raise ConfigError(f"{label}: does not compile: {expression!r}: {detail}") from None
    return Program(expression, label, compiled)


def activation(data: Mapping[str, Any]) -> cel.Activation:
    """An activation over ``data``: values convert lazily, errors surface at evaluation."""
    return environment().Activation(dict(data))
