"""The image verification policy: which images need which signers and attestations.

One object answers the question at PR time, before promotion and in the
admission webhook, so the three can never disagree. It fails closed:

* an image that matches no rule is denied (unless the policy says
  ``default: allow``);
* a reference without a digest is denied (admission must pin what runs), unless
  the caller asks to resolve tags, and then the digest is resolved once and used
  for every check, so a tag moving mid-evaluation cannot mix two images;
* every matching rule must pass; any error (unreachable registry, malformed
  signature) is a denial with its reason, never a pass.

Format (YAML, see policies/image-policy.yaml)::

    version: 1
    default: deny              # deny | allow, for images no rule matches
    requireDigest: true        # refuse tag-only references
    rules:
      - name: team
        images: ["registry.example/team/*"]   # '*' within a path segment, '**' across
        mode: enforce                         # enforce (deny) | warn | audit (allow, warn,
                                              # count the would-be denial)
        namespaces: [team-a]                  # optional: only for pods in these namespaces
        authorities:
          - key: keys/release.pub             # path (relative to this file, $VARS
                                              # expanded) or inline PEM
          - keyless: {issuer: "https://...", subject: "^https://github.com/org/.*$"}
        threshold: 1                          # distinct authorities that must have signed
        identity: "*"                         # optional docker-reference expectation
        attestations:
          - type: slsaprovenance              # slsaprovenance | cyclonedx | vuln | URI
            conditions:
              - {path: predicate.buildDefinition.buildType, equals: "https://..."}

    trustRoot:                # for keyless authorities (else they never count)
      fulcio: [keys/fulcio-root.pem]          # CA certificates (PEM)
      rekor: [keys/rekor.pub]                 # transparency-log public keys (PEM)
      requireTlog: true                       # default; false = cosign's
                                              # --insecure-ignore-tlog

A file may hold several YAML documents: at most one of ours without
``metadata.namespace`` (it carries ``default``, ``requireDigest`` and ``trustRoot``),
ours with ``metadata: {namespace: N}`` (their rules apply only in N), sigstore
policy-controller ``ClusterImagePolicy`` documents (mapped onto these rules by
:mod:`pipeline.policy.cluster_image_policy`) and ``ClusterModelPolicy`` documents (the
models pods load, :mod:`pipeline.policy.model_policy`). See docs/policies.md.

Keyless authorities are verified against the local ``trustRoot`` (Sigstore's TUF
repository is not reachable here; see pipeline.signing.keyless). Without one they
are parsed and validated but never satisfied (fail closed). Attestations are
verified against the rule's keys.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, InputError, PipelineError
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions, open_client, resolve_digest
from pipeline.signing import Identity, TrustRoot, VerifyKey, intoto, load_verify_key

_TOP_KEYS = {"version", "default", "requireDigest", "rules", "apiVersion", "kind", "trustRoot",
             "metadata", "models"}
_TRUST_ROOT_KEYS = {"fulcio", "rekor", "requireTlog"}
_RULE_KEYS = {"name", "images", "authorities", "threshold", "identity", "attestations", "mode",
              "namespaces"}
#: ``mode`` of a rule: enforce denies; warn and audit allow, answer a warning and count it.
MODES = ("enforce", "warn", "audit")
_ATTESTATION_KEYS = {"type", "conditions", "threshold"}
_CONDITION_TESTS = {"equals", "in", "matches", "exists"}


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """``*`` matches within one path segment, ``**`` across segments, ``?`` one character."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
        index += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class KeylessAuthority:
    """A Fulcio certificate identity (issuer + subject regex); needs the policy's trustRoot."""

    issuer: str
    subject: str


@dataclass(frozen=True)
class AttestationRequirement:
    """Statements of one predicate type, signed by the rule's keys, meeting every test.

    ``policy`` (ClusterImagePolicy ``attestations[].policy``): a compiled policy with
    ``check(statement) -> str | None`` (None: compliant, else why not); at least one
    verified statement must satisfy it.
    """

    predicate_type: str
    conditions: tuple[Mapping[str, Any], ...] = ()
    threshold: int = 1
    policy: Any = field(default=None, compare=False)
    name: str = ""


