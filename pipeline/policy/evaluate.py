"""Evaluate one compiled policy against one object, with the API server's semantics.

Order, as in Kubernetes: resource matching (policy, then binding), ``matchConditions``
(all must be true), then each validation in order. Variables are lazy: one is evaluated
only when a validation (or its message expression) needs it, in declaration order,
at most once per object. Errors fail closed: with ``failurePolicy: Fail`` an
expression that errors (a missing field, a non-bool result, a bad conversion) is a
violation whose message says the expression errored, never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.policy.cel import Outcome, activation
from pipeline.policy.vap import Binding, Policy, ResourceId, Validation, resource_of

OPERATION = "CREATE"


@dataclass(frozen=True)
class Finding:
    """One refusal (or warning) of one object by one policy."""

    policy: str
    binding: str
    actions: tuple[str, ...]
    message: str
    reason: str
    errored: bool = False

    @property
    def denies(self) -> bool:
        return "Deny" in self.actions


def admission_request(obj: Mapping[str, Any], rid: ResourceId) -> dict[str, Any]:
    """What ``request`` holds for a CREATE of ``obj`` by the PR check (no user, no dry run)."""
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    return {
        "kind": {"group": rid.group, "version": rid.version, "kind": rid.kind},
        "resource": {"group": rid.group, "version": rid.version, "resource": rid.resource},
        "requestKind": {"group": rid.group, "version": rid.version, "kind": rid.kind},
        "requestResource": {"group": rid.group, "version": rid.version,
                            "resource": rid.resource},
        "name": str(meta.get("name") or ""),
        "namespace": str(meta.get("namespace") or ""),
        "operation": OPERATION,
        "userInfo": {"username": "system:pipeline:policy-check", "groups": []},
        "dryRun": True,
    }


class _Context:
    """Per-object state: the activation data and lazily computed variables."""

    __slots__ = ("policy", "data", "values", "errors", "_activation", "_activation_size")

    def __init__(self, policy: Policy, obj: Mapping[str, Any], request: Mapping[str, Any]):
        self.policy = policy
        self.values: dict[str, Any] = {}
        self.errors: dict[int, str] = {}
        self.data = {"object": obj, "oldObject": None, "request": request, "params": None,
                     "variables": self.values}
        self._activation = activation(self.data)
        self._activation_size = 0

    def current(self) -> Any:
        """The activation for the variables computed so far (rebuilt only when they grew)."""
        size = len(self.values) + len(self.errors)
        if size != self._activation_size:
            self._activation = activation({**self.data, "variables": dict(self.values)})
            self._activation_size = size
        return self._activation

    def need(self, indexes: tuple[int, ...]) -> str | None:
        """Compute the variables at ``indexes`` (in order); the first error, if any."""
        for i in indexes:
            variable = self.policy.variables[i]
            if variable.name not in self.values and i not in self.errors:
                failed = next((j for j in variable.needs if j in self.errors), None)
                if failed is not None:
                    self.errors[i] = self.errors[failed]
                    continue
                outcome = variable.program.evaluate(self.current())
                if outcome.ok:
                    self.values[variable.name] = outcome.value
                else:
                    self.errors[i] = f"variable {variable.name!r} errored: {outcome.error}"
            if i in self.errors:
                return self.errors[i]
        return None


def _message(validation: Validation, ctx: _Context) -> str:
    if validation.message_program is not None:
        outcome = validation.message_program.evaluate(ctx.current())
        if outcome.ok and isinstance(outcome.value, str) and outcome.value.strip():
            return outcome.value.replace("\n", " ")
    if validation.message:
        return validation.message
    return f"failed expression: {validation.program.expression}"


def evaluate(
    policy: Policy, binding: Binding, obj: Mapping[str, Any],
    rid: ResourceId | None = None, request: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """Findings of ``policy`` (through ``binding``) for ``obj``; empty when it passes."""
    rid = rid or resource_of(obj)
    if not policy.match.matches(obj, rid, OPERATION):
        return []
    if not binding.match.matches(obj, rid, OPERATION):
        return []
    request = request if request is not None else admission_request(obj, rid)
    ctx = _Context(policy, obj, request)

    def failed(message: str, reason: str = "InternalError") -> list[Finding]:
        if policy.failure_policy == "Ignore":
            return []
        return [Finding(policy.name, binding.name, binding.actions, message, reason, True)]

    for condition in policy.match_conditions:
        outcome = condition.program.evaluate(ctx.current())
        if not outcome.ok:
            return failed(f"matchCondition {condition.name!r} errored: {outcome.error}")
        if not isinstance(outcome.value, bool):
            return failed(f"matchCondition {condition.name!r} returned {outcome.type_name}, "
                          "not bool")
        if not outcome.value:
            return []

    findings: list[Finding] = []
    for validation in policy.validations:
        error = ctx.need(validation.needs)
        outcome = Outcome(error=error) if error else validation.program.evaluate(ctx.current())
        expression = validation.program.expression
        if not outcome.ok:
            findings += failed(f"expression errored: {outcome.error} (in {expression!r})")
        elif not isinstance(outcome.value, bool):
            findings += failed(f"expression errored: returned {outcome.type_name}, not bool "
                               f"(in {expression!r})")
        elif not outcome.value:
            findings.append(Finding(policy.name, binding.name, binding.actions,
                                    _message(validation, ctx), validation.reason))
    return findings

