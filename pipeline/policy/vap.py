"""ValidatingAdmissionPolicy and its Binding as data: parsing, compiling, matching.

Why our own model and not the ``kubernetes`` client's: we need the policies compiled
once (every expression, with errors naming the policy), variable references resolved
(so variables can be evaluated lazily, in declaration order, only when a validation
needs them), and matching that works without an API server (Kind to resource from a
fixed table for the workload kinds). Everything a policy may contain that we cannot
honour offline is refused (``paramKind``) or documented (``namespaceSelector``: the
namespace's labels are unknown in a PR, so it is treated as matching: fail closed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.policy.cel import Program, compile_expression
from pipeline.policy.workloads import KINDS

API_VERSION = "admissionregistration.k8s.io/v1"
POLICY_KIND = "ValidatingAdmissionPolicy"
BINDING_KIND = "ValidatingAdmissionPolicyBinding"
_ACTIONS = {"Deny", "Warn", "Audit"}
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE_REF = re.compile(r"\bvariables\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")

#: Kind -> (group, resource) for the workload kinds (one table: pipeline.policy.workloads);
#: others use a plural heuristic.
KIND_RESOURCES: dict[str, tuple[str, str]] = {k.kind: (k.group, k.resource) for k in KINDS}


@dataclass(frozen=True)
class ResourceId:
    """What the API server would call an object: group/version/resource and kind."""

    group: str
    version: str
    resource: str
    kind: str


def resource_of(obj: Mapping[str, Any]) -> ResourceId:
    """The resource an object is stored as (table for workloads, plural heuristic else)."""
    api_version = str(obj.get("apiVersion", ""))
    group, _, version = api_version.rpartition("/")
    kind = str(obj.get("kind", ""))
    known = KIND_RESOURCES.get(kind)
    if known is not None and known[0] == group:
        return ResourceId(group, version, known[1], kind)
    return ResourceId(group, version, _plural(kind), kind)


def _plural(kind: str) -> str:
    lower = kind.lower()
    if lower.endswith("y") and lower[-2:-1] not in "aeiou":
        return lower[:-1] + "ies"
    if lower.endswith(("s", "x", "ch", "sh")):
        return lower + "es"
    return lower + "s"


@dataclass(frozen=True)
class Rule:
    """One ``resourceRules`` entry (a NamedRuleWithOperations)."""

    api_groups: tuple[str, ...]
    api_versions: tuple[str, ...]
    resources: tuple[str, ...]
    operations: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def matches(self, rid: ResourceId, operation: str, name: str) -> bool:
        def has(values: tuple[str, ...], value: str) -> bool:
            return "*" in values or value in values

        return (
            has(self.api_groups, rid.group)
            and has(self.api_versions, rid.version)
            and ("*/*" in self.resources or has(self.resources, rid.resource))
            and has(self.operations, operation)
            and (not self.resource_names or name in self.resource_names)
        )


@dataclass(frozen=True)
class Selector:
    """A label selector (matchLabels + matchExpressions); empty selects everything."""

    match_labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        for key, operator, values in self.expressions:
            present = key in labels
            if operator == "In" and not (present and labels[key] in values):
                return False
            if operator == "NotIn" and present and labels[key] in values:
                return False
            if operator == "Exists" and not present:
                return False
            if operator == "DoesNotExist" and present:
                return False
        return True


@dataclass(frozen=True)
class MatchResources:
    """``matchConstraints`` of a policy or ``matchResources`` of a binding."""

    rules: tuple[Rule, ...] = ()
    exclude: tuple[Rule, ...] = ()
    object_selector: Selector = field(default_factory=Selector)
    restricts: bool = False  # False: a binding without matchResources defers to the policy

    def matches(self, obj: Mapping[str, Any], rid: ResourceId, operation: str) -> bool:
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
        labels = meta.get("labels") if isinstance(meta, dict) else None
        if not self.object_selector.matches(labels if isinstance(labels, dict) else {}):
            return False
        if any(rule.matches(rid, operation, name) for rule in self.exclude):
            return False
        if not self.restricts:
            return True
        return any(rule.matches(rid, operation, name) for rule in self.rules)


@dataclass(frozen=True)
class Variable:
    name: str
    program: Program
    needs: tuple[int, ...]  # indexes of the variables it needs, transitively, in order


@dataclass(frozen=True)
class Validation:
    program: Program
    message: str | None
    message_program: Program | None
    reason: str
    needs: tuple[int, ...]


@dataclass(frozen=True)
class MatchCondition:
    name: str
    program: Program


@dataclass(frozen=True)
class Policy:
    """A compiled ValidatingAdmissionPolicy."""

    name: str
    source: str
    failure_policy: str
    match: MatchResources
    match_conditions: tuple[MatchCondition, ...]
    variables: tuple[Variable, ...]
    validations: tuple[Validation, ...]


@dataclass(frozen=True)
class Binding:
    """A ValidatingAdmissionPolicyBinding: which policy, which actions, which objects."""

    name: str
    policy_name: str
    actions: tuple[str, ...]
    match: MatchResources
    source: str


@dataclass
class PolicySet:
    """Policies and bindings of one policy directory, checked for consistency."""

    policies: dict[str, Policy] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)

    def bound(self) -> list[tuple[Policy, Binding]]:
        """(policy, binding) pairs in a stable order: what a cluster would enforce."""
        return [(self.policies[b.policy_name], b) for b in self.bindings]

    def unbound(self) -> list[str]:
        """Policies no binding refers to: not enforced by a cluster, so not by us."""
        used = {b.policy_name for b in self.bindings}
        return sorted(name for name in self.policies if name not in used)


# --------------------------------------------------------------------------- parsing


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of strings")
    return tuple(value)


def _rules(value: Any, where: str) -> tuple[Rule, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError(f"{where}: must be a list")
    out = []
    for i, raw in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{at}: must be a mapping")
        out.append(
            Rule(
                api_groups=_strings(raw.get("apiGroups"), f"{at}.apiGroups"),
                api_versions=_strings(raw.get("apiVersions"), f"{at}.apiVersions"),
                resources=_strings(raw.get("resources"), f"{at}.resources"),
                operations=_strings(raw.get("operations"), f"{at}.operations"),
                resource_names=_strings(raw.get("resourceNames"), f"{at}.resourceNames"),
            )
        )
    return tuple(out)


def _selector(value: Any, where: str) -> Selector:
    if value is None:
        return Selector()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping")
    labels = value.get("matchLabels") or {}
    if not isinstance(labels, dict):
        raise ConfigError(f"{where}.matchLabels: must be a mapping")
    exprs = []
    for i, raw in enumerate(value.get("matchExpressions") or []):
        at = f"{where}.matchExpressions[{i}]"
        if not isinstance(raw, dict) or raw.get("operator") not in (
            "In", "NotIn", "Exists", "DoesNotExist"
        ):
            raise ConfigError(f"{at}: needs key and operator In|NotIn|Exists|DoesNotExist")
        exprs.append((str(raw.get("key")), raw["operator"], _strings(raw.get("values"), at)))
    return Selector(tuple((str(k), str(v)) for k, v in labels.items()), tuple(exprs))


def _match(value: Any, where: str, *, required: bool) -> MatchResources:
    if value is None:
        if required:
            raise ConfigError(f"{where}: is required (resourceRules)")
        return MatchResources()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping")
    rules = _rules(value.get("resourceRules"), f"{where}.resourceRules")
    if required and not rules:
        raise ConfigError(f"{where}.resourceRules: at least one rule is required")
    return MatchResources(
        rules=rules,
        exclude=_rules(value.get("excludeResourceRules"), f"{where}.excludeResourceRules"),
        object_selector=_selector(value.get("objectSelector"), f"{where}.objectSelector"),
        restricts=bool(rules),
    )


def _refs(expression: str, known: Mapping[str, int], label: str) -> set[int]:
    refs: set[int] = set()
    for name in _VARIABLE_REF.findall(expression):
        if name not in known:
            raise ConfigError(f"{label}: refers to undeclared (or later) variable {name!r}")
        refs.add(known[name])
    return refs


def parse_policy(doc: Mapping[str, Any], source: str) -> Policy:
    """Compile one ValidatingAdmissionPolicy; ConfigError names the policy and the field."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: {POLICY_KIND} without metadata.name")
    where = f"policy {name!r} ({source})"
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: spec must be a mapping")
    if spec.get("paramKind") is not None:
        raise ConfigError(f"{where}: paramKind is not supported (params are always null)")
    failure = spec.get("failurePolicy", "Fail")
    if failure not in ("Fail", "Ignore"):
        raise ConfigError(f"{where}: failurePolicy must be Fail or Ignore")
    match = _match(spec.get("matchConstraints"), f"{where}: matchConstraints", required=True)

    conditions = []
    for i, raw in enumerate(spec.get("matchConditions") or []):
        label = f"{where}: matchConditions[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ConfigError(f"{label}: needs name and expression")
        if _VARIABLE_REF.search(str(raw.get("expression", ""))):
            raise ConfigError(f"{label}: matchConditions cannot use variables")
        conditions.append(
            MatchCondition(raw["name"], compile_expression(raw.get("expression"), label))
        )

    variables: list[Variable] = []
    index: dict[str, int] = {}
    for i, raw in enumerate(spec.get("variables") or []):
        label = f"{where}: variables[{i}]"
        vname = raw.get("name") if isinstance(raw, dict) else None
        if not isinstance(vname, str) or not _VARIABLE_NAME.match(vname) or vname in index:
            raise ConfigError(f"{label}: needs a unique identifier as name")
        expression = raw.get("expression")
        label = f"{where}: variable {vname!r}"
        program = compile_expression(expression, label)
        direct = _refs(expression, index, label)
        needs = set(direct)
        for ref in direct:
            needs.update(variables[ref].needs)
        variables.append(Variable(vname, program, tuple(sorted(needs))))
        index[vname] = i

    validations = []
    raw_validations = spec.get("validations")
    if not isinstance(raw_validations, list) or not raw_validations:
        raise ConfigError(f"{where}: validations must be a non-empty list")
    for i, raw in enumerate(raw_validations):
        label = f"{where}: validations[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{label}: must be a mapping")
        expression = raw.get("expression")
        program = compile_expression(expression, label)
        needs = _refs(expression, index, label)
        message_program = None
        if raw.get("messageExpression") is not None:
            mexpr = raw["messageExpression"]
            message_program = compile_expression(mexpr, f"{label}.messageExpression")
            needs |= _refs(mexpr, index, f"{label}.messageExpression")
        closure = set(needs)
        for ref in needs:
            closure.update(variables[ref].needs)
        message = raw.get("message")
        if message is not None and not isinstance(message, str):
            raise ConfigError(f"{label}.message: must be a string")
        validations.append(
            Validation(
                program, message, message_program, str(raw.get("reason") or "Invalid"),
                tuple(sorted(closure)),
            )
        )
    return Policy(
        name, source, failure, match, tuple(conditions), tuple(variables), tuple(validations)
    )


