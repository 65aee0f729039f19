"""The admission webhook: the policy engines of pipeline.policy and pipeline.signing, served.

Kubernetes sends an ``admission.k8s.io/v1`` AdmissionReview for every Pod or workload;
``/validate`` answers with the CEL policies' and the image policy's verdict, ``/mutate``
pins tag-only images to the digest the image policy verified. Modules, one job each:
``review`` (parse and answer reviews, fail closed on anything malformed), ``cache``
(verified digests, TTL), ``decide`` (combine the engines), ``patch`` (JSONPatch),
``metrics``, ``server`` (FastAPI app and TLS serving). Where the images of each kind
are, and which kinds are judged at all, is :mod:`pipeline.policy.workloads` (shared with
``pipeline policy check``). See docs/admission.md.

Usage::

    from pipeline.admission import Decider, VerdictCache, bind, build_server, create_app
    from pipeline.policy import ImagePolicy, load_policies

    decider = Decider(load_policies("policies/"), ImagePolicy.load("policies/image-policy.yaml"),
                      RegistryOptions(ca_file=Path("ca.pem")), VerdictCache(ttl=300))
    build_server(create_app(decider), cert, key).run(sockets=[bind("0.0.0.0", 8443)])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline._facade import lazy_exports

if TYPE_CHECKING:
    from pipeline.admission.cache import VerdictCache
    from pipeline.admission.decide import IMAGE_POLICY, MODEL_POLICY, Decider, Decision
    from pipeline.admission.review import AdmissionRequest, ReviewError, parse_review, response
    from pipeline.admission.server import bind, build_server, check_tls, create_app

_LAZY = {
    "VerdictCache": "pipeline.admission.cache",
    "IMAGE_POLICY": "pipeline.admission.decide",
    "MODEL_POLICY": "pipeline.admission.decide",
    "Decider": "pipeline.admission.decide",
    "Decision": "pipeline.admission.decide",
    "AdmissionRequest": "pipeline.admission.review",
    "ReviewError": "pipeline.admission.review",
    "parse_review": "pipeline.admission.review",
    "response": "pipeline.admission.review",
    "bind": "pipeline.admission.server",
    "build_server": "pipeline.admission.server",
    "check_tls": "pipeline.admission.server",
    "create_app": "pipeline.admission.server",
}

__all__ = [
    "IMAGE_POLICY",
    "MODEL_POLICY",
    "AdmissionRequest",
    "Decider",
    "Decision",
    "ReviewError",
    "VerdictCache",
    "bind",
    "build_server",
    "check_tls",
    "create_app",
    "parse_review",
    "response",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
