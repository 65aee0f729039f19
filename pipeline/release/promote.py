"""Promotion and roll-back: the stage machine, recorded as GitOps commits.

For each stage (10 → 50 → 100 % by default): commit the weight, apply it (locally:
nginx; on a cluster: Argo CD syncs the commit), analyse, commit the result. A failed
or impossible analysis (Prometheus down) commits weight 0 pointing back at the last
good release and raises, so the repository never claims a release it did not verify.
The analysis and the traffic switch are passed in as callables: this module owns only
the order of events and what gets written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import InputError, NotFoundError, PolicyError, UnreachableError
from pipeline.oci.registry import RegistryOptions
from pipeline.release.analysis import AnalysisResult
from pipeline.release.gitops import GitOpsRepo, Release, ReleaseState, pinned, short

DEFAULT_STAGES = (10, 50, 100)

Analyse = Callable[[int], AnalysisResult]
ApplyWeight = Callable[[int], None]


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

    def to_dict(self) -> dict[str, Any]:
        return {"environment": self.environment, "status": self.status,
                "image": self.release.image, "model": self.release.model,
                "stable": self.stable.to_dict() if self.stable else None,
                "commits": self.commits, "stages": self.stages}


def promote(repo: GitOpsRepo, env: str, image: str, model: str, *, analyse: Analyse,
            stages: Sequence[int] = DEFAULT_STAGES, apply_weight: ApplyWeight | None = None,
            on_event: Callable[[str], None] | None = None) -> PromoteResult:
    """Walk ``image``+``model`` through ``stages``; roll back on any failed analysis.

    Raises PolicyError (exit 11) after a failed analysis and UnreachableError (exit 9)
    when Prometheus could not be asked; both only after the roll-back commit.
    """
    image, model = pinned(image, "image"), pinned(model, "model")
    stages = parse_stages(stages)
    say = on_event or (lambda _message: None)
    current = repo.current(env)
    stable = current.stable if current else None
    candidate = Release(image, model)
    result = PromoteResult(env, "progressing", candidate, stable)
    total = len(stages)
    for number, weight in enumerate(stages, 1):
        stage = f"{number}/{total}"
        state = ReleaseState(env, image, model, weight, stage, "progressing", stable,
                             analysis="pending")
        result.commits.append(repo.commit(
            state, f"{env}: canary {short(image)} at {weight}% (stage {stage})"))
        say(f"stage {stage}: {weight}% to {short(image)}")
        if apply_weight:
            apply_weight(weight)
        try:
            verdict = analyse(weight)
        except UnreachableError as exc:
            _roll_back(repo, result, state, weight, [f"analysis impossible: {exc}"], apply_weight)
            raise UnreachableError(f"{exc}; rolled back {env} to "
                                   f"{_describe(stable)} (fail closed)") from None
        result.stages.append({"stage": stage, "weight": weight, "passed": verdict.ok,
                              "measurements": [m.to_dict() for m in verdict.measurements]})
        if not verdict.ok:
            reasons = verdict.reasons or ["analysis failed"]
            _roll_back(repo, result, state, weight, reasons, apply_weight)
            raise PolicyError(f"analysis failed at {weight}% (stage {stage}): "
                              f"{'; '.join(reasons)}; rolled back {env} to {_describe(stable)}")
        passed = f"passed ({len(verdict.measurements)} measurement(s))"
        if weight == 100:
            done = state.with_(status="promoted", stable=candidate, analysis=passed)
            result.commits.append(repo.commit(
                done, f"{env}: promote {short(image)} (100%, analysis passed)"))
            result.status, result.stable = "promoted", candidate
        else:
            result.commits.append(repo.commit(
                state.with_(analysis=passed),
                f"{env}: analysis passed at {weight}% (stage {stage})"))
        say(f"stage {stage}: analysis passed")
    return result


def _describe(release: Release | None) -> str:
    return short(release.image) if release else "no release (none was promoted before)"


def _roll_back(repo: GitOpsRepo, result: PromoteResult, state: ReleaseState, weight: int,
               reasons: list[str], apply_weight: ApplyWeight | None) -> None:
    """Weight 0, pointing at the last good release; traffic first, then the record."""
    if apply_weight:
        apply_weight(0)
    good = state.stable or state.release
    back = ReleaseState(state.environment, good.image, good.model, 0, state.stage,
                        "rolled-back", state.stable, failed=state.release,
                        reasons=tuple(reasons), analysis="failed")
    result.commits.append(repo.commit(
        back, f"{state.environment}: roll back {short(state.image)} at {weight}% "
              f"(stage {state.stage}): {reasons[0][:120]}"))
    result.status = "rolled-back"


def rollback(repo: GitOpsRepo, env: str,
             reason: str = "manual roll-back") -> tuple[ReleaseState, str]:
    """Revert ``env`` to the last release whose status is ``promoted``, as a new commit.

    When the current release is itself promoted, "last good" means the one before it:
    rolling back must change what runs.
    """
    current = repo.current(env)
    if current is None:
        raise NotFoundError(f"environment {env!r} has no release in {repo.path}")
    if current.status == "promoted":
        exclude = current.release
    else:  # after a roll-back, never return to what it refused
        exclude = current.failed if current.status == "rolled-back" else None
    target = repo.last_promoted(env, exclude=exclude)
    if target is None:
        raise NotFoundError(f"no earlier promoted release of {env!r} to roll back to")
    good = target.state.release
    failed = current.release if current.release != good else current.failed
    state = ReleaseState(env, good.image, good.model, 0, current.stage, "rolled-back", good,
                         failed=failed, reasons=(reason,), analysis="manual")
    sha = repo.commit(state, f"{env}: roll back to {short(good.image)} "
                             f"(last promoted, {target.sha[:12]}): {reason}")
    return state, sha


__all__ = ["DEFAULT_STAGES", "PromoteResult", "check_image_policy", "parse_stages", "promote",
           "rollback"]
