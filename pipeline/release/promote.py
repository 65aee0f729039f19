"""Promotion and roll-back: the stage machine, recorded as GitOps commits.

For each stage (the weights derived from the chart's rendered Rollout steps,
:mod:`pipeline.release.canary`; 10 → 50 → 100 % for a library caller that gives none):
check the gates, commit the weight, apply it, analyse, commit the result. A failed
analysis (or a gate that fails mid-way, or an analysis that cannot run) commits weight 0
pointing back at the last good release and raises, so the repository never claims a
release it did not verify. Prometheus unreachable first *holds* (a commit saying so),
retries for ``hold_seconds``, and then rolls back: it never passes.

Who makes a step happen is a seam, :class:`CanaryExecutor`: the CLI's is
:class:`~pipeline.release.executor.StepExecutor`, which runs the rendered steps (setWeight
as nginx weights, pauses, the AnalysisTemplates' PromQL and conditions); tests and
library callers may pass two callables (:class:`CallbackExecutor`). This module owns
only the order of events, the lock and what gets written.

Crash safety: one promotion per environment (:class:`~pipeline.release.lock.
EnvironmentLock`, released by the kernel when its holder dies); every step is one
commit of complete files; ``resume=True`` continues from the last committed step,
after discarding whatever a killed step left uncommitted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipeline.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PipelineError,
    PolicyError,
    UnreachableError,
)
from pipeline.oci.registry import RegistryOptions
from pipeline.release.analysis import AnalysisResult
from pipeline.release.gitops import GitOpsRepo, Release, ReleaseState, actor, pinned
from pipeline.release.lock import EnvironmentLock

DEFAULT_STAGES = (10, 50, 100)

Analyse = Callable[[int], AnalysisResult]
ApplyWeight = Callable[[int], None]
#: Called with a description of the moment ("stage 2/3"); raises PolicyError to refuse.
Gate = Callable[[str], None]
#: Called with each new commit's sha (push it, wait for Argo CD).
Publish = Callable[[str], None]


@dataclass(frozen=True)
class Stage:
    """One canary step as the stage machine sees it: a weight, then its analysis."""

    number: int
    total: int
    weight: int

    @property
    def label(self) -> str:
        return f"{self.number}/{self.total}"


class CanaryExecutor(Protocol):
    """Who carries a step out: route ``weight`` % to the canary, then judge it."""

    def set_weight(self, weight: int) -> None: ...

    def analyse(self, stage: Stage) -> AnalysisResult: ...


@dataclass
class CallbackExecutor:
    """The executor made of two callables (the local path, and tests)."""

    analyse_fn: Analyse
    apply_weight: ApplyWeight | None = None

    def set_weight(self, weight: int) -> None:
        if self.apply_weight:
            self.apply_weight(weight)

    def analyse(self, stage: Stage) -> AnalysisResult:
        return self.analyse_fn(stage.weight)


def parse_stages(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"10,50,100"`` → (10, 50, 100): increasing, within 1..100, ending at 100."""
    try:
        stages = tuple(int(s) for s in (text.split(",") if isinstance(text, str) else text))
    except ValueError:
        raise InputError(f"stages must be comma-separated integers, got {text!r}") from None
    if not stages or stages[-1] != 100 or any(not 1 <= s <= 100 for s in stages) \
            or any(a >= b for a, b in zip(stages, stages[1:], strict=False)):
        raise InputError(f"stages must increase within 1..100 and end at 100, got {text!r}")
    return stages


def check_image_policy(image: str, policy_path: Path,
                       registry_options: RegistryOptions | None = None) -> list[str]:
    """The image policy's verdict (pipeline.policy.image_policy); PolicyError when denied."""
    from pipeline.policy.image_policy import ImagePolicy

    result = ImagePolicy.load(policy_path).evaluate(image, registry_options)
    if not result.allowed:
        raise PolicyError(f"image policy denies {image}: " + "; ".join(result.reasons))
    return list(result.reasons)


@dataclass
class PromoteResult:
    """What happened, for the CLI to print."""

    environment: str
    status: str
    release: Release
    stable: Release | None
    commits: list[str] = field(default_factory=list)
    stages: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "status": self.status,
                "image": self.release.image, "model": self.release.model,
                "release": self.release.label,
                "stable": self.stable.to_dict() if self.stable else None,
                "commits": self.commits, "stages": self.stages,
                "resumed_from": self.resumed_from or None}


