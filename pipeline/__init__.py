"""Secure Model Pipeline: a supply chain for ML models, from ``git push`` to a GPU pod.

The public library is organised by capability (``pipeline.sealing``,
``pipeline.signing``, ``pipeline.oci``, ...); ``pipeline.cli`` is a thin layer over it.
"""

__version__ = "0.1.0"
