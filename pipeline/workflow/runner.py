"""Run an Argo DAG workflow on this machine: each script step as a local subprocess.

Why: with no cluster, the release and PR workflows still run for real, from the same Hera
objects a cluster runs. The shared workspace volume becomes one local directory; a
Kubernetes Secret volume becomes the local directory its ``secretName`` parameter names
(the parameter carries a path locally, a Secret name on a cluster, never the secret
itself); ``pipeline`` resolves to this project's CLI (the venv's bin first on PATH).
Independent tasks run concurrently (bounded); the first failure cancels what is running,
starts nothing more, and becomes the run's exit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline._fileio import write_atomic
from pipeline._process import without_git_repository_env
from pipeline.errors import ConfigError, PipelineError
from pipeline.oci.registry import RegistryOptions
from pipeline.workflow.isolation import (
    ISOLATIONS,
    StepImage,
    add_mountpoints,
    pull_step_image,
    sandbox_argv,
)
from pipeline.workflow.plan import Plan, Task
from pipeline.workflow.substitute import substitute, unresolved

RECORD = "run.json"


class WorkflowStepError(PipelineError):
    """A step failed: the run stops and exits with that step's own exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class StepRecord:
    """What happened to one task (the run record's ``steps`` entries)."""

    name: str
    status: str = "pending"  # pending | running | succeeded | failed | cancelled | skipped
    exit_code: int | None = None
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    log: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class RunResult:
    """The outcome of a run; ``record`` is the JSON file written atomically."""

    workflow: str
    status: str
    exit_code: int
    failed_step: str | None
    steps: list[StepRecord]
    record: Path
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "status": self.status, "exit_code": self.exit_code,
                "failed_step": self.failed_step, "record": str(self.record),
                "duration_s": round(self.duration_s, 3),
                "steps": [asdict(s) for s in self.steps]}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def resolve_parameters(plan: Plan, given: Mapping[str, str]) -> dict[str, str]:
    """Declared defaults overridden by ``given``; unknown names are a ConfigError.

    ``git-repo`` (empty: the current directory) is made absolute here, against the
    directory the run was started from (:func:`pipeline.workflow.gitrepo.resolve_git_repo`).
    """
    from pipeline.workflow.gitrepo import resolve_git_repo

    unknown = sorted(set(given) - set(plan.parameters))
    if unknown:
        raise ConfigError(f"unknown parameter(s) for {plan.name}: {', '.join(unknown)} "
                          f"(declared: {', '.join(plan.parameters)})")
    values = {**plan.parameters, **given}
    if "git-repo" in values:
        values["git-repo"] = resolve_git_repo(values["git-repo"])
    return values


class _Mounts:
    """Container mount paths → local paths for one task (longest prefix first)."""

    def __init__(self, pairs: list[tuple[str, Path]],
                 read_only: frozenset[str] = frozenset()) -> None:
        self.pairs = sorted(pairs, key=lambda p: -len(p[0]))
        self.read_only = read_only

    def localize(self, text: str) -> str:
        for mount, local in self.pairs:
            text = text.replace(mount, str(local))
        return text


def _mounts(plan: Plan, task: Task, values: Mapping[str, str], workspace: Path) -> _Mounts:
    volumes = dict(plan.volumes)
    volumes.update({v["name"]: v for v in task.template.get("volumes", [])})
    pairs = []
    read_only = set()
    for mount in task.template["script"].get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            raise ConfigError(f"task {task.name}: no volume named {mount['name']}")
        if "persistentVolumeClaim" in volume:
            local = workspace
        elif "secret" in volume:
            name = substitute(volume["secret"]["secretName"], values, where=task.name)
            local = Path(name).expanduser()
            if not local.is_dir():
                raise ConfigError(
                    f"task {task.name}: secret volume {mount['name']!r} needs a local "
                    f"directory holding the secret's files; the parameter gives {name!r}, "
                    "which is not a directory")
            local = local.resolve()
            read_only.add(mount["mountPath"])
        else:
            raise ConfigError(f"task {task.name}: volume {mount['name']} has a kind the "
                              "local runner cannot map")
        if mount.get("readOnly") or volume.get("secret", {}).get("readOnly"):
            read_only.add(mount["mountPath"])
        pairs.append((mount["mountPath"], local))
    return _Mounts(pairs, frozenset(read_only))


