"""``pipeline admission serve``: the validating and digest-pinning mutating webhook.

Thin: load and compile the policies (a bad one is exit 3 before anything listens), check
the TLS pair, bind the port, serve until SIGTERM (exit 0). See docs/admission.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from pipeline._cli._registry import registry_flags
from pipeline.errors import ConfigError
from pipeline.oci.registry import RegistryOptions


@click.group("admission")
def admission_group() -> None:
    """Admission webhook (ValidatingAdmissionPolicy CEL + image policy)."""


@admission_group.command("serve")
@click.option("--policies", "policy_dirs", multiple=True, required=True,
              type=click.Path(path_type=Path), help="Policy directory or file (repeatable).")
@click.option("--image-policy", required=True, type=click.Path(path_type=Path),
              help="Image policy: YAML documents of ours, sigstore ClusterImagePolicy, "
                   "ClusterModelPolicy.")
@click.option("--tls-cert", required=True, type=click.Path(path_type=Path),
              help="Server certificate (PEM), e.g. the Secret's tls.crt.")
@click.option("--tls-key", required=True, type=click.Path(path_type=Path),
              help="Server private key (PEM), e.g. the Secret's tls.key.")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535))
@registry_flags(insecure_flag="--insecure-registry", timeout=5.0, retries=2, backoff=0.1,
                deadline=False)
@click.option("--cache-ttl", default=300.0, show_default=True, type=click.FloatRange(0),
              help="Seconds an allowed image verdict is reused (0: verify every time).")
@click.option("--max-request-bytes", default=4 * 1024 * 1024, show_default=True,
              type=click.IntRange(1024), help="Larger AdmissionReviews are refused (400).")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve_command(
    policy_dirs: tuple[Path, ...], image_policy: Path, tls_cert: Path, tls_key: Path,
    host: str, port: int, registry_options: RegistryOptions, cache_ttl: float,
    max_request_bytes: int, log_level: str,
) -> None:
    """Serve POST /validate and /mutate over HTTPS (plus /healthz, /readyz, /metrics)."""
    try:
        from pipeline.admission.server import bind, build_server, create_app
    except ImportError as exc:  # the server's web stack is an extra, not a CLI dependency
        raise ConfigError(f"the admission webhook needs the 'admission' extra: pip install "
                          f"'secure-model-pipeline[admission]' ({exc})") from None
    from pipeline.admission.cache import VerdictCache
    from pipeline.admission.decide import Decider
    from pipeline.policy.image_policy import ImagePolicy
    from pipeline.policy.vap import load_policies

    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    decider = Decider(
        load_policies(list(policy_dirs)), ImagePolicy.load(image_policy), registry_options,
        VerdictCache(ttl=cache_ttl),
        # --registry-timeout is the budget of a whole decision, not of one request.
        decision_budget=registry_options.timeout,
    )
    server = build_server(create_app(decider, max_request_bytes=max_request_bytes),
                          tls_cert, tls_key)
    sock = bind(host, port)
    click.echo(f"admission webhook: {len(decider.policies.policies)} policies, "
               f"{len(decider.image_policy.rules)} image rules, https://{host}:"
               f"{sock.getsockname()[1]}", err=True)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
