"""sigstore policy-controller ``ClusterImagePolicy`` documents, as rules of the one engine.

Why: teams that run policy-controller already have these objects; they bring them as
they are (``pipeline admission serve --image-policy FILE``, ``pipeline policy check``),
and the same :class:`~pipeline.policy.image_policy.ImagePolicy` evaluates them beside our
own rules. There is no second engine: a ClusterImagePolicy becomes one
:class:`~pipeline.policy.image_policy.Rule` whose ``alternatives`` are its authorities
(policy-controller admits when any one authority passes; every matching policy must).

What cannot be honoured here is refused when the file is loaded, naming the field
(ConfigError, exit 3), never ignored: a Secret or KMS key (no API or KMS access), a
separate signature source, a TrustRoot reference, timestamp authorities, the bundle
signature format, a regexp on the OIDC issuer, a transparency log for key-signed images,
CUE policies (no CUE evaluator) and the policy-level ``policy`` and ``match`` blocks.
Rego attestation policies are evaluated (``regopy``, the rego-cpp interpreter) with
policy-controller's query ``data.sigstore.isCompliant``. The mapping is in
docs/policies.md ("ClusterImagePolicy"). Field names follow policy-controller's
``pkg/apis/policy/v1beta1/clusterimagepolicy_types.go``; v1alpha1 has the same shape for
every field read here.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, InputError, PipelineError
from pipeline.policy.image_policy import (
    AttestationRequirement,
    Authority,
    KeylessAuthority,
    Rule,
    _pattern_regex,
)
from pipeline.signing import VerifyKey, intoto, load_verify_key

GROUP = "policy.sigstore.dev"
API_VERSIONS = (f"{GROUP}/v1beta1", f"{GROUP}/v1alpha1")
KIND = "ClusterImagePolicy"

#: policy-controller's own check on globs (pkg/apis/glob): anything else is not a glob.
_VALID_GLOB = re.compile(r"^[a-zA-Z0-9\-_:/*.@]+$")
#: policy-controller's predicate-type short names, as cosign names them.
_PREDICATE_SHORT_NAMES = {
    "custom": "https://cosign.sigstore.dev/attestation/v1",
    "slsaprovenance": "https://slsa.dev/provenance/v0.2",
    "slsaprovenance02": "https://slsa.dev/provenance/v0.2",
    "slsaprovenance1": "https://slsa.dev/provenance/v1",
    "spdx": "https://spdx.dev/Document",
    "spdxjson": "https://spdx.dev/Document",
    "cyclonedx": "https://cyclonedx.org/bom",
    "link": "https://in-toto.io/Link/v1",
    "vuln": "https://cosign.sigstore.dev/attestation/vuln/v1",
    "openvex": "https://openvex.dev/ns",
}
_SPEC_KEYS = {"images", "authorities", "policy", "mode", "match"}
_AUTHORITY_KEYS = {"name", "key", "keyless", "static", "source", "ctlog", "attestations",
                   "rfc3161timestamp", "signatureFormat"}
_KEY_KEYS = {"data", "secretRef", "kms", "hashAlgorithm"}
_KEYLESS_KEYS = {"url", "identities", "ca-cert", "trustRootRef", "insecureIgnoreSCT"}
_IDENTITY_KEYS = {"issuer", "subject", "issuerRegExp", "subjectRegExp"}
_ATTESTATION_KEYS = {"name", "predicateType", "policy"}
_POLICY_KEYS = {"type", "data", "remote", "configMapRef", "fetchConfigFile", "includeSpec",
                "includeObjectMeta", "includeTypeMeta"}

#: Fields we read but cannot honour: why, and what to write instead.
_REFUSED = {
    "match": "resource selectors are not evaluated here: the policy would apply to objects "
             "it was not meant for, or miss some; remove it (the webhook configuration's "
             "rules choose the resources)",
    "policy": "a policy over all authorities' results is not evaluated here; put Rego on "
              "the attestations (authorities[].attestations[].policy) instead",
    "key.secretRef": "a Kubernetes Secret cannot be read by this webhook (it has no API "
                     "access); inline the public key as key.data",
    "key.kms": "KMS keys cannot be fetched here; export the public key (cosign public-key "
               "--key kms://...) and inline it as key.data",
    "source": "signatures from another repository (source.oci, signaturePullSecrets, "
              "tagPrefix) are not looked up here; keep them beside the image",
    "ctlog (key)": "a transparency-log entry for key-signed images is not verified here; "
                   "remove ctlog from key authorities (cosign --insecure-ignore-tlog)",
    "rfc3161timestamp": "timestamp authorities are not verified here",
    "keyless.ca-cert": "keyless certificates are verified against the trustRoot of the "
                       "image policy (its document of ours), not a per-authority CA",
    "keyless.trustRootRef": "TrustRoot objects are not read here; give the Fulcio and Rekor "
                            "keys as the trustRoot of the image policy",
    "keyless.insecureIgnoreSCT": "certificate SCTs cannot be skipped selectively",
    "issuerRegExp": "the OIDC issuer is matched exactly; use issuer",
    "cue": "CUE policies cannot be evaluated here (no CUE evaluator); write the policy in "
           "Rego (type: rego, package sigstore, isCompliant)",
    "remote": "policies are not fetched from URLs or ConfigMaps; inline them as data",
    "attestations (keyless)": "attestations are verified with keys only; use a key "
                              "authority for attestations",
}


def is_cluster_image_policy(document: Mapping[str, Any]) -> bool:
    """True for a document whose apiVersion is policy-controller's group."""
    api_version = document.get("apiVersion")
    return isinstance(api_version, str) and api_version.startswith(GROUP + "/")


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _refuse(where: str, what: str) -> ConfigError:
    return ConfigError(f"{where}: cannot be honoured: {_REFUSED[what]}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, "must be a mapping")
    return value


def _unknown(mapping: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(mapping) - allowed
    if extra:
        raise _fail(where, f"unknown field(s) {', '.join(sorted(extra))} (not in "
                           f"{GROUP}/v1beta1 {KIND})")


def to_rules(document: Mapping[str, Any], where: str, base: Path) -> list[Rule]:
    """The one rule a ClusterImagePolicy becomes (a list for the loader's convenience)."""
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if api_version not in API_VERSIONS or kind != KIND:
        raise _fail(where, f"apiVersion {api_version!r} kind {kind!r}: only {KIND} of "
                           f"{' or '.join(API_VERSIONS)} is understood")
    _unknown(document, {"apiVersion", "kind", "metadata", "spec", "status"}, where)
    metadata = _mapping(document.get("metadata") or {}, f"{where}.metadata")
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(f"{where}.metadata.name", "is required")
    where = f"{KIND} {name}"
    spec = _mapping(document.get("spec"), f"{where}: spec")
    _unknown(spec, _SPEC_KEYS, f"{where}: spec")
    for field in ("match", "policy"):
        if spec.get(field):
            raise _refuse(f"{where}: spec.{field}", field)
    mode = spec.get("mode", "enforce")
    if mode not in ("enforce", "warn"):
        raise _fail(f"{where}: spec.mode", f"must be enforce or warn, not {mode!r}")
    images = spec.get("images")
    if not isinstance(images, list) or not images:
        raise _fail(f"{where}: spec.images", "must be a non-empty list of {glob: ...}")
    globs = []
    for index, image in enumerate(images):
        here = f"{where}: spec.images[{index}]"
        image = _mapping(image, here)
        _unknown(image, {"glob"}, here)
        glob = image.get("glob")
        if not isinstance(glob, str) or not _VALID_GLOB.match(glob):
            raise _fail(f"{here}.glob", f"invalid glob {glob!r}")
        # policy-controller's shorthands for Docker Hub's library and user repositories.
        globs.append({"*": "index.docker.io/library/*", "*/*": "index.docker.io/*/*"}.get(
            glob, glob))
    authorities = spec.get("authorities")
    if not isinstance(authorities, list) or not authorities:
        raise _fail(f"{where}: spec.authorities", "must list at least one authority (an "
                                                  "empty list would verify nothing)")
    parsed = tuple(_authority(entry, index, where, base)
                   for index, entry in enumerate(authorities))
    return [Rule(
        name=name,
        images=tuple(globs),
        mode=mode,
        alternatives=parsed,
        match_reference=True,
        _patterns=tuple(_pattern_regex(glob) for glob in globs),
    )]


def _authority(raw: Any, index: int, where: str, base: Path) -> Authority:
    here = f"{where}: spec.authorities[{index}]"
    raw = _mapping(raw, here)
    _unknown(raw, _AUTHORITY_KEYS, here)
    name = raw.get("name") or f"authority-{index}"
    if not isinstance(name, str):
        raise _fail(f"{here}.name", "must be a string")
    for field in ("source", "rfc3161timestamp"):
        if raw.get(field):
            raise _refuse(f"{here}.{field}", field)
    if raw.get("signatureFormat", "legacy") != "legacy":
        raise _fail(f"{here}.signatureFormat", f"{raw['signatureFormat']!r} cannot be "
                    "honoured: only cosign's legacy format (.sig tags) is verified here")
    kinds = [field for field in ("key", "keyless", "static") if raw.get(field) is not None]
    if len(kinds) != 1:
        raise _fail(here, "needs exactly one of key, keyless, static")
    if "static" in kinds:
        static = _mapping(raw["static"], f"{here}.static")
        _unknown(static, {"action", "message"}, f"{here}.static")
        action = static.get("action")
        if action not in ("pass", "fail"):
            raise _fail(f"{here}.static.action", f"must be pass or fail, not {action!r}")
        if raw.get("attestations") or raw.get("ctlog"):
            raise _fail(here, "a static authority takes neither attestations nor ctlog")
        return Authority(name, static=action, message=str(static.get("message") or ""))
    keys: tuple[VerifyKey, ...] = ()
    keyless: tuple[KeylessAuthority, ...] = ()
    if "key" in kinds:
        if raw.get("ctlog"):
            raise _refuse(f"{here}.ctlog", "ctlog (key)")
        keys = (_key(raw["key"], f"{here}.key"),)
    else:
        keyless = _keyless(raw["keyless"], f"{here}.keyless")
        if raw.get("ctlog") is not None:
            ctlog = _mapping(raw["ctlog"], f"{here}.ctlog")
            _unknown(ctlog, {"url", "trustRootRef"}, f"{here}.ctlog")
            if ctlog.get("trustRootRef"):
                raise _refuse(f"{here}.ctlog.trustRootRef", "keyless.trustRootRef")
    attestations = raw.get("attestations") or []
    if not isinstance(attestations, list):
        raise _fail(f"{here}.attestations", "must be a list")
    if attestations and keyless:
        raise _refuse(f"{here}.attestations", "attestations (keyless)")
    requirements = tuple(_attestation(entry, number, f"{here}.attestations")
                         for number, entry in enumerate(attestations))
    return Authority(name, keys=keys, keyless=keyless, attestations=requirements)


def _key(raw: Any, where: str) -> VerifyKey:
    raw = _mapping(raw, where)
    _unknown(raw, _KEY_KEYS, where)
    for field in ("secretRef", "kms"):
        if raw.get(field):
            raise _refuse(f"{where}.{field}", f"key.{field}")
    if raw.get("hashAlgorithm", "sha256") != "sha256":
        raise _fail(f"{where}.hashAlgorithm", f"{raw['hashAlgorithm']!r} cannot be honoured: "
                                              "signatures are verified over sha256")
    data = raw.get("data")
    if not isinstance(data, str) or "-----BEGIN" not in data:
        raise _fail(f"{where}.data", "must be an inline PEM public key")
    try:
        return load_verify_key(data)
    except PipelineError as exc:
        raise _fail(f"{where}.data", str(exc)) from None


def _keyless(raw: Any, where: str) -> tuple[KeylessAuthority, ...]:
    raw = _mapping(raw, where)
    _unknown(raw, _KEYLESS_KEYS, where)
    for field in ("ca-cert", "trustRootRef", "insecureIgnoreSCT"):
        if raw.get(field):
            raise _refuse(f"{where}.{field}", f"keyless.{field}")
    identities = raw.get("identities")
    if not isinstance(identities, list) or not identities:
        raise _fail(f"{where}.identities", "must list at least one {issuer, subject}")
    out = []
    for index, identity in enumerate(identities):
        here = f"{where}.identities[{index}]"
        identity = _mapping(identity, here)
        _unknown(identity, _IDENTITY_KEYS, here)
        if identity.get("issuerRegExp"):
            raise _refuse(f"{here}.issuerRegExp", "issuerRegExp")
        issuer = identity.get("issuer")
        if not isinstance(issuer, str) or not issuer:
            raise _fail(f"{here}.issuer", "is required")
        subject, pattern = identity.get("subject"), identity.get("subjectRegExp")
        if (subject is None) == (pattern is None):
            raise _fail(here, "needs exactly one of subject, subjectRegExp")
        if subject is not None:
            regex = re.escape(str(subject))
        else:
            # Go's regexp.MatchString finds the pattern anywhere in the subject; our
            # identities match the whole subject, so the pattern is wrapped.
            try:
                re.compile(str(pattern))
            except re.error as exc:
                raise _fail(f"{here}.subjectRegExp", f"not a valid regex: {exc}") from None
            regex = f".*(?:{pattern}).*"
        out.append(KeylessAuthority(issuer, regex))
    return tuple(out)


def _attestation(raw: Any, index: int, where: str) -> AttestationRequirement:
    here = f"{where}[{index}]"
    raw = _mapping(raw, here)
    _unknown(raw, _ATTESTATION_KEYS, here)
    name = raw.get("name") or f"attestation-{index}"
    predicate = raw.get("predicateType")
    if not isinstance(predicate, str) or not predicate:
        raise _fail(f"{here}.predicateType", "is required")
    type_uri = _PREDICATE_SHORT_NAMES.get(predicate)
    if type_uri is None:
        try:
            type_uri = intoto.resolve_predicate_type(predicate)
        except InputError as exc:
            raise _fail(f"{here}.predicateType", str(exc)) from None
    policy = None
    if raw.get("policy") is not None:
        policy = _policy(raw["policy"], f"{here}.policy", str(name))
    return AttestationRequirement(type_uri, policy=policy, name=str(name))


def _policy(raw: Any, where: str, name: str) -> RegoPolicy:
    raw = _mapping(raw, where)
    _unknown(raw, _POLICY_KEYS, where)
    kind = raw.get("type")
    if kind == "cue":
        raise _refuse(f"{where}.type", "cue")
    if kind != "rego":
        raise _fail(f"{where}.type", f"must be rego or cue, not {kind!r}")
    for field in ("remote", "configMapRef"):
        if raw.get(field):
            raise _refuse(f"{where}.{field}", "remote")
    for field in ("fetchConfigFile", "includeSpec", "includeObjectMeta", "includeTypeMeta"):
        if raw.get(field):
            raise _fail(f"{where}.{field}", "only applies to a policy-level policy, which is "
                                             "not evaluated here")
    data = raw.get("data")
    if not isinstance(data, str) or not data.strip():
        raise _fail(f"{where}.data", "must hold the Rego module")
    return RegoPolicy(data, f"{where}.data", name)


class RegoPolicy:
    """A Rego module compiled once, asked ``data.sigstore.isCompliant`` per statement.

    As policy-controller (through cosign's rego package): the input is the in-toto
    statement, the module must be ``package sigstore``, and only ``true`` is compliant
    (false, undefined or an evaluation error is not). A module that does not parse is a
    ConfigError at load, so a broken policy can never reach a decision.
    """

    QUERY = "x = data.sigstore.isCompliant"

    def __init__(self, module: str, where: str, name: str) -> None:
        try:
            import regopy
        except ImportError as exc:
            raise ConfigError(f"{where}: Rego policies need the 'regopy' package: pip install "
                              f"'secure-model-pipeline[admission]' ({exc})") from None
        self._regopy = regopy
        self._local = threading.local()  # one interpreter per thread (~30 ms to build one)
        self.module, self.where, self.name = module, where, name
        if not re.search(r"^\s*package\s+sigstore\s*$", module, re.MULTILINE):
            raise ConfigError(f"{where}: the Rego module must be 'package sigstore' (its "
                              "rule isCompliant is what policy-controller asks)")
        try:
            self._interpreter()
        except regopy.RegoError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
            raise ConfigError(f"{where}: not valid Rego: {first}") from None

    def _interpreter(self) -> Any:
        interpreter = getattr(self._local, "interpreter", None)
        if interpreter is None:
            interpreter = self._regopy.Interpreter()
            interpreter.add_module("policy.rego", self.module)
            self._local.interpreter = interpreter
        return interpreter

    def check(self, statement: Mapping[str, Any]) -> str | None:
        """None when the statement is compliant; else why not (no exception escapes)."""
        try:
            interpreter = self._interpreter()
            interpreter.set_input_term(json.dumps(statement))
            output = interpreter.query(self.QUERY)
        except self._regopy.RegoError as exc:
            return f"Rego error: {str(exc).strip().splitlines()[0] if str(exc) else exc}"
        if output.ok() and _bound_true(str(output)):
            return None
        return f"policy {self.name}: isCompliant is not true"


def _bound_true(text: str) -> bool:
    try:
        result = json.loads(text)
    except ValueError:
        return False
    return isinstance(result, dict) and result.get("bindings", {}).get("x") is True


__all__ = ["API_VERSIONS", "GROUP", "KIND", "RegoPolicy", "is_cluster_image_policy",
           "to_rules"]