@dataclass
class _Running:
    task: Task
    process: subprocess.Popen[bytes]
    started: float
    mounts: _Mounts
    log: Any


class Runner:
    """Execute one :class:`Plan` in ``workdir`` (``workspace/``, ``logs/``, ``run.json``)."""

    def __init__(self, plan: Plan, parameters: Mapping[str, str], workdir: Path, *,
                 max_parallel: int = 2, env: Mapping[str, str] | None = None,
                 on_event: Callable[[str, StepRecord], None] | None = None,
                 image: StepImage | None = None) -> None:
        self.plan = plan
        #: None: steps run on the host; else inside this unpacked image (isolation.py).
        self.image = image
        self.parameters = resolve_parameters(plan, parameters)
        self.workdir = workdir.resolve()
        self.workspace = self.workdir / "workspace"
        self.logs = self.workdir / "logs"
        self.scripts = self.workdir / "scripts"
        self.max_parallel = max(1, max_parallel)
        # A git hook's GIT_DIR & co. must not reach the steps' own git commands.
        self.env = without_git_repository_env(os.environ if env is None else env)
        bindir = str(Path(sys.executable).parent)
        self.env["PATH"] = bindir + os.pathsep + self.env.get("PATH", "")
        # Steps learn they run locally, and where the run record is (the release
        # record links to it); on Argo the variable is absent.
        self.env["PIPELINE_RUN_DIR"] = str(self.workdir)
        #: ``{{workflow.uid}}``: Argo's is a UUID per run; so is ours.
        self.uid = str(uuid.uuid4())
        self.on_event = on_event or (lambda _event, _step: None)
        self.records = {t.name: StepRecord(t.name) for t in plan.tasks}
        self.outputs: dict[str, str] = {}
        self.started_at = _now()

    # -- one task ---------------------------------------------------------------------
    def _values(self) -> dict[str, str]:
        values = {f"workflow.parameters.{k}": v for k, v in self.parameters.items()}
        values["workflow.name"] = self.plan.name
        values["workflow.uid"] = self.uid
        values.update(self.outputs)
        return values

    def _start(self, task: Task) -> _Running:
        values = self._values()
        inputs = {f"inputs.parameters.{k}": substitute(v, values, where=task.name)
                  for k, v in task.arguments.items()}
        declared = {p["name"] for p in task.template.get("inputs", {}).get("parameters", [])}
        missing = declared - set(task.arguments)
        if missing:
            raise ConfigError(f"task {task.name}: no argument for input(s) {sorted(missing)}")
        values.update(inputs)
        script = task.template["script"]
        mounts = _mounts(self.plan, task, values, self.workspace)
        # Inside the image the container paths are real (mounted): nothing is rewritten.
        localize = mounts.localize if self.image is None else (lambda text: text)
        source = localize(substitute(script["source"], values, where=task.name))
        left = unresolved(source)
        if left:
            raise ConfigError(f"task {task.name}: unresolved expression(s) {left}")
        step_env = {var["name"]: localize(substitute(var["value"], values, where=task.name))
                    for var in script.get("env", [])}
        path = self.scripts / f"{task.name}.sh"
        write_atomic(path, source, mode=0o644)
        log_path = self.logs / f"{task.name}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - closed when the step ends
        if self.image is None:
            env = {**self.env, **step_env}
            command = [*script.get("command", ["bash"]), str(path)]
            cwd = self.workspace
        else:
            env = {}
            command = sandbox_argv(
                self.image,
                mounts=[(m, local, m in mounts.read_only) for m, local in mounts.pairs],
                script=path, command=list(script.get("command", ["bash"])), env=step_env,
                workdir=script.get("workingDir") or str(self.image.config.get(
                    "WorkingDir") or "/"))
            cwd = self.workdir
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        record = self.records[task.name]
        record.status, record.started, record.log = "running", _now(), str(log_path)
        self.on_event("start", record)
        return _Running(task, process, time.monotonic(), mounts, log)

    def _finish(self, running: _Running, code: int, status: str | None = None) -> StepRecord:
        running.log.close()
        record = self.records[running.task.name]
        record.exit_code = code
        record.finished = _now()
        record.duration_s = round(time.monotonic() - running.started, 3)
        record.status = status or ("succeeded" if code == 0 else "failed")
        if record.status == "succeeded":
            for out in running.task.template.get("outputs", {}).get("parameters", []):
                path = Path(running.mounts.localize(out["valueFrom"]["path"]))
                try:
                    value = path.read_text(encoding="utf-8").strip()
                except OSError as exc:
                    record.status, record.exit_code = "failed", 1
                    self.on_event("finish", record)
                    raise ConfigError(f"task {record.name}: output {out['name']} not written "
                                      f"({exc.strerror})") from None
                record.outputs[out["name"]] = value
                self.outputs[f"tasks.{record.name}.outputs.parameters.{out['name']}"] = value
        self.on_event("finish", record)
        return record

    # -- the run ----------------------------------------------------------------------
    def _write_record(self, status: str, exit_code: int | None, failed: str | None) -> Path:
        path = self.workdir / RECORD
        data = {"workflow": self.plan.name, "uid": self.uid, "status": status,
                "exit_code": exit_code, "failed_step": failed, "started": self.started_at,
                "finished": _now(),
                "parameters": self.parameters,
                "steps": [asdict(self.records[t.name]) for t in self.plan.tasks]}
        write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return path

    def run(self) -> RunResult:
        """Run every task once its dependencies succeeded; stop at the first failure."""
        for directory in (self.workspace, self.logs, self.scripts):
            directory.mkdir(parents=True, exist_ok=True)
        if self.image is not None:
            add_mountpoints(self.image, sorted({
                m["mountPath"] for t in self.plan.tasks
                for m in t.template["script"].get("volumeMounts", [])}))
        begun = time.monotonic()
        pending = list(self.plan.tasks)
        running: dict[str, _Running] = {}
        failed: str | None = None
        exit_code = 0
        self._write_record("running", None, None)
        try:
            while pending or running:
                if failed is None:
                    done = {n for n, r in self.records.items() if r.status == "succeeded"}
                    for task in [t for t in pending if set(t.depends) <= done]:
                        if len(running) >= self.max_parallel:
                            break
                        pending.remove(task)
                        running[task.name] = self._start(task)
                        self._write_record("running", None, None)
                for name, item in list(running.items()):
                    code = item.process.poll()
                    if code is None:
                        continue
                    del running[name]
                    record = self._finish(item, code)
                    self._write_record("running", None, None)
                    if record.status == "failed" and failed is None:
                        failed, exit_code = name, code
                        for other in running.values():
                            _terminate(other.process)
                if failed is not None:
                    pending.clear()
                    for name, item in list(running.items()):
                        item.process.wait()
                        self._finish(item, item.process.returncode, "cancelled")
                        del running[name]
                if running:
                    time.sleep(0.05)
        except BaseException:
            for item in running.values():
                _terminate(item.process)
                item.process.wait()
                item.log.close()
            for record in self.records.values():
                if record.status in ("pending", "running"):
                    record.status = "cancelled" if record.status == "running" else "skipped"
            self._write_record("error", 1, failed)
            raise
        for record in self.records.values():
            if record.status == "pending":
                record.status = "skipped"
        status = "failed" if failed else "succeeded"
        path = self._write_record(status, exit_code, failed)
        return RunResult(self.plan.name, status, exit_code, failed,
                         [self.records[t.name] for t in self.plan.tasks], path,
                         time.monotonic() - begun)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's own process group (it was started in a new session)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def load_plan(name: str) -> Plan:
    """The plan of workflow ``name`` as defined in workflows/ (Hera)."""
    from pipeline.workflow.plan import plan_from_dict

    try:
        from pipeline.workflows.catalog import build, to_dict
    except ImportError as exc:  # hera missing: an installation problem, not a bug
        raise ConfigError(f"the workflow definitions need 'hera' ({exc})") from None
    try:
        template = build(name)
    except KeyError as exc:
        raise ConfigError(str(exc.args[0])) from None
    return plan_from_dict(to_dict(template))


