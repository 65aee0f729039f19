"""The admission webhook: the policy engines of pipeline.policy and pipeline.signing, served.

Kubernetes sends an ``admission.k8s.io/v1`` AdmissionReview for every Pod or workload;
``/validate`` answers with the CEL policies' and the image policy's verdict, ``/mutate``
pins tag-only images to the digest the image policy verified. Modules, one job each:
``review`` (parse and answer reviews, fail closed on anything malformed), ``cache``
(verified digests, TTL), ``decide`` (combine the engines), ``patch`` (JSONPatch),
``metrics``, ``server`` (FastAPI app and TLS serving). Where the images of each kind are, and which kinds are
judged at all, is :mod:`pipeline.policy.workloads` (shared with ``pipeline policy
check``). See docs/admission.md.
"""

from __future__ import annotations

from pipeline.admission.decide import Decider, Decision
from pipeline.admission.review import AdmissionRequest, ReviewError, parse_review, response

__all__ = ["AdmissionRequest", "Decider", "Decision", "ReviewError", "parse_review", "response"]