@dataclass(frozen=True)
class Authority:
    """One ``authorities[]`` entry of a ClusterImagePolicy: any one of them admits.

    With ``attestations`` only those are checked (policy-controller's rule); without, a
    signature by one of ``keys``/``keyless``. ``static``: ``pass`` admits, ``fail`` denies
    with ``message``, without looking at the registry.
    """

    name: str
    keys: tuple[VerifyKey, ...] = ()
    keyless: tuple[KeylessAuthority, ...] = ()
    attestations: tuple[AttestationRequirement, ...] = ()
    static: str | None = None
    message: str = ""


@dataclass(frozen=True)
class Rule:
    """One rule: images it covers, who must sign, which attestations must exist."""

    name: str
    images: tuple[str, ...]
    keys: tuple[VerifyKey, ...] = ()
    keyless: tuple[KeylessAuthority, ...] = ()
    threshold: int = 1
    identity: str | None = None
    attestations: tuple[AttestationRequirement, ...] = ()
    mode: str = "enforce"
    #: Empty: every namespace; else only pods (objects) in one of these.
    namespaces: tuple[str, ...] = ()
    #: A ClusterImagePolicy's authorities (any one passes); then keys/keyless are unused.
    alternatives: tuple[Authority, ...] = ()
    #: Globs also match ``name@digest`` / ``name:tag`` (policy-controller matches the
    #: whole reference, so ``**demo**`` or ``repo@*`` mean what they say there).
    match_reference: bool = False
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def matches(self, ref: Reference) -> bool:
        name = _match_name(ref.registry, ref.repository)
        if any(p.fullmatch(name) for p in self._patterns):
            return True
        if not self.match_reference:
            return False
        full = f"{name}@{ref.digest}" if ref.digest else f"{name}:{ref.tag or 'latest'}"
        return any(p.fullmatch(full) for p in self._patterns)

    def applies_in(self, namespace: str | None) -> bool:
        """A namespaced rule applies only in its namespaces; ``None`` (unknown) applies all."""
        return not self.namespaces or namespace is None or namespace in self.namespaces

    @property
    def enforcing(self) -> bool:
        return self.mode == "enforce"


#: Hosts that serve exactly what docker.io names (the registry client talks to the first).
_DOCKER_HUB_ALIASES = frozenset({"registry-1.docker.io", "index.docker.io"})


def _canonical_registry(registry: str) -> str:
    """One spelling per registry: host names are case-insensitive, ``:443`` is HTTPS's default.

    Without this, ``REG.example/team/app`` or ``reg.example:443/team/app`` (the same
    registry, the same images) would escape a rule for ``reg.example/team/*`` and, under
    ``default: allow``, run unverified.
    """
    registry = registry.lower()
    if registry.endswith(":443"):
        registry = registry[: -len(":443")]
    return "docker.io" if registry in _DOCKER_HUB_ALIASES else registry


def _match_name(registry: str, repository: str) -> str:
    return f"{_canonical_registry(registry)}/{repository}"


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    registry, sep, rest = pattern.partition("/")
    return glob_to_regex(f"{_canonical_registry(registry)}{sep}{rest}")


@dataclass
class PolicyResult:
    """The decision, with every reason (for denials, and what passed, for audits)."""

    allowed: bool
    reasons: list[str]
    reference: str
    digest: str | None = None
    rules: list[str] = field(default_factory=list)
    #: Rules in warn/audit mode that would have denied: ``(rule name, why)``.
    would_deny: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "reference": self.reference,
            "digest": self.digest,
            "rules": list(self.rules),
            "wouldDeny": [{"rule": rule, "reason": why} for rule, why in self.would_deny],
        }


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _fail(where, "must be a positive integer")
    return value