def run_workflow(name: str, parameters: Mapping[str, str], workdir: Path, *,
                 max_parallel: int = 2,
                 on_event: Callable[[str, StepRecord], None] | None = None,
                 isolation: str = "host", registry_options: RegistryOptions | None = None,
                 image_keys: Sequence[Path] = ()) -> RunResult:
    """Run workflow ``name`` locally; raise :class:`WorkflowStepError` when a step fails.

    ``isolation="image"`` runs every step inside the image the ``pipeline-image``
    parameter pins (pulled with ``registry_options``; with ``image_keys`` only once its
    signature verifies against one of them; see :mod:`.isolation`).
    The run record (``workdir/run.json``) is written in every case. A local ``git-repo``
    contributes its project's parameters (the ``workflows`` section of its pipeline.yaml
    at ``git-revision``, :mod:`pipeline.workflow.params`) under ``parameters``.
    """
    plan = load_plan(name)
    parameters = {**_project_defaults(plan, parameters), **parameters}
    image = None
    if isolation not in ISOLATIONS:
        raise ConfigError(f"unknown isolation {isolation!r} (known: {', '.join(ISOLATIONS)})")
    if isolation == "image":
        reference = resolve_parameters(plan, parameters).get("pipeline-image", "")
        if reference.endswith("@sha256:" + "0" * 64):
            raise ConfigError("--isolation image: the pipeline-image parameter is still the "
                              "placeholder; build the step image (pipeline build "
                              "--pipeline-image), push it and pass "
                              "--pipeline-image REPO@sha256:...")
        image = pull_step_image(reference, workdir.resolve() / "image",
                                registry_options or RegistryOptions(), keys=image_keys)
    runner = Runner(plan, parameters, workdir, max_parallel=max_parallel,
                    on_event=on_event, image=image)
    result = runner.run()
    return result