@dataclass
class _Run:
    """One promotion in progress: where commits go and what they say."""

    repo: GitOpsRepo
    env: str
    candidate: Release
    stable: Release | None
    stages: tuple[int, ...]
    result: PromoteResult
    say: Callable[[str], None]
    publish: Publish | None
    forced: str = ""
    approved_by: str = ""
    values: Mapping[str, Any] | None = None

    def record(self, state: ReleaseState, subject: str, body: str = "") -> str:
        state = state.with_(stages=self.stages, forced=self.forced,
                            approved_by=self.approved_by)
        message = subject if not body else f"{subject}\n\n{body}"
        sha = self.repo.commit(state, message, base_values=self.values)
        self.result.commits.append(sha)
        if self.publish:
            try:
                self.publish(sha)
            except PolicyError as exc:
                if state.status != "progressing":
                    raise
                # The cluster aborted the rollout (Argo CD: Degraded) and went back to
                # stable: record the revert so git says what runs, then fail.
                self.roll_back(_NoTraffic(), Stage(*_stage_numbers(state), state.weight),
                               [f"aborted in the cluster: {exc}"])
                raise PolicyError(f"{exc}; recorded the roll-back of {self.env} to "
                                  f"{_describe(self.stable)} in git") from None
        return sha

    def state(self, stage: Stage, analysis: str, **changes: Any) -> ReleaseState:
        return ReleaseState(self.env, self.candidate.image, self.candidate.model, stage.weight,
                            stage.label, "progressing", self.stable, analysis=analysis,
                            **changes)

    def roll_back(self, executor: CanaryExecutor, stage: Stage, reasons: list[str],
                  evidence: tuple[dict[str, Any], ...] = ()) -> None:
        """Weight 0, pointing at the last good release; traffic first, then the record."""
        executor.set_weight(0)
        good = self.stable or self.candidate
        back = ReleaseState(self.env, good.image, good.model, 0, stage.label, "rolled-back",
                            self.stable, failed=self.candidate, reasons=tuple(reasons),
                            analysis="failed", evidence=evidence)
        self.record(back, f"{self.env}: roll back {self.candidate.label} at {stage.weight}% "
                          f"(stage {stage.label}): {reasons[0][:120]}",
                    _evidence_body(reasons, evidence))
        self.result.status = "rolled-back"


class _NoTraffic:
    """The executor when the cluster already moved traffic back (nothing to switch)."""

    def set_weight(self, weight: int) -> None:
        return None

    def analyse(self, stage: Stage) -> AnalysisResult:  # pragma: no cover - never called
        raise AssertionError("no analysis after an in-cluster abort")


def _stage_numbers(state: ReleaseState) -> tuple[int, int]:
    number, _, total = state.stage.partition("/")
    return int(number or 1), int(total or 1)


def _evidence_body(reasons: Sequence[str], evidence: Sequence[dict[str, Any]]) -> str:
    lines = [f"reason: {r}" for r in reasons]
    for number, m in enumerate(evidence, 1):
        lines.append(f"measurement {number}: {m.get('summary') or m}")
    return "\n".join(lines)


def _describe(release: Release | None) -> str:
    return release.label if release else "no release (none was promoted before)"


def _evidence(verdict: AnalysisResult) -> tuple[dict[str, Any], ...]:
    return tuple(m.to_dict() for m in verdict.measurements)


def check_order(repo: GitOpsRepo, env: str, candidate: Release, predecessor: str | None,
                force_reason: str | None) -> str:
    """Refuse ``env`` unless ``predecessor`` promoted ``candidate`` (or forced, with why).

    Returns the recorded force reason ("" when not forced). Why here and not in the CLI:
    the order is the point of having environments; a library caller must not skip it.
    """
    if predecessor is None:
        return ""
    if repo.promoted(predecessor, candidate) is not None:
        return ""
    if force_reason is None:
        raise PolicyError(f"{env}: {candidate.label} was not promoted in {predecessor!r} "
                          f"(the environment before {env!r}); promote it there first, or "
                          "pass --force --reason TEXT (recorded)")
    if not force_reason.strip():
        raise InputError("--force needs a non-empty --reason (it is recorded)")
    return f"skipped {predecessor}: {force_reason.strip()}"


