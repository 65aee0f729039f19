"""Parse ``admission.k8s.io/v1`` AdmissionReview requests and build their responses.

Why strict: the API server always sends a well-formed review, so anything else is a
bug or an attacker, and the only safe answer is a refusal that cannot be mistaken for a
decision. Every malformed input raises :class:`ReviewError` (an InputError), which the
server turns into HTTP 400; with ``failurePolicy: Fail`` the API server then rejects
the object. A response is only ever built for a review whose ``uid`` we parsed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline._json import loads_strict
from pipeline.errors import InputError

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
#: Operations whose ``object`` we can judge (the chart registers only CREATE and UPDATE).
OPERATIONS = ("CREATE", "UPDATE")
#: Operations Kubernetes may send that this webhook does not judge: answered ``allowed:
#: true`` (as peers do) when a configuration registers them, never HTTP 400. DELETE carries
#: no ``object`` (only ``oldObject``) and CONNECT an options object: nothing runs from them.
NOT_JUDGED = ("DELETE", "CONNECT")
#: Kubernetes truncates longer warnings; keep ours readable and bounded.
MAX_WARNING_CHARS = 256
MAX_WARNINGS = 20
#: Deepest nesting of a review accepted (the object sits 3 levels down; Kubernetes
#: objects are rarely deeper than 20). Deeper bodies are a 400, never a RecursionError.
MAX_DEPTH = 100


class ReviewError(InputError):
    """The body is not an AdmissionReview we can decide on (answered with HTTP 400)."""


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of ``request`` the decision uses; ``raw`` is the whole request."""

    uid: str
    operation: str
    namespace: str
    name: str
    object: dict[str, Any]
    raw: dict[str, Any] = field(repr=False)

    @property
    def judged(self) -> bool:
        """False for DELETE and CONNECT: the answer is ``allowed: true`` without a decision."""
        return self.operation in OPERATIONS

    @property
    def kind(self) -> str:
        return str(self.object.get("kind", ""))

    @property
    def label(self) -> str:
        """``Kind namespace/name`` for messages and logs (no user data beyond that)."""
        meta = self.object.get("metadata") if isinstance(self.object.get("metadata"), dict) else {}
        name = self.name or str(meta.get("name") or meta.get("generateName") or "<unnamed>")
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{name}"

    def cel_request(self) -> dict[str, Any]:
        """``request`` as CEL policies see it (the API server's fields, no object copies)."""
        keep = ("kind", "resource", "subResource", "requestKind", "requestResource",
                "requestSubResource", "name", "namespace", "operation", "userInfo", "dryRun",
                "options", "uid")
        return {k: self.raw[k] for k in keep if k in self.raw}


