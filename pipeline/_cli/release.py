"""``pipeline release promote|rollback|status`` (aliases ``promote``, ``rollback``) and
``pipeline gitops init``.

Thin: parse, build the gates, the canary definition (the chart rendered for the
environment: :func:`pipeline.release.canary.render_definition`) and its executor, the
publisher (push, Argo CD) and, with ``--local``, the local target (nginx + Prometheus in
front of two OIP servers, labelled as the chart's ServiceMonitor); call
:mod:`pipeline.release.promote`; print (live progress with rich on a terminal).
Exit codes in docs/release.md and docs/exit-codes.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from pipeline._cli._common import emit, json_option, wants_json
from pipeline._cli._registry import registry_flags
from pipeline.errors import ConfigError, ConflictError, InputError, NotFoundError
from pipeline.oci.registry import RegistryOptions
from pipeline.release.analysis import Prometheus
from pipeline.release.gitops import GitOpsRepo, pinned
from pipeline.release.promote import PromoteResult, promote, rollback

_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHART = _ROOT / "helm" / "secure-runtime"
DEFAULT_POLICIES = _ROOT / "policies"


def _existing_repo(gitops: Path) -> GitOpsRepo:
    """status and rollback read an existing repository; they never create one."""
    if not gitops.exists():
        raise NotFoundError(f"no GitOps repository at {gitops} (nothing was ever promoted "
                            "there; `pipeline promote` or `pipeline gitops init` creates it)")
    return GitOpsRepo(gitops, create=False)


def _settings() -> Any:
    from pipeline.config import load_settings

    return load_settings().release()


def _gitops_options(create: bool) -> Callable[[Any], Any]:
    help_text = ("GitOps repository working tree (created with git init if missing)."
                 if create else "GitOps repository working tree (must exist).")

    def add(func: Any) -> Any:
        func = click.option("--env", "env", required=True,
                            help="Environment name (e.g. prod).")(func)
        return click.option("--gitops", type=click.Path(path_type=Path), required=True,
                            help=help_text)(func)
    return add


def _history_entry(c: Any) -> dict[str, Any]:
    st = c.state
    return {"commit": c.sha, "message": c.message, "author": c.author, "date": c.date,
            "image": st.image, "model": st.model, "release": st.release.label,
            "status": st.status, "stage": st.stage, "weight": st.weight,
            "analysis": st.analysis, "reasons": list(st.reasons),
            "failed": st.failed.to_dict() if st.failed else None,
            "forced": st.forced or None, "approved_by": st.approved_by or None,
            "who": st.who or c.author, "when": st.when or c.date,
            "evidence": list(st.evidence)}


@click.command("status")
@_gitops_options(create=False)
@click.option("--history", is_flag=True, default=False, help="Also list every change.")
@json_option
def status_command(gitops: Path, env: str, history: bool, as_json: bool) -> None:
    """Show what runs in ENV (image, model, weight, stage, status) and its history."""
    repo = _existing_repo(gitops)
    state = repo.current(env)
    if state is None:
        raise NotFoundError(f"environment {env!r} has no release in {gitops}")
    entries = [_history_entry(c) for c in repo.history(env)]
    result: dict[str, Any] = {
        "environment": env, "image": state.image, "model": state.model,
        "release": state.release.label, "weight": state.weight, "stage": state.stage,
        "status": state.status, "analysis": state.analysis,
        "stable": state.stable.to_dict() if state.stable else None,
        "failed": state.failed.to_dict() if state.failed else None,
        "reasons": list(state.reasons), "history": entries}
    lines = [f"{env}: {state.status} {state.release.label} (stage {state.stage}, "
             f"canary weight {state.weight}%)",
             f"  image: {state.image}", f"  model: {state.model}"]
    if state.stable:
        lines.append(f"  stable: {state.stable.label}")
    lines += [f"  reason: {r}" for r in state.reasons]
    if history:
        lines += [f"  {h['commit'][:12]} {h['when']} {h['who']}: {h['message']}"
                  for h in entries]
    emit(result, as_json, "\n".join(lines))


@contextmanager
def _live(enabled: bool) -> Iterator[Callable[[str], None]]:
    """Progress on stderr: rich, live, on a terminal; plain lines otherwise; silent with
    --json (stdout stays the JSON)."""
    if not enabled:
        yield lambda _m: None
        return
    import sys

    if not sys.stderr.isatty():
        yield lambda m: click.echo(m, err=True)
        return
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    console = Console(stderr=True)
    rows: list[str] = []

    def table() -> Table:
        t = Table(show_header=False, box=None, pad_edge=False)
        for row in rows[-12:]:
            t.add_row(row)
        return t

    with Live(table(), console=console, refresh_per_second=8, transient=False) as live:
        def say(message: str) -> None:
            rows.append(message)
            live.update(table())
        yield say


def _model_verifier(trust: tuple[Path, ...], registry_options: RegistryOptions
                    ) -> Callable[[str], str] | None:
    """Pull the sealed model (ciphertext only) and verify its signature against ``trust``."""
    if not trust:
        return None

    def verify(model: str) -> str:
        import tempfile

        from pipeline.distribution.model_artifact import pull_model
        from pipeline.signing.model import Trust

        with tempfile.TemporaryDirectory(prefix="pipeline-gate-") as tmp:
            pull_model(model, Path(tmp) / "model", trust=Trust(public_keys=tuple(trust)),
                       registry_options=registry_options)
        return "verified"
    return verify


@click.command("promote")
@_gitops_options(create=True)
@click.option("--image", default=None, help="Image reference pinned by digest (REF@sha256:...).")
@click.option("--model", default=None, help="Sealed model reference pinned by digest.")
@click.option("--resume", is_flag=True, default=False,
              help="Continue the interrupted promotion of ENV from its last committed step.")
@click.option("--force", is_flag=True, default=False,
              help="Promote although the previous environment did not (needs --reason).")
@click.option("--reason", default=None, help="Why --force (recorded in git).")
@click.option("--approve", is_flag=True, default=False,
              help="Give the manual approval an environment requires (you are recorded).")
@click.option("--continue", "continue_", is_flag=True, default=False,
              help="End the pause (a Rollout `pause: {}` step) the running promotion of ENV "
                   "waits in, and exit.")
@click.option("--prometheus", "prometheus_url", default=None,
              help="Prometheus base URL (default with --local: the local one).")
@click.option("--hold", "hold_seconds", type=float, default=30.0, show_default=True,
              help="Seconds to hold (retrying) while Prometheus is unreachable, then roll back.")
@click.option("--image-policy", type=click.Path(path_type=Path), default=None,
              help="Image policy (default: release.image_policy, else policies/image-policy.yaml).")
@click.option("--trust", "trust", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              multiple=True, help="Trusted model-signer public key (PEM); default: trust "
                                  "from pipeline.yaml / PIPELINE_TRUST.")
@click.option("--policies", type=click.Path(path_type=Path), default=None,
              help="Admission policies checked on the rendered chart (default: policies/).")
@click.option("--chart", type=click.Path(path_type=Path), default=None,
              help="The secure-runtime chart (default: helm/secure-runtime).")
@click.option("-f", "--values", "values_files", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Extra chart values for ENV (over pipeline.yaml's); the canary is their "
                   "rendered Rollout steps and AnalysisTemplates.")
@registry_flags(purpose=" (gates: image policy, model signature)")
@click.option("--local", "local", is_flag=True, default=False,
              help="Run the canary locally: the chart's pods (stable: ENV's current "
                   "release; canary: --image/--model) on this machine, as `pipeline deploy "
                   "--local` runs them; or nginx + Prometheus in front of --stable-url and "
                   "--canary-url.")
@click.option("--secret", "secrets", multiple=True, metavar="NAME=DIR",
              help="With --local (pods): serve Secret NAME from DIR; repeatable.")
@click.option("--volume", "volumes", multiple=True, metavar="CLAIM=DIR",
              help="With --local (pods): serve persistentVolumeClaim CLAIM from DIR.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --local (pods): image cache and pods' files (default: the "
                   "deploy.state_dir setting).")
@click.option("--stable-url", default=None,
              help="With --local: a stable OIP server started by hand (with --canary-url).")
@click.option("--canary-url", default=None,
              help="With --local: a canary OIP server started by hand (with --stable-url).")
@click.option("--listen", type=int, default=None, help="With --local: nginx's port.")
@click.option("--traffic-path", default=None,
              help="With --local: POST --traffic-body here through nginx during the rollout.")
@click.option("--traffic-body", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="JSON request body for --traffic-path.")
@json_option
def promote_command(
    gitops: Path, env: str, image: str | None, model: str | None, resume: bool, force: bool,
    reason: str | None, approve: bool, continue_: bool, prometheus_url: str | None,
    hold_seconds: float, image_policy: Path | None, trust: tuple[Path, ...], policies: Path | None,
    chart: Path | None, values_files: tuple[Path, ...], registry_options: RegistryOptions,
    local: bool, secrets: tuple[str, ...], volumes: tuple[str, ...], state_dir: Path | None,
    stable_url: str | None, canary_url: str | None, listen: int | None,
    traffic_path: str | None, traffic_body: Path | None, as_json: bool,
) -> None:
    """Canary IMAGE+MODEL through the chart's rendered Rollout steps, gated and analysed
    with its AnalysisTemplates; every step a commit."""
    from pipeline.config import load_settings
    from pipeline.release.environments import Publisher, environment_values, merge_values
    from pipeline.release.gates import Gates, load_values_file

    if continue_:
        from pipeline.release.pauses import signal_continue

        what = signal_continue(_existing_repo(gitops).git_dir, env)
        emit({"environment": env, "continued": what}, as_json, f"{env}: continued ({what})")
        return
    loaded = load_settings()
    settings = loaded.release()
    if not resume and (image is None or model is None):
        raise InputError("give --image and --model (or --resume)")
    image = pinned(image, "image") if image else None
    model = pinned(model, "model") if model else None
    if force and not reason:
        raise InputError("--force needs --reason TEXT (it is recorded)")
    if (stable_url is None) != (canary_url is None):
        raise InputError("--stable-url and --canary-url go together")
    if stable_url and not local:
        raise InputError("--stable-url and --canary-url need --local")
    pods = local and not stable_url
    if (secrets or volumes or state_dir) and not pods:
        raise InputError("--secret, --volume and --state-dir are for --local without "
                         "--stable-url/--canary-url (the chart's pods)")
    if (traffic_path is None) != (traffic_body is None):
        raise InputError("--traffic-path and --traffic-body go together")
    if not local and not prometheus_url:
        raise ConfigError("no Prometheus to analyse with: give --prometheus URL (or --local)")
    env_settings = settings.environment(env) if settings.environments else None
    predecessor = settings.predecessor(env) if env_settings else None
    values: dict[str, Any] = dict(env_settings.values) if env_settings else {}
    for path in values_files:
        values = merge_values(values, load_values_file(path))
    trust = trust or loaded.keys().trust
    policy_path = image_policy or settings.image_policy or DEFAULT_POLICIES / "image-policy.yaml"
    gates = Gates(policy_path, policies or settings.policies or DEFAULT_POLICIES,
                  chart or DEFAULT_CHART, values,
                  env_settings.namespace if env_settings else env,
                  _model_verifier(tuple(trust), registry_options), registry_options)
    repo = GitOpsRepo(gitops)
    if env_settings is not None:
        values = merge_values(environment_values(repo, env_settings), values)
    with ExitStack() as stack:
        say = stack.enter_context(_live(not wants_json(as_json)))
        publish = None
        if settings.remote:
            argocd = _argocd(settings)
            repo.fetch(settings.remote, settings.branch)
            publish = Publisher(repo, settings.remote, settings.branch, env, argocd,
                                settings.argocd_timeout, on_event=say)
        current = repo.current(env) if resume else None
        from pipeline.release.gitops import Release

        release = (current.release if current is not None else None) \
            or Release(image or "", model or "")
        namespace = env_settings.namespace if env_settings else env
        from pipeline.release.canary import render_definition

        rendered, definition = render_definition(chart or DEFAULT_CHART, values, release,
                                                 namespace)
        if current is not None and current.stages and current.stages != definition.weights:
            raise ConflictError(f"--resume: the rendered Rollout's weights are now "
                                f"{list(definition.weights)}, the interrupted promotion "
                                f"walked {list(current.stages)}; restore its values first")
        say(f"canary: {_describe_steps(definition)} (rendered Rollout {definition.rollout})")
        traffic: Any = _ClusterTraffic()
        settle: Callable[[Any], None] | None = None  # waits for scrapes of the new split
        if local and stable_url and canary_url:
            from pipeline.release.canary import scrape_labels
            from pipeline.release.local import LocalTarget, TrafficLoop

            target = stack.enter_context(LocalTarget(
                stable_url, canary_url, listen_port=listen,
                scrape=scrape_labels(rendered, definition)))
            say(f"local split on {target.url}, Prometheus on {target.prometheus.url}")
            prometheus_url = prometheus_url or target.prometheus.url
            traffic = target
            if traffic_path and traffic_body:
                body = json.loads(traffic_body.read_text(encoding="utf-8"))
                stack.enter_context(TrafficLoop(target.url, traffic_path, body))
        elif pods:
            traffic, definition, prometheus_url = _local_pods(
                stack, repo, env, current or repo.current(env), rendered, definition, values,
                namespace, chart or DEFAULT_CHART, secrets, volumes,
                state_dir or loaded.deploy().state_dir, policy_path, registry_options, say,
                prometheus_url, traffic_path, traffic_body)
            settle = traffic.wait_observed
        if not prometheus_url:
            raise ConfigError("no Prometheus to analyse with: give --prometheus URL")
        from pipeline.release.executor import StepExecutor
        from pipeline.release.pauses import wait_for_continue

        metrics = Prometheus(prometheus_url)
        executor = StepExecutor(definition, traffic, metrics,
                                wait_continue=lambda what: wait_for_continue(repo.git_dir,
                                                                             env, what),
                                on_event=say,
                                settle=(lambda: settle(metrics)) if settle else None)
        result: PromoteResult = promote(
            repo, env, image, model, executor=executor,
            stages=definition.weights, on_event=say, predecessor=predecessor,
            force_reason=reason if force else None,
            require_approval=bool(env_settings and env_settings.approval == "manual"),
            approved_by=_actor() if approve else None, gate=gates.gate(release, say),
            publish=publish, hold_seconds=hold_seconds, resume=resume, values=values)
    # What ran, step by step (the rendered steps, in order): the proof of "same canary".
    emit({**result.to_dict(), "executed": executor.log}, as_json,
         f"{env}: promoted {result.release.label} ({len(result.commits)} commits)")


def _local_pods(stack: ExitStack, repo: GitOpsRepo, env: str, current: Any, rendered: Any,
                definition: Any, values: dict[str, Any], namespace: str, chart: Path,
                secrets: tuple[str, ...], volumes: tuple[str, ...], state_dir: Path,
                policy_path: Path, registry_options: RegistryOptions,
                say: Callable[[str], None], prometheus_url: str | None,
                traffic_path: str | None, traffic_body: Path | None
                ) -> tuple[Any, Any, str]:
    """The canary on the chart's pods (LocalCluster): stable from ENV's running release,
    canary from the new one. Returns (traffic, definition, Prometheus URL); a first
    release's definition is the initial deploy's single 100 % step."""
    from pipeline.deploy.cluster import LocalCluster
    from pipeline.deploy.run import image_policy_check, parse_pairs
    from pipeline.release.canary import render_definition
    from pipeline.release.cluster_target import ClusterTraffic, initial_definition
    from pipeline.release.local import TrafficLoop

    stable = current.stable if current is not None else None
    stable_chart = None
    if stable is not None:
        stable_chart, _ = render_definition(chart, values, stable, namespace)
    else:
        definition = initial_definition(definition)
        say("first release of this environment: straight to 100% (Argo Rollouts' initial "
            "deploy)")
    cluster = LocalCluster(
        state_dir, registry_options=registry_options,
        secret_dirs={k: Path(v) for k, v in parse_pairs(secrets, "--secret").items()},
        claim_dirs={k: Path(v) for k, v in parse_pairs(volumes, "--volume").items()},
        image_check=image_policy_check(policy_path, registry_options),
        on_event=lambda e: say(f"{'error: ' if e.kind == 'error' else ''}{e.subject}: "
                               f"{e.message}"))
    stack.callback(cluster.close)
    traffic = ClusterTraffic(cluster, definition, rendered, stable_chart, on_event=say)
    traffic.start()
    if not cluster.prometheus_url and not prometheus_url:
        raise ConfigError("the chart rendered no ServiceMonitor (serviceMonitor.enabled): "
                          "no local Prometheus to analyse with")
    if traffic_path and traffic_body:
        body = json.loads(traffic_body.read_text(encoding="utf-8"))
        stack.enter_context(TrafficLoop(traffic.url, traffic_path, body))
    return traffic, definition, prometheus_url or str(cluster.prometheus_url)


def _describe_steps(definition: Any) -> str:
    from pipeline.release.canary import Analysis, Pause

    parts = []
    for stage in definition.stages:
        parts.append(f"{stage.weight}%")
        for step in stage.steps:
            if isinstance(step, Pause):
                parts.append("pause " + (f"{step.seconds:g}s" if step.seconds is not None
                                         else "until --continue"))
            elif isinstance(step, Analysis):
                parts.append(f"analysis ({len(step.metrics)} metrics)")
    return " -> ".join(parts)


class _ClusterTraffic:
    """Without --local, Argo Rollouts moves the traffic in the cluster: nothing to do here."""

    def set_weight(self, weight: int) -> None:
        return None


def _argocd(settings: Any) -> Any:
    """The Argo CD client when ``release.argocd.server`` is configured, else None."""
    if not settings.argocd_server:
        return None
    from pipeline.release.argocd import ArgoCD

    return ArgoCD(settings.argocd_server, settings.argocd_token,
                  namespace=settings.argocd_namespace)


def _actor() -> str:
    from pipeline.release.gitops import actor

    return actor()


@click.command("rollback")
@_gitops_options(create=False)
@click.option("--to", "to", default=None,
              help="The promoted release to return to: a commit, or its image/model reference "
                   "(default: the last good one).")
@click.option("--reason", default="manual roll-back", show_default=True,
              help="Recorded in the commit and in release.yaml.")
@json_option
def rollback_command(gitops: Path, env: str, to: str | None, reason: str, as_json: bool) -> None:
    """Revert ENV's values to a promoted release, as a new commit (Argo CD syncs it).

    Refused (exit 16, nothing committed) when ENV already runs that release.
    """
    settings = _settings()
    repo = _existing_repo(gitops)
    publish = None
    if settings.remote:
        from pipeline.release.environments import Publisher

        repo.fetch(settings.remote, settings.branch)
        publish = Publisher(repo, settings.remote, settings.branch, env, _argocd(settings),
                            settings.argocd_timeout,
                            on_event=None if wants_json(as_json) else
                            (lambda m: click.echo(m, err=True)))
    state, sha = rollback(repo, env, reason, to=to, publish=publish)
    emit({"environment": env, "image": state.image, "model": state.model,
          "release": state.release.label, "commit": sha, "status": state.status},
         as_json, f"{env}: rolled back to {state.release.label} ({sha[:12]})")


@click.command("init")
@click.option("--gitops", type=click.Path(path_type=Path), required=True,
              help="GitOps repository working tree (created with git init if missing).")
@json_option
def gitops_init_command(gitops: Path, as_json: bool) -> None:
    """Write the Argo CD Applications for release.environments (pipeline.yaml) and commit."""
    from pipeline.release.environments import init_repository

    files, sha = init_repository(GitOpsRepo(gitops), _settings())
    emit({"files": files, "commit": sha}, as_json,
         f"{gitops}: {'committed ' + sha[:12] if sha else 'already up to date'} "
         f"({', '.join(files)})")