def _unknown(mapping: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(mapping) - allowed
    if extra:
        # Strict on purpose: a misspelt 'treshold' must not silently mean 1.
        raise _fail(where, f"unknown field(s) {', '.join(sorted(extra))}")


def _parse_authorities(raw: Any, where: str, base: Path) -> tuple[list, list]:
    if not isinstance(raw, list) or not raw:
        raise _fail(where, "'authorities' must be a non-empty list")
    keys: list[VerifyKey] = []
    keyless: list[KeylessAuthority] = []
    for index, entry in enumerate(raw):
        here = f"{where}.authorities[{index}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise _fail(here, "must be {key: ...} or {keyless: {issuer, subject}}")
        if "key" in entry:
            value = entry["key"]
            if not isinstance(value, str) or not value.strip():
                raise _fail(here, "'key' must be a path or inline PEM")
            if "-----BEGIN" in value:
                source = value
            else:
                expanded = os.path.expandvars(value)
                if "$" in expanded:
                    raise _fail(here, f"environment variable in {value!r} is not set")
                source = str((base / expanded).expanduser())
            try:
                keys.append(load_verify_key(source))
            except PipelineError as exc:
                raise _fail(here, str(exc)) from None
        elif "keyless" in entry:
            spec = entry["keyless"]
            if not isinstance(spec, dict) or not {"issuer", "subject"} <= set(spec):
                raise _fail(here, "'keyless' needs 'issuer' and 'subject'")
            _unknown(spec, {"issuer", "subject"}, here)
            try:
                re.compile(str(spec["subject"]))
            except re.error as exc:
                raise _fail(here, f"subject is not a valid regex: {exc}") from None
            keyless.append(KeylessAuthority(str(spec["issuer"]), str(spec["subject"])))
        else:
            raise _fail(here, "must be {key: ...} or {keyless: {issuer, subject}}")
    return keys, keyless


def _parse_attestations(raw: Any, where: str) -> list[AttestationRequirement]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(where, "'attestations' must be a list")
    out = []
    for index, entry in enumerate(raw):
        here = f"{where}.attestations[{index}]"
        if not isinstance(entry, dict) or "type" not in entry:
            raise _fail(here, "needs a 'type'")
        _unknown(entry, _ATTESTATION_KEYS, here)
        try:
            type_uri = intoto.resolve_predicate_type(str(entry["type"]))
        except InputError as exc:
            raise _fail(here, str(exc)) from None
        conditions = entry.get("conditions") or []
        if not isinstance(conditions, list):
            raise _fail(here, "'conditions' must be a list")
        for number, condition in enumerate(conditions):
            spot = f"{here}.conditions[{number}]"
            if not isinstance(condition, dict) or not isinstance(condition.get("path"), str):
                raise _fail(spot, "needs a 'path'")
            tests = set(condition) - {"path"}
            if len(tests) != 1 or not tests <= _CONDITION_TESTS:
                raise _fail(spot, f"needs exactly one of {', '.join(sorted(_CONDITION_TESTS))}")
            if "matches" in condition:
                try:
                    re.compile(str(condition["matches"]))
                except re.error as exc:
                    raise _fail(spot, f"invalid regex: {exc}") from None
        threshold = _positive_int(entry.get("threshold", 1), f"{here}.threshold")
        out.append(AttestationRequirement(type_uri, tuple(conditions), threshold))
    return out


def _parse_rule(raw: Any, index: int, base: Path, scope: Sequence[str] = ()) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(raw, dict):
        raise _fail(where, "must be a mapping")
    _unknown(raw, _RULE_KEYS, where)
    name = str(raw.get("name") or f"rule-{index}")
    where = f"rules[{index}] ({name})"
    images = raw.get("images")
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
        raise _fail(where, "'images' must be a non-empty list of glob patterns")
    keys, keyless = _parse_authorities(raw.get("authorities"), where, base)
    threshold = _positive_int(raw.get("threshold", 1), f"{where}.threshold")
    if threshold > len(keys) + len(keyless):
        raise _fail(where, f"threshold {threshold} exceeds the {len(keys) + len(keyless)} "
                           "authorities listed")
    identity = raw.get("identity")
    if identity is not None and not isinstance(identity, str):
        raise _fail(where, "'identity' must be a string")
    mode = raw.get("mode", "enforce")
    if mode not in MODES:
        raise _fail(where, f"'mode' must be one of {', '.join(MODES)}, not {mode!r}")
    namespaces = raw.get("namespaces", [])
    if isinstance(namespaces, str):
        namespaces = [namespaces]
    if not isinstance(namespaces, list) or not all(isinstance(n, str) and n
                                                   for n in namespaces):
        raise _fail(where, "'namespaces' must be a list of namespace names")
    namespaces = sorted({*namespaces, *scope})
    if scope and set(namespaces) != set(scope):
        raise _fail(where, f"'namespaces' {namespaces} reach outside this document's "
                           f"namespace {scope[0]!r}")
    return Rule(
        name=name,
        images=tuple(images),
        keys=tuple(keys),
        keyless=tuple(keyless),
        threshold=threshold,
        identity=identity,
        attestations=tuple(_parse_attestations(raw.get("attestations"), where)),
        mode=mode,
        namespaces=tuple(namespaces),
        _patterns=tuple(_pattern_regex(p) for p in images),
    )


def _parse_trust_root(raw: Any, base: Path) -> TrustRoot | None:
    if raw is None:
        return None
    where = "image policy: trustRoot"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    _unknown(raw, _TRUST_ROOT_KEYS, where)
    paths: dict[str, list[str]] = {}
    for name in ("fulcio", "rekor"):
        value = raw.get(name, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{name}: must be a list of PEM file paths")
        paths[name] = [str((base / os.path.expandvars(v)).expanduser()) for v in value]
    require_tlog = raw.get("requireTlog", True)
    if not isinstance(require_tlog, bool):
        raise ConfigError(f"{where}.requireTlog: must be true or false")
    try:
        return TrustRoot.load(paths["fulcio"], paths["rekor"], require_tlog=require_tlog)
    except PipelineError as exc:
        raise ConfigError(f"{where}: {exc}") from None


class ImagePolicy:
    """A loaded policy; :meth:`evaluate` is the one decision function."""

    def __init__(
        self,
        rules: Sequence[Rule],
        *,
        default_allow: bool = False,
        require_digest: bool = True,
        trust_root: TrustRoot | None = None,
        models: Any | None = None,
    ) -> None:
        self.rules = list(rules)
        self.default_allow = default_allow
        self.require_digest = require_digest
        self.trust_root = trust_root
        #: The model policy (:class:`pipeline.policy.model_policy.ModelPolicy`) or None.
        self.models = models

    @property
    def namespaced(self) -> bool:
        """True when a verdict depends on the namespace (a rule applies only in some)."""
        return any(rule.namespaces for rule in self.rules)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: Path | None = None) -> ImagePolicy:
        """Build from one parsed document of ours; relative key paths resolve against ``base``."""
        return cls.from_documents([data], base)

    @classmethod
    def from_documents(cls, documents: Sequence[Any], base: Path | None = None) -> ImagePolicy:
        """Build from several documents: ours, ClusterImagePolicy, ClusterModelPolicy.

        Rules keep the order of the documents. Exactly one document of ours (the one
        without ``metadata.namespace``) may carry the settings; with none, the defaults
        hold (``default: deny``, ``requireDigest: true``, no trustRoot).
        """
        from pipeline.policy import cluster_image_policy, model_policy

        base = base or Path.cwd()
        rules: list[Rule] = []
        settings: tuple[int, Mapping[str, Any]] | None = None
        model_documents: list[tuple[int, Mapping[str, Any]]] = []
        for number, data in enumerate(documents):
            where = f"document {number}" if len(documents) > 1 else "image policy"
            if data is None:
                continue
            if not isinstance(data, dict):
                raise ConfigError(f"{where}: expected a mapping")
            if cluster_image_policy.is_cluster_image_policy(data):
                rules.extend(cluster_image_policy.to_rules(data, where, base))
                continue
            if model_policy.is_model_policy(data):
                model_documents.append((number, data))
                continue
            _unknown(data, _TOP_KEYS, where)
            scope = _document_namespace(data, where)
            if scope:
                extra = set(data) & {"default", "requireDigest", "trustRoot", "models"}
                if extra:
                    raise ConfigError(f"{where}: {', '.join(sorted(extra))} can only be set in "
                                      "the document without metadata.namespace")
            elif settings is not None:
                raise ConfigError(f"{where}: a second image-policy document without "
                                  f"metadata.namespace (the first is document {settings[0]}); "
                                  "give it a namespace or merge the two")
            else:
                settings = (number, data)
            version = data.get("version", 1)
            if version != 1:
                raise ConfigError(f"{where}: unsupported version {version!r} (expected 1)")
            raw_rules = data.get("rules") or []
            if not isinstance(raw_rules, list):
                raise ConfigError(f"{where}: 'rules' must be a list")
            for index, rule in enumerate(raw_rules):
                try:
                    rules.append(_parse_rule(rule, index, base, scope))
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}" if len(documents) > 1 else str(exc)
                                      ) from None
        top = settings[1] if settings else {}
        default = top.get("default", "deny")
        if default not in ("deny", "allow"):
            raise ConfigError("image policy: 'default' must be 'deny' or 'allow'")
        require_digest = top.get("requireDigest", True)
        if not isinstance(require_digest, bool):
            raise ConfigError("image policy: 'requireDigest' must be true or false")
        trust_root = _parse_trust_root(top.get("trustRoot"), base)
        models = model_policy.build(top.get("models"), model_documents, base)
        return cls(rules, default_allow=default == "allow", require_digest=require_digest,
                   trust_root=trust_root, models=models)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ImagePolicy:
        """Load a policy file of one or more documents (ConfigError names what is wrong)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"image policy not found: {path}")
        try:
            documents = _read_documents(path)
            return cls.from_documents(documents, path.parent)
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}"
                              ) from None

    def rules_for(self, image_ref: str | Reference, namespace: str | None = None) -> list[Rule]:
        """The rules whose patterns match the image's ``registry/repository`` (and namespace)."""
        ref = image_ref if isinstance(image_ref, Reference) else Reference.parse(image_ref)
        return [rule for rule in self.rules if rule.matches(ref) and rule.applies_in(namespace)]

    def evaluate(
        self,
        image_ref: str | Reference,
        registry_options: RegistryOptions | None = None,
        *,
        resolve: bool = False,
        client: Any | None = None,
        namespace: str | None = None,
    ) -> PolicyResult:
        """Decide whether ``image_ref`` may run; never raises for a deniable problem.

        ``namespace``: where the pod runs; rules of other namespaces do not apply. None
        (not known, e.g. a manifest without one) applies every rule (the stricter answer).
        A failing rule in warn/audit mode allows, and says so in ``would_deny``.
        """
        text = str(image_ref)
        try:
            ref = image_ref if isinstance(image_ref, Reference) else Reference.parse(image_ref)
        except InputError as exc:
            return PolicyResult(False, [str(exc)], text)
        rules = self.rules_for(ref, namespace)
        if not rules:
            if self.default_allow:
                return PolicyResult(True, ["no rule matches; policy default is allow"], text,
                                    ref.digest)
            return PolicyResult(False, [f"no policy rule matches {ref.name} (default deny)"],
                                text, ref.digest)
        names = [r.name for r in rules]
        if not ref.digest and self.require_digest and not resolve:
            return PolicyResult(
                False, [f"{ref}: tag-only reference refused: pin the image by digest"], text,
                None, names,
            )
        reasons: list[str] = []
        would_deny: list[tuple[str, str]] = []
        allowed = True
        digest = ref.digest
        try:
            with open_client(ref, client, registry_options) as registry:
                if not digest:
                    digest = resolve_digest(registry, ref)
                    reasons.append(f"resolved {ref} to {digest}")
                pinned = ref.with_digest(digest)
                for rule in rules:
                    ok, why = self._check_rule(rule, pinned, registry, self.trust_root)
                    reasons.extend(why)
                    if not ok and not rule.enforcing:
                        would_deny.append((rule.name, "; ".join(why) or "refused"))
                    elif not ok:
                        allowed = False
        except PipelineError as exc:
            # The registry failed: every matching rule fails; only an all-warn set allows.
            if all(not rule.enforcing for rule in rules):
                return PolicyResult(True, [*reasons, str(exc)], text, digest, names,
                                    [(rule.name, str(exc)) for rule in rules])
            return PolicyResult(False, [*reasons, str(exc)], text, digest, names)
        return PolicyResult(allowed, reasons, text, digest, names, would_deny)

    @classmethod
    def _check_rule(
        cls, rule: Rule, ref: Reference, registry: Any, trust_root: TrustRoot | None = None
    ) -> tuple[bool, list[str]]:
        prefix = f"rule {rule.name}"
        if rule.alternatives:
            return cls._check_alternatives(rule, ref, registry, trust_root)
        ok, reasons, checked = _check_signers(prefix, rule.keys, rule.keyless, rule.threshold,
                                              rule.identity, ref, registry, trust_root)
        if not checked:
            return False, reasons
        for requirement in rule.attestations:
            passed, why = _check_attestation(prefix, requirement, rule.keys, ref, registry)
            ok = ok and passed
            reasons.append(why)
        return ok, reasons

    @staticmethod
    def _check_alternatives(
        rule: Rule, ref: Reference, registry: Any, trust_root: TrustRoot | None
    ) -> tuple[bool, list[str]]:
        """policy-controller's rule: the policy passes when any one authority passes."""
        failures: list[str] = []
        for authority in rule.alternatives:
            prefix = f"rule {rule.name}: authority {authority.name}"
            if authority.static is not None:
                if authority.static == "pass":
                    return True, [f"{prefix}: static pass"]
                failures.append(f"{prefix}: disallowed by static policy"
                                + (f": {authority.message}" if authority.message else ""))
                continue
            if authority.attestations:
                results = [_check_attestation(prefix, requirement, authority.keys, ref, registry)
                           for requirement in authority.attestations]
                if all(passed for passed, _ in results):
                    return True, [why for _, why in results]
                failures.extend(why for passed, why in results if not passed)
                continue
            ok, reasons, _ = _check_signers(prefix, authority.keys, authority.keyless, 1, None,
                                            ref, registry, trust_root)
            if ok:
                return True, reasons
            failures.extend(reasons)
        return False, [f"rule {rule.name}: no authority passed", *failures]


