"""The run queue of one repository: each push a run, one at a time, in push order.

Why a queue on disk: a ``post-receive`` hook must return to the pushing client at once,
so it only records what to run (``queued``) and starts a detached worker. Workers take
the repository's worker lock (``flock``, blocking) before they run anything, so two
runs of one repository never overlap; whoever holds the lock drains the queue in
sequence order, and a worker that waited finds nothing left and exits. A run that was
``running`` when its worker died is failed by the next worker (it holds the lock, so
no one else can be running it).

Layout (``REPO/pipeline-runs/`` of a bare repository)::

    hooks.json             what `pipeline hooks install` recorded (branch, parameters)
    queue.lock             taken briefly to number a new run
    worker.lock            held by the one worker running this repository's runs
    worker.log             the workers' own output (a run's is in its directory)
    runs/<id>/state.json   state, workflow, ref, revision, times, outputs, reason
    runs/<id>/run.log      the run's log: its steps as they start and end, why it failed
    runs/<id>/run.json     the local runner's record (steps); logs/, workspace/, scripts/
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pipeline._fileio import write_atomic
from pipeline.errors import NotFoundError, PipelineError

STATE_DIR = "pipeline-runs"
STATES = ("queued", "running", "succeeded", "failed")
_ID = re.compile(r"^[0-9]{6}$")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class Run:
    """One queued or finished run (``state.json``)."""

    id: str
    seq: int
    workflow: str
    ref: str
    revision: str
    state: str = "queued"
    queued: str = field(default_factory=_now)
    started: str | None = None
    finished: str | None = None
    exit_code: int | None = None
    failed_step: str | None = None
    reason: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Run:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})


class RunStore:
    """The runs of one repository, under ``REPO/pipeline-runs/``."""

    def __init__(self, repo: Path) -> None:
        self.repo = Path(repo).resolve()
        self.root = self.repo / STATE_DIR
        self.runs = self.root / "runs"

    # -- locks -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _flock(self, name: str) -> Iterator[None]:
        self.runs.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing drops the lock

    def worker_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held while runs execute: one worker per repository (blocks until free)."""
        return self._flock("worker.lock")

    # -- records -----------------------------------------------------------------------
    def directory(self, run_id: str) -> Path:
        return self.runs / run_id

    def save(self, run: Run) -> None:
        write_atomic(self.directory(run.id) / "state.json",
                     json.dumps(asdict(run), indent=2, sort_keys=True) + "\n")

    def load(self, run_id: str) -> Run:
        """The run called ``run_id`` (``3`` means ``000003``); NotFoundError otherwise."""
        key = f"{int(run_id):06d}" if run_id.isdigit() else run_id
        path = self.runs / key / "state.json"
        if not _ID.match(key) or not path.is_file():
            raise NotFoundError(f"no run {run_id!r} in {self.repo} (pipeline runs list "
                                f"--repo {self.repo})")
        return Run.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def all(self) -> list[Run]:
        """Every run, newest first."""
        if not self.runs.is_dir():
            return []
        found = []
        for child in self.runs.iterdir():
            if _ID.match(child.name) and (child / "state.json").is_file():
                found.append(Run.from_dict(json.loads(
                    (child / "state.json").read_text(encoding="utf-8"))))
        return sorted(found, key=lambda r: r.seq, reverse=True)

    def enqueue(self, workflow: str, ref: str, revision: str) -> Run:
        """Record a new ``queued`` run, numbered after every run before it."""
        with self._flock("queue.lock"):
            seqs = [int(c.name) for c in self.runs.iterdir() if _ID.match(c.name)]
            seq = max(seqs, default=0) + 1
            run = Run(f"{seq:06d}", seq, workflow, ref, revision)
            self.directory(run.id).mkdir()
            self.save(run)
        return run

    # -- the worker --------------------------------------------------------------------
    def work(self, parameters_for: ParameterSource) -> list[Run]:
        """Take the worker lock, fail stale runs, run every queued run in order."""
        done: list[Run] = []
        with self.worker_lock():
            for stale in self.all():
                if stale.state == "running":  # its worker died: we hold the lock now
                    stale.state, stale.finished = "failed", _now()
                    stale.reason = "the worker running it stopped before it finished"
                    self.save(stale)
            while True:
                queued = sorted((r for r in self.all() if r.state == "queued"),
                                key=lambda r: r.seq)
                if not queued:
                    return done
                done.append(self.execute(queued[0], parameters_for))

    def execute(self, run: Run, parameters_for: ParameterSource) -> Run:
        """Run ``run`` through the local runner; its outcome is recorded, never raised."""
        from pipeline.workflow.gitrepo import git_env
        from pipeline.workflow.runner import Runner, failure_summary, load_plan

        directory = self.directory(run.id)
        run.state, run.started = "running", _now()
        self.save(run)
        with open(directory / "run.log", "a", encoding="utf-8") as log:
            _say(log, f"run {run.id}: {run.workflow} of {run.revision} ({run.ref})")
            try:
                plan = load_plan(run.workflow)
                run.parameters = parameters_for(self, run, set(plan.parameters))
                self.save(run)

                def event(kind: str, step: Any) -> None:
                    if kind == "start":
                        _say(log, f"start {step.name}")
                    else:
                        _say(log, f"{step.status} {step.name} (exit {step.exit_code}, "
                                  f"{step.duration_s}s)")

                result = Runner(plan, run.parameters, directory, env=git_env(),
                                on_event=event).run()
                run.outputs = _outputs(result.steps, run.parameters)
                run.exit_code = result.exit_code
                if result.failed_step is None:
                    run.state = "succeeded"
                else:
                    run.state, run.failed_step = "failed", result.failed_step
                    run.reason = (f"step {result.failed_step!r} failed with exit code "
                                  f"{result.exit_code}")
                    _say(log, failure_summary(result))
            except PipelineError as exc:
                run.state, run.exit_code, run.reason = "failed", exc.exit_code, str(exc)
            except Exception as exc:  # a bug: record it, keep the queue going
                run.state, run.exit_code = "failed", 1
                run.reason = f"internal error: {exc.__class__.__name__}: {exc}"
                log.write(traceback.format_exc())
            except BaseException:  # SIGTERM/interrupt: the runner stopped its steps
                run.state, run.finished = "failed", _now()
                run.reason = "the worker was stopped during the run"
                _say(log, f"run {run.id}: failed: {run.reason}")
                self.save(run)
                raise
            run.finished = _now()
            _say(log, f"run {run.id}: {run.state}" + (f": {run.reason}" if run.reason else ""))
        self.save(run)
        return run


