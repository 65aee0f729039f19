"""``pipeline release promote|rollback|status`` (aliases ``promote``, ``rollback``).

Thin: parse, build the analysis (Prometheus + thresholds) and, with ``--local``, the
local target (nginx + Prometheus in front of two OIP servers), call
:mod:`pipeline.release.promote`, print. Exit 11 after a failed analysis, 9 when
Prometheus is unreachable (both after the roll-back commit), 4 for a tag-only
reference (docs/release.md, docs/exit-codes.md).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from pipeline._cli._common import emit, json_option, wants_json
from pipeline._cli._registry import registry_flags
from pipeline.errors import ConfigError, InputError, NotFoundError
from pipeline.oci.registry import RegistryOptions
from pipeline.release.analysis import Prometheus, Thresholds, analyse
from pipeline.release.gitops import GitOpsRepo, pinned
from pipeline.release.promote import check_image_policy, parse_stages, promote, rollback


def _gitops_options(func: Any) -> Any:
    func = click.option("--env", "env", required=True, help="Environment name (e.g. prod).")(func)
    return click.option("--gitops", type=click.Path(path_type=Path), required=True,
                        help="GitOps repository working tree (created with git init if "
                             "missing).")(func)


@click.command("status")
@_gitops_options
@click.option("--history", is_flag=True, default=False, help="Also list every change.")
@json_option
def status_command(gitops: Path, env: str, history: bool, as_json: bool) -> None:
    """Show what runs in ENV: image, model, canary weight, stage, status."""
    repo = GitOpsRepo(gitops, create=False)
    state = repo.current(env)
    if state is None:
        raise NotFoundError(f"environment {env!r} has no release in {gitops}")
    result: dict[str, Any] = {
        "environment": env, "image": state.image, "model": state.model,
         "weight": state.weight, "stage": state.stage, "status": state.status,
         "stable": state.stable.to_dict() if state.stable else None,
         "failed": state.failed.to_dict() if state.failed else None,
        "reasons": list(state.reasons)}
    if history:
        result["history"] = [{"commit": c.sha, "message": c.message, "status": c.state.status,
                              "weight": c.state.weight} for c in repo.history(env)]
    lines = [f"{env}: {state.status} (stage {state.stage}, canary weight {state.weight}%)",
             f"  image: {state.image}", f"  model: {state.model}"]
    if state.stable:
        lines.append(f"  stable: {state.stable.image}")
    lines += [f"  reason: {r}" for r in state.reasons]
    lines += [f"  {h['commit'][:12]} {h['message']}" for h in result.get("history", [])]
    emit(result, as_json, "\n".join(lines))


@click.command("promote")
@_gitops_options
@click.option("--image", required=True, help="Image reference pinned by digest (REF@sha256:...).")
@click.option("--model", required=True, help="Sealed model reference pinned by digest.")
@click.option("--stages", default="10,50,100", show_default=True,
              help="Canary weights in percent, ending at 100.")
@click.option("--prometheus", "prometheus_url", default=None,
              help="Prometheus base URL (default with --local: the local one).")
@click.option("--thresholds", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="YAML: success_rate, p99_seconds, min_requests, window, "
                                 "interval, count, initial_delay.")
@click.option("--interval", type=float, default=None, help="Seconds between measurements.")
@click.option("--count", type=int, default=None, help="Measurements per stage (all must pass).")
@click.option("--window", default=None, help="PromQL range of each measurement (e.g. 30s).")
@click.option("--min-requests", type=int, default=None, help="Fewer canary requests fail.")
@click.option("--initial-delay", type=float, default=None,
              help="Seconds to wait after a weight change before the first measurement.")
@click.option("--job", default="canary", show_default=True,
              help="Prometheus job label of the canary's scrape target.")
@click.option("--image-policy", type=click.Path(path_type=Path), default=None,
              help="Also require pipeline.policy.image_policy to allow the image (needs the "
                   "registry).")
@registry_flags(purpose=", with --image-policy")
@click.option("--local", "local", is_flag=True, default=False,
              help="Split traffic locally: nginx + Prometheus in front of --stable-url and "
                   "--canary-url.")
@click.option("--stable-url", default=None, help="With --local: the stable OIP server.")
@click.option("--canary-url", default=None, help="With --local: the canary OIP server.")
@click.option("--listen", type=int, default=None, help="With --local: nginx's port.")
@click.option("--traffic-path", default=None,
              help="With --local: POST --traffic-body here through nginx during the rollout.")
@click.option("--traffic-body", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="JSON request body for --traffic-path.")
@json_option
def promote_command(
    gitops: Path, env: str, image: str, model: str, stages: str, prometheus_url: str | None,
    thresholds: Path | None, interval: float | None, count: int | None, window: str | None,
    min_requests: int | None, initial_delay: float | None, job: str,
    image_policy: Path | None, registry_options: RegistryOptions,
    local: bool, stable_url: str | None, canary_url: str | None, listen: int | None,
    traffic_path: str | None, traffic_body: Path | None, as_json: bool,
) -> None:
    """Canary IMAGE+MODEL through the stages, gated on Prometheus analysis."""
    image, model = pinned(image, "image"), pinned(model, "model")
    weights = parse_stages(stages)
    limits = Thresholds.load(thresholds, interval=interval, count=count, window=window,
                             min_requests=min_requests, initial_delay=initial_delay)
    if image_policy is not None:
        check_image_policy(image, image_policy, registry_options)
    if local and not (stable_url and canary_url):
        raise InputError("--local needs --stable-url and --canary-url")
    if (traffic_path is None) != (traffic_body is None):
        raise InputError("--traffic-path and --traffic-body go together")
    if not local and not prometheus_url:
        raise ConfigError("no Prometheus to analyse with: give --prometheus URL (or --local)")
    repo = GitOpsRepo(gitops)
    say = (lambda _m: None) if wants_json(as_json) else (lambda m: click.echo(m, err=True))
    with ExitStack() as stack:
        apply_weight = None
        if local:
            from pipeline.release.local import LocalTarget, TrafficLoop

            target = stack.enter_context(LocalTarget(stable_url, canary_url, listen_port=listen))
            say(f"local split on {target.url}, Prometheus on {target.prometheus.url}")
            prometheus_url = prometheus_url or target.prometheus.url
            apply_weight = target.set_weight
            if traffic_path and traffic_body:
                body = json.loads(traffic_body.read_text(encoding="utf-8"))
                stack.enter_context(TrafficLoop(target.url, traffic_path, body))
        prom = Prometheus(prometheus_url)

        def run_analysis(weight: int) -> Any:
            return analyse(prom, job, limits, on_measurement=lambda m: say(
                f"  {'ok' if m.ok else 'FAIL'}: {m.to_dict()}"))

        result = promote(repo, env, image, model, analyse=run_analysis, stages=weights,
                         apply_weight=apply_weight, on_event=say)
    emit(result.to_dict(), as_json,
         f"{env}: promoted {image} with {model} ({len(result.commits)} commits)")


@click.command("rollback")
@_gitops_options
@click.option("--reason", default="manual roll-back", show_default=True,
              help="Recorded in the commit and in release.yaml.")
@json_option
def rollback_command(gitops: Path, env: str, reason: str, as_json: bool) -> None:
    """Revert ENV to its last promoted release, as a new commit (Argo CD syncs it)."""
    state, sha = rollback(GitOpsRepo(gitops, create=False), env, reason)
    emit({"environment": env, "image": state.image, "model": state.model, "commit": sha,
          "status": state.status}, as_json, f"{env}: rolled back to {state.image} ({sha[:12]})")