def _check_signers(
    prefix: str, keys: Sequence[VerifyKey], keyless: Sequence[KeylessAuthority],
    threshold: int, identity: str | None, ref: Reference, registry: Any,
    trust_root: TrustRoot | None,
) -> tuple[bool, list[str], bool]:
    """Signatures by ``threshold`` distinct authorities (keys, and keyless with a trustRoot).

    The third value is False when the threshold cannot be met at all (nothing checked).
    """
    from pipeline.signing.image import verify_image

    reasons: list[str] = []
    identities = [Identity(a.issuer, a.subject) for a in keyless] if trust_root else []
    if keyless and not trust_root:
        reasons.append(f"{prefix}: {len(keyless)} keyless authority(ies) cannot be "
                       "verified without a trustRoot (Fulcio CA, Rekor key): not counted")
    verifiable = len(keys) + len(identities)
    if not verifiable or threshold > verifiable:
        return False, [*reasons, f"{prefix}: threshold {threshold} cannot be met by "
                                 f"{verifiable} verifiable authority(ies)"], False
    try:
        result = verify_image(ref, list(keys), threshold=threshold, identity=identity,
                              client=registry, keyless=identities, trust_root=trust_root)
    except PipelineError as exc:
        return False, [*reasons, f"{prefix}: signature: {exc}"], True
    return True, [*reasons, f"{prefix}: signed by {len(result['signers'])} trusted signer(s) "
                            f"(threshold {threshold})"], True


