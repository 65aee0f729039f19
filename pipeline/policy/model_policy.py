"""Which sealed models pods may load: the model half of the image policy.

Why at admission: the runtime verifies its model when it loads it, inside the pod, after
the pod was admitted; a pod naming an untrusted model then crash-loops instead of being
refused. Here the webhook decides before anything runs, from the registry alone, without
pulling the model (the weights stay where they are, ciphertext):

1. the reference names a digest (a tag can move after admission);
2. the artifact exists under that digest (its manifest, digest-verified);
3. its model signature (``model.sig`` inside the artifact, or attached as a referrer)
   verifies against the rule's keys, and the signed ``{file: sha256}`` is exactly the
   artifact's layers: the manifest digest therefore pins the signed bytes;
4. its ``seal.json`` (a signed layer) names a key provider the rule allows;
5. optionally, attestations (cosign ``.att``) on the model's digest verify.

The runtime pulls the same digest (``--model REPO@sha256:...``) and the registry client
checks every byte against it, so admission and load agree on the bytes. Format (in our
image-policy document, or as ``ClusterModelPolicy`` documents; docs/policies.md)::

    models:
      rules:
        - name: minilm
          models: ["registry.example/ml/models/**"]
          authorities: [{key: keys/model-release.pub}]
          keyProviders: [pkcs11, kubernetes]
          attestations: [{type: slsaprovenance}]
          mode: enforce          # or warn / audit
          namespaces: [serving]  # optional

    apiVersion: policy.secure-model-pipeline.dev/v1alpha1
    kind: ClusterModelPolicy
    metadata: {name: minilm}
    spec:
      models: [{glob: "registry.example/ml/models/**"}]
      authorities: [{name: release, key: {data: "-----BEGIN PUBLIC KEY-----..."}}]
      keyProviders: [pkcs11]
      attestations: [{name: provenance, predicateType: slsaprovenance}]
      mode: enforce
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, InputError, NotFoundError, PipelineError
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions, open_client
from pipeline.policy.image_policy import MODES, PolicyResult, _pattern_regex
from pipeline.signing import VerifyKey, intoto, load_verify_key

API_VERSION = "policy.secure-model-pipeline.dev/v1alpha1"
KIND = "ClusterModelPolicy"
#: Key providers of pipeline.sealing (seal.json ``key.provider``).
KEY_PROVIDERS = ("local", "pkcs11", "kubernetes", "kms", "vault")
_RULE_KEYS = {"name", "models", "authorities", "keyProviders", "attestations", "mode",
              "namespaces"}
_MAX_SEAL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class ModelRule:
    """One rule: the models it covers, whose keys sign them, which key providers."""

    name: str
    models: tuple[str, ...]
    keys: tuple[bytes, ...]                 # PEM public keys (model signatures)
    verify_keys: tuple[VerifyKey, ...]      # the same keys, for attestations
    key_providers: tuple[str, ...]
    attestations: tuple[str, ...] = ()      # predicate-type URIs
    mode: str = "enforce"
    namespaces: tuple[str, ...] = ()
    _patterns: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def matches(self, ref: Reference, namespace: str | None) -> bool:
        from pipeline.policy.image_policy import _match_name

        if self.namespaces and namespace is not None and namespace not in self.namespaces:
            return False
        name = _match_name(ref.registry, ref.repository)
        return any(p.fullmatch(name) for p in self._patterns)


class ModelPolicy:
    """The loaded model rules; :meth:`evaluate` decides one model reference."""

    def __init__(self, rules: Sequence[ModelRule]) -> None:
        self.rules = list(rules)

    @property
    def namespaced(self) -> bool:
        return any(rule.namespaces for rule in self.rules)

    def evaluate(self, model_ref: str | Reference, registry_options: RegistryOptions | None = None,
                 *, namespace: str | None = None, client: Any | None = None) -> PolicyResult:
        """Decide whether a pod may load ``model_ref``; never raises for a deniable problem."""
        text = str(model_ref)
        try:
            ref = model_ref if isinstance(model_ref, Reference) else Reference.parse(text)
        except InputError as exc:
            return PolicyResult(False, [f"model {exc}"], text)
        if not ref.digest:
            return PolicyResult(False, [f"model {text}: tag-only reference refused: name the "
                                        "sealed model by digest (REPO@sha256:<64 hex>)"], text)
        rules = [rule for rule in self.rules if rule.matches(ref, namespace)]
        if not rules:
            return PolicyResult(False, [f"no model policy rule matches {ref.name} (models are "
                                        "always default deny)"], text, ref.digest)
        names = [rule.name for rule in rules]
        reasons: list[str] = []
        would_deny: list[tuple[str, str]] = []
        allowed = True
        try:
            with open_client(ref, client, registry_options) as registry:
                artifact = _Artifact.fetch(registry, ref)
                for rule in rules:
                    ok, why = _check(rule, artifact, ref, registry)
                    reasons.extend(why)
                    if not ok and rule.mode != "enforce":
                        would_deny.append((rule.name, "; ".join(why)))
                    elif not ok:
                        allowed = False
        except PipelineError as exc:
            if all(rule.mode != "enforce" for rule in rules):
                return PolicyResult(True, [str(exc)], text, ref.digest, names,
                                    [(rule.name, str(exc)) for rule in rules])
            return PolicyResult(False, [*reasons, str(exc)], text, ref.digest, names)
        return PolicyResult(allowed, reasons, text, ref.digest, names, would_deny)


class _Artifact:
    """The model artifact's manifest layers, signatures and seal.json, each read once.

    Signatures are read lazily: the one inside the artifact first, and only if that is
    missing or not trusted the attached ones (a referrers lookup: more round trips).
    """

    def __init__(self, registry: Any, ref: Reference, layers: dict[str, str],
                 inline: str | None, seal: Any) -> None:
        self._registry, self._ref, self._inline = registry, ref, inline
        self.layers, self.seal = layers, seal
        self._read: list[bytes] = []
        self._attached_read = False

    def signatures(self) -> Iterator[bytes]:
        """Candidate bundles, inline first; each fetched once whatever the number of rules."""
        from pipeline.distribution import attached_model_signatures

        yield from list(self._read)
        if self._inline is not None and not self._read:
            self._read.append(self._registry.get_blob(self._ref.repository, self._inline))
            yield self._read[-1]
        if not self._attached_read:
            self._attached_read = True
            known = len(self._read)
            self._read += attached_model_signatures(self._ref, client=self._registry)
            yield from self._read[known:]

    @classmethod
    def fetch(cls, registry: Any, ref: Reference) -> _Artifact:
        import json

        from pipeline.oci import media_types as mt
        from pipeline.sealing.artifact import check_manifest
        from pipeline.sealing.manifest import MANIFEST_NAME, parse_manifest
        from pipeline.signing.model import SIGNATURE_NAME

        repo, digest = ref.repository, str(ref.digest)
        try:
            body, _, _ = registry.get_manifest(repo, digest, (mt.OCI_MANIFEST,))
        except NotFoundError:
            raise NotFoundError(f"model artifact {ref.name}@{digest} is missing from the "
                                "registry (no manifest under that digest)") from None
        try:
            layers = check_manifest(json.loads(body), f"{ref.name}@{digest}")
        except InputError as exc:
            raise InputError(f"model {ref.name}@{digest} is not a sealed model: {exc}") from None
        by_title = {title: layer for title, layer in layers}
        seal_layer = by_title[MANIFEST_NAME]
        if seal_layer.get("size", 0) > _MAX_SEAL_BYTES:
            raise InputError(f"model {ref.name}@{digest}: {MANIFEST_NAME} is too large")
        seal = parse_manifest(registry.get_blob(repo, seal_layer["digest"]))
        hexes = {title: str(layer["digest"]).removeprefix("sha256:")
                 for title, layer in layers if title != SIGNATURE_NAME}
        inline = by_title.get(SIGNATURE_NAME)
        return cls(registry, ref, hexes, str(inline["digest"]) if inline else None, seal)


def _check(rule: ModelRule, artifact: _Artifact, ref: Reference, registry: Any
           ) -> tuple[bool, list[str]]:
    from pipeline.signing.model import verify_model_signature_bytes

    prefix = f"model rule {rule.name}"
    where = f"of {ref.name}@{ref.digest}"
    failures: list[str] = []
    signed: dict[str, str] | None = None
    for bundle in artifact.signatures():
        try:
            signed = verify_model_signature_bytes(bundle, rule.keys, where=where)
            break
        except PipelineError as exc:
            failures.append(str(exc))
    if signed is None and not failures:
        return False, [f"{prefix}: model {ref.name}@{ref.digest} is not signed (no model.sig "
                       "inside the artifact or attached to it)"]
    if signed is None:
        return False, [f"{prefix}: model signature not trusted: untrusted key or bad "
                       f"signature ({'; '.join(failures)})"]
    if signed != artifact.layers:
        changed = sorted(set(signed.items()) ^ set(artifact.layers.items()))
        names = sorted({name for name, _ in changed})
        return False, [f"{prefix}: the artifact's files differ from what the signature covers "
                       f"({', '.join(names[:5])})"]
    reasons = [f"{prefix}: model signature verified ({len(signed)} files)"]
    provider = artifact.seal.key.provider
    ok = True
    if provider not in rule.key_providers:
        ok = False
        reasons.append(f"{prefix}: seal.json key provider {provider!r} is not allowed "
                       f"(allowed: {', '.join(rule.key_providers)})")
    else:
        reasons.append(f"{prefix}: key provider {provider} allowed")
    for predicate_type in rule.attestations:
        from pipeline.signing.attestation import verify_attestations

        try:
            statements = verify_attestations(ref, predicate_type, list(rule.verify_keys),
                                             client=registry)
            reasons.append(f"{prefix}: {predicate_type}: {len(statements)} verified "
                           "statement(s)")
        except PipelineError as exc:
            ok = False
            reasons.append(f"{prefix}: attestation: {exc}")
    return ok, reasons


# -- loading ----------------------------------------------------------------------------------
def is_model_policy(document: Mapping[str, Any]) -> bool:
    return document.get("kind") == KIND


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _pem(source: str, where: str, base: Path) -> tuple[bytes, VerifyKey]:
    if "-----BEGIN" in source:
        data = source.encode()
    else:
        expanded = os.path.expandvars(source)
        if "$" in expanded:
            raise _fail(where, f"environment variable in {source!r} is not set")
        path = (base / expanded).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _fail(where, f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data, load_verify_key(data.decode("ascii", "replace"))
    except PipelineError as exc:
        raise _fail(where, str(exc)) from None


def _rule(*, name: str, models: Any, keys: list[tuple[bytes, VerifyKey]], providers: Any,
          attestations: list[str], mode: Any, namespaces: Any, where: str) -> ModelRule:
    if not isinstance(models, list) or not models or not all(isinstance(m, str) and m
                                                             for m in models):
        raise _fail(where, "models must be a non-empty list of glob patterns")
    if not keys:
        raise _fail(where, "authorities must list at least one key")
    if not isinstance(providers, list) or not providers:
        raise _fail(where, "keyProviders must list the key providers allowed "
                           f"({', '.join(KEY_PROVIDERS)})")
    unknown = [p for p in providers if p not in KEY_PROVIDERS]
    if unknown:
        raise _fail(where, f"keyProviders: unknown {unknown} (known: {', '.join(KEY_PROVIDERS)})")
    if mode not in MODES:
        raise _fail(where, f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(namespaces, list) or not all(isinstance(n, str) and n for n in namespaces):
        raise _fail(where, "namespaces must be a list of namespace names")
    return ModelRule(name, tuple(models), tuple(k for k, _ in keys), tuple(v for _, v in keys),
                     tuple(providers), tuple(attestations), mode, tuple(namespaces),
                     tuple(_pattern_regex(m) for m in models))


def _types(raw: Any, where: str, field_name: str) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(where, "attestations must be a list")
    out = []
    for index, entry in enumerate(raw):
        value = entry.get(field_name) if isinstance(entry, dict) else None
        if not isinstance(value, str):
            raise _fail(f"{where}.attestations[{index}]", f"needs {field_name!r}")
        try:
            out.append(intoto.resolve_predicate_type(value))
        except InputError as exc:
            raise _fail(f"{where}.attestations[{index}]", str(exc)) from None
    return out


def _ours(raw: Any, base: Path) -> list[ModelRule]:
    if not isinstance(raw, dict):
        raise ConfigError("image policy: models: must be a mapping with 'rules'")
    if set(raw) - {"rules"}:
        raise ConfigError(f"image policy: models: unknown field(s) "
                          f"{', '.join(sorted(set(raw) - {'rules'}))}")
    rules = raw.get("rules") or []
    if not isinstance(rules, list):
        raise ConfigError("image policy: models.rules must be a list")
    out = []
    for index, entry in enumerate(rules):
        where = f"models.rules[{index}]"
        if not isinstance(entry, dict):
            raise _fail(where, "must be a mapping")
        extra = set(entry) - _RULE_KEYS
        if extra:
            raise _fail(where, f"unknown field(s) {', '.join(sorted(extra))}")
        name = str(entry.get("name") or f"model-rule-{index}")
        authorities = entry.get("authorities") or []
        if not isinstance(authorities, list):
            raise _fail(where, "authorities must be a list of {key: ...}")
        keys = []
        for number, authority in enumerate(authorities):
            spot = f"{where}.authorities[{number}]"
            if not isinstance(authority, dict) or set(authority) != {"key"} or \
                    not isinstance(authority["key"], str):
                raise _fail(spot, "must be {key: PATH or inline PEM} (model signatures are "
                                  "verified by key at admission)")
            keys.append(_pem(authority["key"], spot, base))
        out.append(_rule(name=name, models=entry.get("models"), keys=keys,
                         providers=entry.get("keyProviders"),
                         attestations=_types(entry.get("attestations"), where, "type"),
                         mode=entry.get("mode", "enforce"),
                         namespaces=entry.get("namespaces", []), where=where))
    return out


def _cluster(document: Mapping[str, Any], base: Path) -> ModelRule:
    if document.get("apiVersion") != API_VERSION:
        raise ConfigError(f"{KIND}: apiVersion must be {API_VERSION}, not "
                          f"{document.get('apiVersion')!r}")
    extra = set(document) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        raise ConfigError(f"{KIND}: unknown field(s) {', '.join(sorted(extra))}")
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{KIND}: metadata.name is required")
    where = f"{KIND} {name}: spec"
    spec = document.get("spec")
    if not isinstance(spec, dict):
        raise _fail(where, "must be a mapping")
    extra = set(spec) - {"models", "authorities", "keyProviders", "attestations", "mode"}
    if extra:
        raise _fail(where, f"unknown field(s) {', '.join(sorted(extra))}")
    models = spec.get("models")
    if not isinstance(models, list) or not all(isinstance(m, dict) and set(m) == {"glob"}
                                               for m in models):
        raise _fail(f"{where}.models", "must be a non-empty list of {glob: ...}")
    keys = []
    for index, authority in enumerate(spec.get("authorities") or []):
        spot = f"{where}.authorities[{index}]"
        key = authority.get("key") if isinstance(authority, dict) else None
        if not isinstance(authority, dict) or set(authority) - {"name", "key"} or \
                not isinstance(key, dict):
            raise _fail(spot, "must be {name, key: {data: PEM}} (keyless model signatures are "
                              "not verified at admission)")
        if set(key) != {"data"} or not isinstance(key["data"], str):
            raise _fail(f"{spot}.key", "only data (an inline PEM public key) can be honoured "
                                       "here (no Secret or KMS access)")
        keys.append(_pem(key["data"], spot, base))
    namespace = metadata.get("namespace")
    return _rule(name=name, models=[m["glob"] for m in models], keys=keys,
                 providers=spec.get("keyProviders"),
                 attestations=_types(spec.get("attestations"), where, "predicateType"),
                 mode={"enforce": "enforce", "warn": "warn"}.get(spec.get("mode", "enforce"),
                                                                 spec.get("mode")),
                 namespaces=[namespace] if isinstance(namespace, str) and namespace else [],
                 where=where)


def build(ours: Any, documents: Sequence[tuple[int, Mapping[str, Any]]], base: Path
          ) -> ModelPolicy | None:
    """The model policy from our ``models:`` section and ClusterModelPolicy documents.

    None when neither exists: then pods are not checked for models at all (as before).
    """
    rules = _ours(ours, base) if ours is not None else []
    for number, document in documents:
        try:
            rules.append(_cluster(document, base))
        except ConfigError as exc:
            raise ConfigError(f"document {number}: {exc}") from None
    return ModelPolicy(rules) if (ours is not None or documents) else None


__all__ = ["API_VERSION", "KEY_PROVIDERS", "KIND", "ModelPolicy", "ModelRule", "build",
           "is_model_policy"]


# -- where pods name their model --------------------------------------------------------------
#: The pod annotation naming the sealed model (the secure-runtime chart sets it).
MODEL_ANNOTATION = "secure-model-pipeline.dev/model"
#: A container runs the secure runtime when its command or args name this module.
RUNTIME_MODULE = "secure_runtime"
_TEMPLATE_PATHS = {
    "Pod": (),
    "PodTemplate": ("template",),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


@dataclass(frozen=True)
class ModelSlot:
    """One model reference a pod will load, and where it was found (for messages)."""

    label: str
    reference: str


def _at(obj: Any, path: Sequence[str]) -> Any:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _words(container: Mapping[str, Any]) -> list[str]:
    """command + args as the kubelet runs them (lists of strings; anything else: none)."""
    return [w for key in ("command", "args")
            for w in (container.get(key) if isinstance(container.get(key), list) else [])
            if isinstance(w, str)]


def _model_args(container: Mapping[str, Any]) -> list[str]:
    """Every ``--model`` value of command + args (the runtime's argparse keeps the last)."""
    words = _words(container)
    found = []
    for index, word in enumerate(words):
        if word == "--model" and index + 1 < len(words):
            found.append(words[index + 1])
        elif word.startswith("--model="):
            found.append(word.split("=", 1)[1])
    return found


def _is_runtime(container: Mapping[str, Any]) -> bool:
    return any(RUNTIME_MODULE in word for word in _words(container))


def _looks_like_reference(text: str) -> bool:
    return "/" in text and not text.startswith(("/", ".", "~"))


def model_references(obj: Mapping[str, Any]) -> tuple[list[ModelSlot], list[str]]:
    """The models a Pod or pod-template workload will load, and what cannot be verified.

    A container runs the secure runtime when its command or args name ``secure_runtime``;
    its model is its ``--model`` argument. The pod template's annotation
    ``secure-model-pipeline.dev/model`` names the model too (the chart sets it); when both
    are present they must be the same reference. A runtime loading a local path (a volume)
    cannot be verified from the registry: refused.
    """
    from pipeline.policy.workloads import workload_kind

    kind = workload_kind(obj)
    if kind is None or kind.group not in ("", "apps", "batch", "argoproj.io") or \
            kind.kind.startswith(("Workflow", "ClusterWorkflow", "CronWorkflow")):
        return [], []
    template = _at(obj, _TEMPLATE_PATHS.get(kind.kind, ("spec", "template")))
    if not isinstance(template, dict):
        return [], []
    annotations = _at(template, ("metadata", "annotations"))
    annotated = annotations.get(MODEL_ANNOTATION) if isinstance(annotations, dict) else None
    slots: list[ModelSlot] = []
    refused: list[str] = []
    if annotated is not None and not isinstance(annotated, str):
        refused.append(f"annotation {MODEL_ANNOTATION} is not a string")
        annotated = None
    spec = template.get("spec") if isinstance(template.get("spec"), dict) else {}
    runtime_seen = False
    for key in ("initContainers", "containers"):
        containers = spec.get(key)
        for container in containers if isinstance(containers, list) else []:
            if not isinstance(container, dict) or not _is_runtime(container):
                continue
            runtime_seen = True
            label = f"container {container.get('name')}"
            arguments = _model_args(container)
            argument = arguments[-1] if arguments else None
            if len(set(arguments)) > 1:
                refused.append(f"{label} names several models (--model {', '.join(arguments)}):"
                               " the runtime would load the last one; name exactly one")
            elif argument is not None and "$(" in argument:
                refused.append(f"{label}: --model {argument!r} is expanded from the "
                               "environment by the kubelet: admission cannot know what it "
                               "names; write the reference by digest")
            elif argument is None:
                refused.append(f"{label} runs the secure runtime without --model: the model "
                               "it loads cannot be verified")
            elif not _looks_like_reference(argument):
                refused.append(f"{label} loads the model from the path {argument!r}, which "
                               "cannot be verified from the registry: serve it as "
                               "--model REPO@sha256:<digest>")
            elif annotated is not None and annotated != argument:
                refused.append(f"{label}: --model {argument} differs from annotation "
                               f"{MODEL_ANNOTATION} {annotated}: admission and load must "
                               "name the same model")
            else:
                slots.append(ModelSlot(f"{label} --model", argument))
    if annotated is not None and not runtime_seen:
        slots.append(ModelSlot(f"annotation {MODEL_ANNOTATION}", annotated))
    return slots, refused


__all__ += ["MODEL_ANNOTATION", "ModelSlot", "model_references"]
