"""``pipeline deploy --local``: render, apply, serve in the foreground until told to stop.

Why in the library and not the CLI: the loop (render through :func:`pipeline.charts.render`,
the one render path; apply; report; stop everything on SIGTERM/SIGINT) is what tests and
the benchmark run too. The CLI only parses flags and prints the events.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.deploy.cluster import Event, ImageCheck, LocalCluster
from pipeline.errors import InputError, PolicyError
from pipeline.oci.registry import RegistryOptions


def parse_pairs(pairs: Sequence[str], flag: str) -> dict[str, str]:
    """``NAME=VALUE`` flags as a mapping; InputError naming the flag for a malformed one."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name or not value:
            raise InputError(f"{flag} {pair!r}: expected NAME=VALUE")
        out[name] = value
    return out


def image_policy_check(path: Path, registry_options: RegistryOptions) -> ImageCheck:
    """A check that refuses (PolicyError, exit 11) an image the policy at ``path`` denies."""
    from pipeline.policy.image_policy import ImagePolicy

    policy = ImagePolicy.load(path)

    def check(image: str, namespace: str) -> None:
        result = policy.evaluate(image, registry_options, namespace=namespace)
        if not result.allowed:
            raise PolicyError(f"image {image} refused by {path}: {'; '.join(result.reasons)}")

    return check


def deploy_chart(
    chart: Path,
    render_options: Mapping[str, Any],
    state_dir: Path,
    *,
    stop: threading.Event,
    on_event: Callable[[Event], None],
    registry_options: RegistryOptions | None = None,
    secret_dirs: Mapping[str, Path] | None = None,
    claim_dirs: Mapping[str, Path] | None = None,
    image_policy: Path | None = None,
    service_ports: Mapping[str, int] | None = None,
    backoff_base: float | None = None,
) -> int:
    """Run ``chart`` locally until ``stop`` is set; returns the exit code.

    0 when every object applied; else the exit code of the first error (a pod that could
    not start, a refused image, a taken port), after the rest ran until ``stop``.
    Rendering errors and unknown kinds raise before anything starts.
    """
    from pipeline.charts import render

    registry_options = registry_options or RegistryOptions()
    rendered = render(chart, **render_options)
    check = image_policy_check(image_policy, registry_options) if image_policy else None
    extra: dict[str, Any] = {} if backoff_base is None else {"backoff_base": backoff_base}
    cluster = LocalCluster(state_dir, registry_options=registry_options,
                           secret_dirs=secret_dirs, claim_dirs=claim_dirs, image_check=check,
                           service_ports=service_ports, on_event=on_event, **extra)
    try:
        cluster.apply([o.obj for o in rendered.objects], rendered.namespace)
        if cluster.prometheus_url:
            on_event(Event("note", "Prometheus", f"scrapes the ServiceMonitors at "
                                                 f"{cluster.prometheus_url}"))
        stop.wait()
    finally:
        cluster.close()
    errors = cluster.errors()
    return next((e.exit_code for e in errors if e.exit_code), 0)


__all__ = ["deploy_chart", "image_policy_check", "parse_pairs"]
