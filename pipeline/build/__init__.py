"""Daemonless, reproducible slim image builds (``pipeline build``); see docs/image-build.md.

Modules, from the bottom up: ``_tarlayer`` (deterministic tar+gzip layers), ``project``
(pipeline.yaml's ``runtime`` section), ``debian`` (the pinned base), ``wheels`` (the
pinned python dependencies), ``app`` (the project's code), ``lint`` (what an image must
never contain), ``cache`` (layers keyed by their inputs) and ``image`` (putting it
together into an OCI layout).
"""