def parse_binding(doc: Mapping[str, Any], source: str) -> Binding:
    """One ValidatingAdmissionPolicyBinding (no paramRef: our policies take no params)."""
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: {BINDING_KIND} without metadata.name")
    where = f"binding {name!r} ({source})"
    spec = doc.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("policyName"), str):
        raise ConfigError(f"{where}: spec.policyName is required")
    if spec.get("paramRef") is not None:
        raise ConfigError(f"{where}: paramRef is not supported")
    actions = _strings(spec.get("validationActions"), f"{where}: validationActions")
    if not actions or not set(actions) <= _ACTIONS:
        raise ConfigError(f"{where}: validationActions must be a non-empty subset of "
                          "Deny, Warn, Audit")
    if "Deny" in actions and "Warn" in actions:
        raise ConfigError(f"{where}: Deny and Warn together are not allowed")
    match = _match(spec.get("matchResources"), f"{where}: matchResources", required=False)
    return Binding(name, spec["policyName"], actions, match, source)


def _policy_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml"))
    if path.is_file():
        return [path]
    raise ConfigError(f"{path}: policy directory or file does not exist")


def load_policies(paths: Path | str | Sequence[Path | str]) -> PolicySet:
    """Every VAP and binding under ``paths``; documents without ``apiVersion`` are skipped.

    The skip is what lets the image policy (policies/image-policy.yaml, its own format,
    no ``apiVersion``) live in the same directory. Any Kubernetes object of another
    kind there is a mistake, refused with ConfigError like every other policy error.
    """
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    result = PolicySet()
    for path in (f for item in items for f in _policy_files(Path(item))):
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"{path}: cannot read policy file: "
                              f"{str(exc).splitlines()[0] if str(exc) else exc}") from None
        for i, doc in enumerate(docs):
            source = f"{path}#{i}"
            if not isinstance(doc, dict) or "apiVersion" not in doc:
                continue
            kind = doc.get("kind")
            if doc.get("apiVersion") != API_VERSION or kind not in (POLICY_KIND, BINDING_KIND):
                raise ConfigError(f"{source}: expected {API_VERSION} {POLICY_KIND} or "
                                  f"{BINDING_KIND}, got {doc.get('apiVersion')} {kind}")
            if kind == POLICY_KIND:
                policy = parse_policy(doc, source)
                if policy.name in result.policies:
                    raise ConfigError(f"{source}: policy {policy.name!r} defined twice")
                result.policies[policy.name] = policy
            else:
                result.bindings.append(parse_binding(doc, source))
    for binding in result.bindings:
        if binding.policy_name not in result.policies:
            raise ConfigError(f"binding {binding.name!r} ({binding.source}): no policy named "
                              f"{binding.policy_name!r}")
    return result