def _project_defaults(plan: Plan, given: Mapping[str, str]) -> dict[str, str]:
    """The project's own parameters for ``plan``, read from the repository it will clone."""
    from pipeline.workflow.gitrepo import is_remote, resolve_git_repo
    from pipeline.workflow.params import project_parameters, read_project_file

    if "git-repo" not in plan.parameters:
        return {}
    repo = given.get("git-repo", plan.parameters["git-repo"])
    if repo and is_remote(repo):
        return {}
    revision = given.get("git-revision", plan.parameters.get("git-revision", "HEAD"))
    data = read_project_file(Path(resolve_git_repo(repo)), revision or "HEAD")
    return project_parameters(data, plan.name, set(plan.parameters))


def failure_summary(result: RunResult, tail_lines: int = 15) -> str:
    """A short human summary of a failed run: which step, its exit code, its log's tail."""
    step = next(s for s in result.steps if s.name == result.failed_step)
    lines = [f"step {step.name!r} failed with exit code {step.exit_code}",
             f"log: {step.log}", f"record: {result.record}"]
    if step.log and Path(step.log).exists():
        text = Path(step.log).read_text(encoding="utf-8", errors="replace").splitlines()
        lines += ["--- last lines of the step's log ---", *text[-tail_lines:]]
    skipped = [s.name for s in result.steps if s.status in ("skipped", "cancelled")]
    if skipped:
        lines.append("not run or cancelled: " + ", ".join(skipped))
    return "\n".join(lines)
