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

from pipeline.config import read_yaml_mapping
from pipeline.errors import ConfigError, InputError, PipelineError
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions, open_client, resolve_digest
from pipeline.signing import Identity, TrustRoot, VerifyKey, intoto, load_verify_key

_TOP_KEYS = {"version", "default", "requireDigest", "rules", "apiVersion", "kind", "trustRoot"}
_TRUST_ROOT_KEYS = {"fulcio", "rekor", "requireTlog"}
_RULE_KEYS = {"name", "images", "authorities", "threshold", "identity", "attestations"}
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
    predicate_type: str
    conditions: tuple[Mapping[str, Any], ...] = ()
    threshold: int = 1


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
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)

    def matches(self, ref: Reference) -> bool:
        name = _match_name(ref.registry, ref.repository)
        return any(p.fullmatch(name) for p in self._patterns)


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "reference": self.reference,
            "digest": self.digest,
            "rules": list(self.rules),
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


def _parse_rule(raw: Any, index: int, base: Path) -> Rule:
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
    return Rule(
        name=name,
        images=tuple(images),
        keys=tuple(keys),
        keyless=tuple(keyless),
        threshold=threshold,
        identity=identity,
        attestations=tuple(_parse_attestations(raw.get("attestations"), where)),
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
    ) -> None:
        self.rules = list(rules)
        self.default_allow = default_allow
        self.require_digest = require_digest
        self.trust_root = trust_root

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: Path | None = None) -> ImagePolicy:
        """Build from parsed YAML; relative key paths resolve against ``base``."""
        _unknown(data, _TOP_KEYS, "image policy")
        version = data.get("version", 1)
        if version != 1:
            raise ConfigError(f"image policy: unsupported version {version!r} (expected 1)")
        default = data.get("default", "deny")
        if default not in ("deny", "allow"):
            raise ConfigError("image policy: 'default' must be 'deny' or 'allow'")
        require_digest = data.get("requireDigest", True)
        if not isinstance(require_digest, bool):
            raise ConfigError("image policy: 'requireDigest' must be true or false")
        raw_rules = data.get("rules") or []
        if not isinstance(raw_rules, list):
            raise ConfigError("image policy: 'rules' must be a list")
        base = base or Path.cwd()
        rules = [_parse_rule(rule, index, base) for index, rule in enumerate(raw_rules)]
        return cls(rules, default_allow=default == "allow", require_digest=require_digest,
                   trust_root=_parse_trust_root(data.get("trustRoot"), base))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ImagePolicy:
        """Load a policy file (ConfigError names the field that is wrong)."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"image policy not found: {path}")
        try:
            return cls.from_mapping(read_yaml_mapping(path), path.parent)
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if message.startswith(str(path)) else f"{path}: {message}"
                              ) from None

    def rules_for(self, image_ref: str | Reference) -> list[Rule]:
        """The rules whose patterns match the image's ``registry/repository``."""
        ref = image_ref if isinstance(image_ref, Reference) else Reference.parse(image_ref)
        return [rule for rule in self.rules if rule.matches(ref)]

    def evaluate(
        self,
        image_ref: str | Reference,
        registry_options: RegistryOptions | None = None,
        *,
        resolve: bool = False,
        client: Any | None = None,
    ) -> PolicyResult:
        """Decide whether ``image_ref`` may run; never raises for a deniable problem."""
        text = str(image_ref)
        try:
            ref = image_ref if isinstance(image_ref, Reference) else Reference.parse(image_ref)
        except InputError as exc:
            return PolicyResult(False, [str(exc)], text)
        rules = self.rules_for(ref)
        if not rules:
            if self.default_allow:
                return PolicyResult(True, ["no rule matches; policy default is allow"], text,
                                    ref.digest)
            return PolicyResult(False, [f"no policy rule matches {ref.name} (default deny)"],
                                text, ref.digest)
        if not ref.digest and self.require_digest and not resolve:
            return PolicyResult(
                False, [f"{ref}: tag-only reference refused: pin the image by digest"], text,
                None, [r.name for r in rules],
            )
        reasons: list[str] = []
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
                    allowed = allowed and ok
                    reasons.extend(why)
        except PipelineError as exc:
            return PolicyResult(False, [*reasons, str(exc)], text, digest,
                                [r.name for r in rules])
        return PolicyResult(allowed, reasons, text, digest, [r.name for r in rules])

    @staticmethod
    def _check_rule(
        rule: Rule, ref: Reference, registry: Any, trust_root: TrustRoot | None = None
    ) -> tuple[bool, list[str]]:
        from pipeline.signing.attestation import verify_attestations
        from pipeline.signing.image import verify_image

        reasons: list[str] = []
        ok = True
        prefix = f"rule {rule.name}"
        identities = [Identity(a.issuer, a.subject) for a in rule.keyless] if trust_root else []
        if rule.keyless and not trust_root:
            reasons.append(f"{prefix}: {len(rule.keyless)} keyless authority(ies) cannot be "
                           "verified without a trustRoot (Fulcio CA, Rekor key): not counted")
        verifiable = len(rule.keys) + len(identities)
        if not verifiable or rule.threshold > verifiable:
            return False, [*reasons, f"{prefix}: threshold {rule.threshold} cannot be met by "
                                     f"{verifiable} verifiable authority(ies)"]
        try:
            result = verify_image(ref, list(rule.keys), threshold=rule.threshold,
                                  identity=rule.identity, client=registry,
                                  keyless=identities, trust_root=trust_root)
            reasons.append(f"{prefix}: signed by {len(result['signers'])} trusted signer(s) "
                           f"(threshold {rule.threshold})")
        except PipelineError as exc:
            ok = False
            reasons.append(f"{prefix}: signature: {exc}")
        for requirement in rule.attestations:
            try:
                statements = verify_attestations(
                    ref, requirement.predicate_type, list(rule.keys),
                    threshold=requirement.threshold, conditions=requirement.conditions,
                    client=registry,
                )
                reasons.append(f"{prefix}: {requirement.predicate_type}: "
                               f"{len(statements)} verified statement(s)")
            except PipelineError as exc:
                ok = False
                reasons.append(f"{prefix}: attestation: {exc}")
        return ok, reasons


__all__ = [
    "AttestationRequirement",
    "ImagePolicy",
    "KeylessAuthority",
    "PolicyResult",
    "Rule",
    "glob_to_regex",
]