def promote(repo: GitOpsRepo, env: str, image: str | None = None, model: str | None = None,
            *, analyse: Analyse | None = None, executor: CanaryExecutor | None = None,
            stages: Sequence[int] = DEFAULT_STAGES, apply_weight: ApplyWeight | None = None,
            on_event: Callable[[str], None] | None = None, predecessor: str | None = None,
            force_reason: str | None = None, require_approval: bool = False,
            approved_by: str | None = None, gate: Gate | None = None,
            publish: Publish | None = None, hold_seconds: float = 0.0,
            hold_poll: float = 1.0, resume: bool = False,
            values: Mapping[str, Any] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> PromoteResult:
    """Walk ``image``+``model`` through ``stages``; roll back on any failed analysis.

    Raises PolicyError (exit 11) after a failed analysis or gate and UnreachableError
    (exit 9) when Prometheus could not be asked for ``hold_seconds``; both only after
    the roll-back commit. A gate, order or approval refusal before the first stage
    commits nothing. ``resume`` continues the interrupted promotion of ``env`` (its
    image, model and stages come from the record; ``image``/``model`` must then be
    None or the same).
    """
    if executor is None:
        if analyse is None:
            raise InputError("promote needs an executor or an analyse function")
        executor = CallbackExecutor(analyse, apply_weight)
    say = on_event or (lambda _message: None)
    with EnvironmentLock(repo.git_dir, env):
        current = repo.current(env)
        first = 0
        redo_analysis = False
        if resume:
            if current is None or current.status != "progressing":
                what = current.status if current else "no release"
                raise ConflictError(f"nothing to resume in {env!r}: its record says {what}")
            discarded = repo.discard(env)
            if discarded:
                say(f"discarded what the interrupted step left uncommitted: {discarded}")
            candidate, stable = current.release, current.stable
            for ref, what in ((image, "image"), (model, "model")):
                if ref is not None and pinned(ref, what) != getattr(candidate, what):
                    raise ConflictError(f"--resume continues {candidate.label}, not {ref}")
            stages = current.stages or parse_stages(stages)
            number = int(current.stage.split("/")[0])
            redo_analysis = not current.analysis.startswith("passed")
            first = number - 1 if redo_analysis else number
            forced, approved = current.forced, current.approved_by
        else:
            if image is None or model is None:
                raise InputError("promote needs --image and --model (or --resume)")
            candidate = Release(pinned(image, "image"), pinned(model, "model"))
            stages = parse_stages(stages)
            repo.require_clean()
            forced = check_order(repo, env, candidate, predecessor, force_reason)
            if require_approval and not approved_by:
                raise PolicyError(f"{env} needs a manual approval: run with --approve "
                                  "(who approved is recorded)")
            approved = approved_by or ""
            stable = current.stable if current else None
        result = PromoteResult(env, "progressing", candidate, stable)
        run = _Run(repo, env, candidate, stable, tuple(stages), result, say, publish,
                   forced, approved, values)
        if resume:
            result.resumed_from = current.stage if current else ""
            say(f"resuming {candidate.label} in {env} at stage {result.resumed_from}")
        total = len(run.stages)
        for index in range(first, total):
            stage = Stage(index + 1, total, run.stages[index])
            redo = redo_analysis and index == first
            _gate(run, executor, stage, gate, committed=bool(result.commits) or resume)
            if not redo:
                run.record(run.state(stage, "pending"),
                           f"{env}: canary {candidate.label} at {stage.weight}% "
                           f"(stage {stage.label})")
            say(f"stage {stage.label}: {stage.weight}% to {candidate.label}")
            executor.set_weight(stage.weight)
            verdict = _analyse_or_hold(run, executor, stage, hold_seconds, hold_poll, sleep)
            evidence = _evidence(verdict)
            result.stages.append({"stage": stage.label, "weight": stage.weight,
                                  "passed": verdict.ok, "measurements": list(evidence)})
            if not verdict.ok:
                reasons = verdict.reasons or ["analysis failed"]
                run.roll_back(executor, stage, reasons, evidence)
                raise PolicyError(f"analysis failed at {stage.weight}% (stage {stage.label}): "
                                  f"{'; '.join(reasons)}; rolled back {env} to "
                                  f"{_describe(stable)}")
            passed = f"passed ({len(verdict.measurements)} measurement(s))"
            body = _evidence_body([], evidence)
            if stage.weight == 100:
                done = run.state(stage, passed, evidence=evidence).with_(
                    status="promoted", stable=candidate)
                run.record(done, f"{env}: promote {candidate.label} (100%, analysis passed)",
                           body)
                result.status, result.stable = "promoted", candidate
            else:
                run.record(run.state(stage, passed, evidence=evidence),
                           f"{env}: analysis passed at {stage.weight}% (stage {stage.label}) "
                           f"for {candidate.label}", body)
            say(f"stage {stage.label}: analysis passed")
        return result


def _gate(run: _Run, executor: CanaryExecutor, stage: Stage, gate: Gate | None,
          committed: bool) -> None:
    """The gates before a step: refused before anything was committed → nothing is;
    refused mid-way → roll back first (traffic may already reach the candidate)."""
    if gate is None:
        return
    try:
        gate(f"stage {stage.label}")
    except PipelineError as exc:
        if not committed:
            raise
        reason = f"gate refused before stage {stage.label}: {exc}"
        run.roll_back(executor, stage, [reason])
        raise PolicyError(f"{reason}; rolled back {run.env} to "
                          f"{_describe(run.stable)}") from None


def _analyse_or_hold(run: _Run, executor: CanaryExecutor, stage: Stage, hold_seconds: float,
                     hold_poll: float, sleep: Callable[[float], None]) -> AnalysisResult:
    """The analysis; while Prometheus is unreachable, hold (recorded), then roll back."""
    deadline = time.monotonic() + hold_seconds
    held = False
    while True:
        try:
            return executor.analyse(stage)
        except PipelineError as exc:
            if not isinstance(exc, UnreachableError):
                # The analysis could not run at all: fail closed, traffic back to stable.
                run.roll_back(executor, stage, [f"analysis could not run: {exc}"])
                raise
            if not held:
                held = True
                run.record(run.state(stage, f"held: {exc}"),
                           f"{run.env}: hold {run.candidate.label} at {stage.weight}% "
                           f"(stage {stage.label}): analysis impossible")
                run.say(f"stage {stage.label}: holding, {exc}")
            if time.monotonic() >= deadline:
                run.roll_back(executor, stage, [f"analysis impossible: {exc}"])
                raise UnreachableError(f"{exc}; held {hold_seconds:.0f}s, then rolled back "
                                       f"{run.env} to {_describe(run.stable)} (fail closed)") \
                    from None
            sleep(hold_poll)


def _find_target(repo: GitOpsRepo, env: str, current: ReleaseState,
                 to: str | None) -> tuple[Release, str, ReleaseState]:
    """The promoted release to go back to: ``to`` (a commit or a reference), or the last
    good one (never the current promoted one, never what a roll-back refused)."""
    history = repo.history(env)
    if to:
        for entry in history:
            if entry.state.status != "promoted":
                continue
            if entry.sha.startswith(to.lower()) and len(to) >= 7 \
                    or to in (entry.state.image, entry.state.model):
                return entry.state.release, entry.sha, entry.state
        raise NotFoundError(f"{to!r} is no promoted release of {env!r} (give a commit of a "
                            "promotion, or its image or model reference)")
    exclude: Release | None
    if current.status == "promoted":
        exclude = current.release
    else:  # after a roll-back, never return to what it refused
        exclude = current.failed if current.status == "rolled-back" else None
    target = repo.last_promoted(env, exclude=exclude)
    if target is None:
        raise NotFoundError(f"no earlier promoted release of {env!r} to roll back to")
    return target.state.release, target.sha, target.state


def rollback(repo: GitOpsRepo, env: str, reason: str = "manual roll-back", *,
             to: str | None = None, publish: Publish | None = None,
             values: Mapping[str, Any] | None = None) -> tuple[ReleaseState, str]:
    """Revert ``env``'s values to the last good release (or ``to``), as a new commit.

    A git revert in effect (Argo CD follows it), written as a new state rather than
    ``git revert`` because the release to return to may be several commits back. When
    what runs already is that release, nothing would change: ConflictError (exit 16),
    and nothing is committed.
    """
    with EnvironmentLock(repo.git_dir, env):
        current = repo.current(env)
        if current is None:
            raise NotFoundError(f"environment {env!r} has no release in {repo.path}")
        good, sha, target = _find_target(repo, env, current, to)
        if good == current.release and current.status != "progressing":
            raise ConflictError(f"nothing to roll back: {env} already runs {good.label} "
                                f"({current.status}); no commit made")
        repo.require_clean()
        failed: Release | None = current.release if current.release != good else current.failed
        state = ReleaseState(env, good.image, good.model, 0, current.stage, "rolled-back",
                             good, failed=failed, reasons=(reason,), analysis="manual",
                             who=actor(), evidence=target.evidence)
        body = [f"reason: {reason}", f"back to the values of {sha[:12]} "
                f"({good.label}, analysis {target.analysis or 'n/a'})"]
        if failed:
            body.append(f"leaves: {failed.label} ({current.status} at {current.weight}%)")
        subject = (f"{env}: roll back to {good.label} "
                   f"({'chosen' if to else 'last promoted'}, {sha[:12]}): {reason}")
        new = repo.commit(state, subject + "\n\n" + "\n".join(body), base_values=values)
        if publish:
            publish(new)
        return state, new


__all__ = ["DEFAULT_STAGES", "CallbackExecutor", "CanaryExecutor", "PromoteResult", "Stage",
           "check_image_policy", "check_order", "parse_stages", "promote", "rollback"]
