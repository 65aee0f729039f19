"""``pipeline deploy --local``: the chart's rendered objects run on this machine.

Thin: flags → :func:`pipeline.deploy.run.deploy_chart`; each event becomes one line
(``pod NS/NAME: Ready (restarts 0)``, ``Service/NS/NAME: port http serves at
http://127.0.0.1:PORT``), errors on stderr; SIGTERM and SIGINT stop everything.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import click

from pipeline._cli._registry import registry_flags
from pipeline._cli.chart import chart_flags, helm_value_flags


@click.command("deploy")
@click.option("--local", "local", is_flag=True, required=True,
              help="Run the chart on this machine (the only target so far).")
@click.option("--chart", "chart", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The chart directory (e.g. helm/secure-runtime).")
@helm_value_flags
@click.option("--secret", "secrets", multiple=True, metavar="NAME=DIR",
              help="Serve Secret NAME from DIR (its files are the keys); repeatable.")
@click.option("--volume", "volumes", multiple=True, metavar="CLAIM=DIR",
              help="Serve persistentVolumeClaim CLAIM from DIR; repeatable.")
@click.option("--service-port", "service_ports", multiple=True, metavar="SERVICE[:PORT]=N",
              help="Listen on 127.0.0.1:N for a Service (port); default: a free port.")
@click.option("--image-policy", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Refuse images this image policy denies (signatures, attestations).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the deploy writes (image cache, pods' logs); default: the "
                   "deploy.state_dir setting.")
@click.option("--restart-backoff", type=float, default=None, hidden=True,
              help="First crash-loop backoff in seconds (the kubelet's is 10).")
@registry_flags(purpose=", to pull images")
def deploy_cmd(local: bool, chart: Path, values_files: tuple[Path, ...],
               set_values: tuple[str, ...], set_string: tuple[str, ...],
               set_file: tuple[str, ...], release_name: str, namespace: str,
               secrets: tuple[str, ...], volumes: tuple[str, ...],
               service_ports: tuple[str, ...], image_policy: Path | None,
               state_dir: Path | None, restart_backoff: float | None,
               registry_options: Any) -> None:
    """Run CHART's Deployments/Rollouts as local pods, Services via nginx, ServiceMonitors
    via Prometheus, until SIGTERM or Ctrl-C.

    Prints each pod's state and a line with http://127.0.0.1:PORT once a Service has a
    ready pod. Exit 0 after a clean stop, else the first error's code (docs/exit-codes.md).
    """
    from pipeline.config import load_settings
    from pipeline.deploy.run import deploy_chart, parse_pairs
    from pipeline.errors import InputError

    ports: dict[str, int] = {}
    for name, value in parse_pairs(service_ports, "--service-port").items():
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise InputError(f"--service-port {name}={value}: not a port number")
        ports[name] = int(value)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def show(event: Any) -> None:
        line = f"{event.subject}: {event.message}"
        if event.kind == "error":
            click.echo(f"error: {line}", err=True)
        else:
            click.echo(line)
        sys.stdout.flush()

    code = deploy_chart(
        chart, chart_flags(values_files, set_values, set_string, set_file, release_name,
                           namespace),
        state_dir or load_settings().deploy().state_dir, stop=stop, on_event=show,
        registry_options=registry_options,
        secret_dirs={k: Path(v) for k, v in parse_pairs(secrets, "--secret").items()},
        claim_dirs={k: Path(v) for k, v in parse_pairs(volumes, "--volume").items()},
        image_policy=image_policy, service_ports=ports, backoff_base=restart_backoff)
    if code:
        sys.exit(code)