#: ``(store, run, declared parameter names) -> parameters``: what a run is given.
ParameterSource = Any


def _say(log: IO[str], message: str) -> None:
    log.write(f"{_now()} {message}\n")
    log.flush()


def _outputs(steps: list[Any], parameters: Mapping[str, str]) -> dict[str, str]:
    """The image and model digests a release pushed, and their references."""
    by_name = {s.name: s for s in steps}
    out: dict[str, str] = {}
    for key, step, repository in (("image", "push-image", "repository"),
                                  ("model", "push-model", "model-repository")):
        digest = by_name[step].outputs.get("digest") if step in by_name else None
        if digest:
            out[key] = digest
            out[f"{key}_ref"] = f"{parameters.get(repository, '')}@{digest}"
    return out


def run_details(store: RunStore, run: Run) -> dict[str, Any]:
    """A run with its steps (from the runner's record) and where its logs are."""
    directory = store.directory(run.id)
    record_path = directory / "run.json"
    steps: list[dict[str, Any]] = []
    if record_path.is_file():
        with contextlib.suppress(ValueError):
            record = json.loads(record_path.read_text(encoding="utf-8"))
            steps = [{k: s.get(k) for k in ("name", "status", "exit_code", "duration_s",
                                            "log", "outputs")} for s in record["steps"]]
    return {**asdict(run), "steps": steps, "log": str(directory / "run.log"),
            "directory": str(directory)}


def spawn_worker(repo: Path, python: str) -> None:
    """Start a worker for ``repo`` detached from the caller (a hook's pushing client).

    Its own session, stdin from /dev/null, output to ``worker.log``: the push returns
    at once, and closing the client's connection does not stop the run.
    """
    from pipeline.workflow.gitrepo import git_env

    store = RunStore(repo)
    store.root.mkdir(parents=True, exist_ok=True)
    with open(store.root / "worker.log", "ab") as out:
        argv = [python, "-P", "-m", "pipeline", "hooks", "work", "--repo", str(store.repo)]
        subprocess.Popen(argv,
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True, cwd=store.repo,
                         env=git_env())