def _check_attestation(
    prefix: str, requirement: AttestationRequirement, keys: Sequence[VerifyKey],
    ref: Reference, registry: Any,
) -> tuple[bool, str]:
    """Verified statements of the type, meeting the conditions and the policy if any."""
    from pipeline.signing.attestation import verify_attestations

    label = requirement.name or requirement.predicate_type
    if not keys:
        return False, f"{prefix}: attestation {label}: no key to verify it with"
    try:
        statements = verify_attestations(
            ref, requirement.predicate_type, list(keys), threshold=requirement.threshold,
            conditions=requirement.conditions, client=registry,
        )
    except PipelineError as exc:
        return False, f"{prefix}: attestation: {exc}"
    if requirement.policy is None:
        return True, (f"{prefix}: {requirement.predicate_type}: {len(statements)} verified "
                      "statement(s)")
    refusals = []
    for statement in statements:
        why = requirement.policy.check(statement)
        if why is None:
            return True, f"{prefix}: attestation {label}: policy satisfied"
        refusals.append(why)
    return False, (f"{prefix}: attestation {label}: {len(statements)} verified statement(s), "
                   f"none satisfies its policy ({'; '.join(dict.fromkeys(refusals))})")


def _document_namespace(data: Mapping[str, Any], where: str) -> tuple[str, ...]:
    metadata = data.get("metadata")
    if metadata is None:
        return ()
    if not isinstance(metadata, dict):
        raise ConfigError(f"{where}: metadata must be a mapping")
    _unknown(metadata, {"name", "namespace", "labels", "annotations"}, f"{where}.metadata")
    namespace = metadata.get("namespace")
    if namespace is None:
        return ()
    if not isinstance(namespace, str) or not namespace:
        raise ConfigError(f"{where}: metadata.namespace must be a namespace name")
    return (namespace,)


def _read_documents(path: Path) -> list[Any]:
    """Every YAML document of ``path`` (``---``-separated); ConfigError when unreadable."""
    import yaml

    try:
        return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None


__all__ = [
    "MODES",
    "AttestationRequirement",
    "Authority",
    "ImagePolicy",
    "KeylessAuthority",
    "PolicyResult",
    "Rule",
    "glob_to_regex",
]