def _short(value: Any) -> str:
    """A bounded repr of a value taken from the request (error messages are logged)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _need(mapping: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = mapping.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        what = {dict: "an object", str: "a string", list: "a list"}.get(kind, kind.__name__)
        raise ReviewError(f"{where}.{key} is missing or not {what}")
    return value


def _check_kind(request: Mapping[str, Any], obj: Mapping[str, Any]) -> None:
    """``request.kind`` (what the API server says it sends) must be the object's group/kind.

    The API server converts the object to the version it names, so both agree; a review
    where they differ was not written by an API server, and judging ``object`` by one
    kind while the cluster stores another would admit by accident.
    """
    gvk = request.get("kind")
    if gvk is None:
        return
    if not isinstance(gvk, dict) or not isinstance(gvk.get("kind"), str):
        raise ReviewError("request.kind is not a group/version/kind object")
    api_version = obj["apiVersion"]
    group = api_version.rpartition("/")[0]
    said = (gvk.get("group", ""), gvk["kind"])
    if said != (group, obj["kind"]):
        raise ReviewError(f"request.kind {_short(said)} differs from request.object's "
                          f"{_short((group, obj['kind']))}")


def parse_review(body: bytes | str, max_bytes: int | None = None) -> AdmissionRequest:
    """Parse ``body``; ReviewError says exactly what is wrong (never a partial result)."""
    if max_bytes is not None and len(body) > max_bytes:
        raise ReviewError(f"AdmissionReview of {len(body)} bytes exceeds the limit of "
                          f"{max_bytes} bytes")
    # Strict: duplicate keys (two readers, two objects), huge integers, NaN and nesting
    # deeper than MAX_DEPTH are refused here, as HTTP 400, before anything reads them.
    review = loads_strict(body, "body", max_depth=MAX_DEPTH, error=ReviewError)
    if not isinstance(review, dict):
        raise ReviewError("body is not a JSON object (expected an AdmissionReview)")
    if review.get("apiVersion") != API_VERSION:
        raise ReviewError(f"apiVersion {_short(review.get('apiVersion'))} is not {API_VERSION!r} "
                          "(set admissionReviewVersions: [v1])")
    if review.get("kind") != KIND:
        raise ReviewError(f"kind {_short(review.get('kind'))} is not {KIND!r}")
    request = _need(review, "request", dict, "AdmissionReview")
    uid = _need(request, "uid", str, "request")
    if not uid.strip():
        raise ReviewError("request.uid is empty")
    operation = _need(request, "operation", str, "request")
    if operation in NOT_JUDGED:
        return _not_judged(request, uid, operation)
    if operation not in OPERATIONS:
        raise ReviewError(f"request.operation {_short(operation)} is not a Kubernetes "
                          f"admission operation (CREATE, UPDATE, DELETE, CONNECT)")
    obj = _need(request, "object", dict, "request")
    for key in ("apiVersion", "kind"):
        if not _need(obj, key, str, "request.object").strip():
            raise ReviewError(f"request.object.{key} is empty")
    _check_kind(request, obj)
    metadata = obj.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ReviewError("request.object.metadata is not an object")
    namespace = request.get("namespace", "")
    name = request.get("name", "")
    if not isinstance(namespace, str) or not isinstance(name, str):
        raise ReviewError("request.namespace and request.name must be strings")
    return AdmissionRequest(uid, operation, namespace, name, obj, request)


def _not_judged(request: dict[str, Any], uid: str, operation: str) -> AdmissionRequest:
    """A DELETE or CONNECT: only what the log line needs (kind and name), nothing decided.

    ``object`` is null for a DELETE (the API server sends ``oldObject``) and a
    ``*Options`` object for a CONNECT; neither runs an image, so neither is judged.
    """
    namespace, name = request.get("namespace", ""), request.get("name", "")
    gvk = request.get("kind")
    kind = gvk.get("kind") if isinstance(gvk, dict) else None
    obj = {"kind": kind} if isinstance(kind, str) else {}
    return AdmissionRequest(uid, operation, namespace if isinstance(namespace, str) else "",
                            name if isinstance(name, str) else "", obj, request)


def _bounded(warnings: Sequence[str]) -> list[str]:
    out = []
    for text in list(dict.fromkeys(warnings))[:MAX_WARNINGS]:
        text = " ".join(text.split())
        out.append(text if len(text) <= MAX_WARNING_CHARS else text[: MAX_WARNING_CHARS - 1] + "…")
    return out


def response(
    uid: str,
    allowed: bool,
    reasons: Sequence[str] = (),
    *,
    warnings: Sequence[str] = (),
    patch: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """An AdmissionReview response; a denial carries status 403 and every reason."""
    answer: dict[str, Any] = {"uid": uid, "allowed": bool(allowed)}
    if not allowed:
        message = "; ".join(reasons) or "denied"
        answer["status"] = {"code": 403, "reason": "Forbidden", "status": "Failure",
                            "message": message}
    elif patch:
        answer["patchType"] = "JSONPatch"
        answer["patch"] = base64.b64encode(
            json.dumps(list(patch), separators=(",", ":")).encode()).decode()
    if warnings:
        answer["warnings"] = _bounded(warnings)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": answer}


__all__ = ["API_VERSION", "KIND", "NOT_JUDGED", "OPERATIONS", "AdmissionRequest", "ReviewError",
           "parse_review", "response"]
