"""One decision from both policy engines: the CEL policies and the image policy.

Why one place: ``/validate`` and ``/mutate`` must refuse for the same reasons, and the
PR check (pipeline.policy) and promotion use the same engines, so a pod that passed
review is judged by the same rules at admission. Everything is fail closed: a container
without a usable image, an unreachable registry or a CEL expression that errors is a
denial with its reason, never a pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipeline.admission.cache import VerdictCache
from pipeline.admission.patch import pin_operations
from pipeline.admission.review import AdmissionRequest
from pipeline.errors import PipelineError
from pipeline.oci.reference import Reference
from pipeline.oci.registry import RegistryOptions, open_client, resolve_digest
from pipeline.policy.evaluate import evaluate
from pipeline.policy.image_policy import ImagePolicy, PolicyResult
from pipeline.policy.model_policy import model_references
from pipeline.policy.vap import PolicySet, resource_of
from pipeline.policy.workloads import ImageSlot, find_images

#: The label used for the image policy in reasons and metrics (as in `pipeline policy check`).
IMAGE_POLICY = "image-policy"
#: The label of a denial for a kind whose images this webhook cannot find.
UNKNOWN_KIND = "unknown-kind"
#: The label of the model policy (the sealed models pods load) in reasons and metrics.
MODEL_POLICY = "model-policy"


@dataclass
class Decision:
    """What to answer: allowed, every reason, warnings, a patch, and who refused."""

    allowed: bool = True
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    patch: list[dict[str, Any]] = field(default_factory=list)
    denied_by: list[str] = field(default_factory=list)
    #: False for an operation the webhook does not judge (DELETE, CONNECT): allowed as is.
    judged: bool = True
    #: Policies in warn/audit mode that would have denied (counted in the metrics).
    would_deny: list[str] = field(default_factory=list)

    def deny(self, policy: str, reason: str) -> None:
        self.allowed = False
        self.reasons.append(reason)
        if policy not in self.denied_by:
            self.denied_by.append(policy)


class Decider:
    """Holds the loaded policies, registry options and the verdict cache."""

    def __init__(self, policies: PolicySet, image_policy: ImagePolicy,
                 registry_options: RegistryOptions | None = None,
                 cache: VerdictCache | None = None,
                 decision_budget: float | None = None) -> None:
        self.policies = policies
        self.image_policy = image_policy
        self.registry_options = registry_options or RegistryOptions()
        #: Seconds all the registry work of one decision may take (None: no total limit).
        #: Below the API server's timeoutSeconds, so a silent registry is answered with a
        #: denial that names it instead of the API server's own timeout.
        self.decision_budget = decision_budget
        self.cache = cache if cache is not None else VerdictCache()
        self._bound = policies.bound()
        #: Model verification runs beside the image checks of the same request.
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="model-verify")

    def _options(self) -> RegistryOptions:
        """The registry options of one decision: one deadline for all of its requests."""
        return self.registry_options.with_deadline(self.decision_budget)

    # -- the two webhooks ----------------------------------------------------------------
    def validate(self, request: AdmissionRequest) -> Decision:
        """CEL policies, then the image policy for every container image."""
        decision = Decision()
        if not request.judged:
            decision.judged = False
            return decision
        self._cel(request, decision)
        options = self._options()
        # The models are verified while the images are: both are registry round trips.
        models = self._start_models(request, options)
        namespace = request.namespace or None
        verdicts: dict[str, PolicyResult] = {}
        for slot in self._slots(request, decision):
            ref = self._parse(slot, decision)
            if ref is None:
                continue
            image = slot.image
            if image not in verdicts:
                verdicts[image] = self._verdict(ref, options, namespace) if ref.digest else \
                    self.image_policy.evaluate(ref, options, namespace=namespace)
            self._apply(slot, verdicts[image], decision)
        self._finish_models(models, decision)
        return decision

    def _start_models(self, request: AdmissionRequest,
                      options: RegistryOptions) -> list[tuple[Any, Any]]:
        """Start verifying the sealed models the pod will load (with a model policy)."""
        models = self.image_policy.models
        if models is None:
            return []
        slots, refused = model_references(request.object)
        started: list[tuple[Any, Any]] = [(None, reason) for reason in refused]
        namespace = request.namespace or None
        for slot in slots:
            key = f"model|{namespace if models.namespaced else ''}|{slot.reference}"
            cached = self.cache.get(key) if "@" in slot.reference else None
            if cached is not None:
                started.append((slot, cached))
                continue
            future = self._pool.submit(models.evaluate, slot.reference, options,
                                       namespace=namespace)
            started.append((slot, (key, future)))
        return started

    def _finish_models(self, started: list[tuple[Any, Any]], decision: Decision) -> None:
        for slot, state in started:
            if slot is None:
                decision.deny(MODEL_POLICY, f"{MODEL_POLICY}: {state}")
                continue
            if isinstance(state, PolicyResult):
                verdict = state
            else:
                key, future = state
                verdict = future.result()  # an exception is an internal error: denied
                self.cache.put(key, verdict)
            self._record(verdict, decision)
            if not verdict.allowed:
                reasons = "; ".join(verdict.reasons) or "refused"
                decision.deny(MODEL_POLICY, f"{MODEL_POLICY}: {slot.label}: model "
                                            f"{slot.reference} refused: {reasons}")

    def mutate(self, request: AdmissionRequest) -> Decision:
        """Pin every tag-only image to its verified digest; deny what the policy refuses."""
        decision = Decision()
        if not request.judged:
            decision.judged = False
            return decision
        options = self._options()
        for slot in self._slots(request, decision):
            ref = self._parse(slot, decision)
            if ref is None:
                continue
            if ref.digest:
                self._apply(slot, self._verdict(ref, options, request.namespace or None),
                            decision)
                continue
            try:
                digest = self._resolve(ref, options)
            except PipelineError as exc:
                decision.deny(IMAGE_POLICY, f"{IMAGE_POLICY}: {slot.label}: "
                                            f"cannot resolve {slot.image} to a digest: {exc}")
                continue
            verdict = self._verdict(ref.with_digest(digest), options, request.namespace or None)
            if self._apply(slot, verdict, decision):
                decision.patch += pin_operations(slot.pointer, slot.value, digest)
                decision.warnings.append(f"{slot.label}: image {slot.image} "
                                         f"pinned to {digest}")
        if not decision.allowed:
            decision.patch.clear()
        return decision

    # -- pieces --------------------------------------------------------------------------
    @staticmethod
    def _slots(request: AdmissionRequest, decision: Decision) -> list[ImageSlot]:
        found = find_images(request.object)
        if not found.known:
            decision.deny(UNKNOWN_KIND, unknown_kind_reason(request.object))
            return []
        for reason in found.refused:
            decision.deny(IMAGE_POLICY, f"{IMAGE_POLICY}: {reason}")
        if not found.slots and found.expects_containers:
            decision.deny(IMAGE_POLICY, f"{IMAGE_POLICY}: {request.kind} has no pod spec with "
                                        "containers: nothing that could be verified")
        return found.slots

    def _cel(self, request: AdmissionRequest, decision: Decision) -> None:
        obj = request.object
        rid = resource_of(obj)
        cel_request = request.cel_request()
        for policy, binding in self._bound:
            for finding in evaluate(policy, binding, obj, rid, cel_request):
                text = f"policy {finding.policy}: {finding.message}"
                if finding.denies:
                    decision.deny(finding.policy, text)
                elif "Warn" in finding.actions:
                    decision.warnings.append(text)

    @staticmethod
    def _parse(slot: ImageSlot, decision: Decision) -> Reference | None:
        if not isinstance(slot.image, str) or not slot.image:
            decision.deny(IMAGE_POLICY, f"{IMAGE_POLICY}: {slot.label} has no image")
            return None
        try:
            return Reference.parse(slot.image)
        except PipelineError as exc:
            decision.deny(IMAGE_POLICY, f"{IMAGE_POLICY}: {slot.label}: {exc}")
            return None

    @staticmethod
    def _resolve(ref: Reference, options: RegistryOptions) -> str:
        with open_client(ref, None, options) as registry:
            return resolve_digest(registry, ref)

    def _verdict(self, pinned: Reference, options: RegistryOptions,
                 namespace: str | None = None) -> PolicyResult:
        """The image policy's verdict on a digest-pinned reference, from the cache if fresh.

        Keyed by digest, and by namespace too when some rule applies only in some.
        """
        scope = (namespace or "") if self.image_policy.namespaced else ""
        name = f"{pinned.name}@{pinned.digest}"
        key = f"{scope}|{name}" if scope else name
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        result = self.image_policy.evaluate(pinned, options, namespace=namespace)
        self.cache.put(key, result)
        return result

    @staticmethod
    def _record(verdict: PolicyResult, decision: Decision) -> None:
        """Warn/audit rules that would have denied: a warning each, counted per rule."""
        for rule, why in verdict.would_deny:
            # Warnings are cut at 256 characters: say the verdict first, not the reference.
            why = why.replace(f"rule {rule}: ", "").replace(verdict.reference, "it")
            decision.warnings.append(f"rule {rule} (warn mode) would deny "
                                     f"{verdict.reference.rsplit('/', 1)[-1][:40]}: {why}")
            if rule not in decision.would_deny:
                decision.would_deny.append(rule)

    @classmethod
    def _apply(cls, slot: ImageSlot, verdict: PolicyResult, decision: Decision) -> bool:
        cls._record(verdict, decision)
        if verdict.allowed:
            if not verdict.rules:
                decision.warnings.append(f"image {slot.image} matches no image-policy rule; "
                                         "allowed by the policy default")
            return True
        reasons = "; ".join(verdict.reasons) or "refused"
        decision.deny(IMAGE_POLICY, f"{IMAGE_POLICY}: {slot.label}: image "
                                    f"{slot.image} refused: {reasons}")
        return False


def unknown_kind_reason(obj: Mapping[str, Any]) -> str:
    """Why an object of a kind we do not know is denied, and how to stop sending it."""
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    return (f"{UNKNOWN_KIND}: kind {kind!r} (apiVersion {api_version!r}) is not one this "
            "webhook knows how to find images in, so nothing in it can be verified: denied "
            "(fail closed). If it runs no containers, remove its resource from the rules of "
            "the ValidatingWebhookConfiguration and MutatingWebhookConfiguration that send it "
            "here (the admission-webhook chart registers only the kinds it judges)")


__all__ = ["IMAGE_POLICY", "MODEL_POLICY", "UNKNOWN_KIND", "Decider", "Decision",
           "unknown_kind_reason"]
