"""The local executor of the rendered canary: Argo Rollouts' steps, run on this machine.

A :class:`~pipeline.release.promote.CanaryExecutor` built from a
:class:`~pipeline.release.canary.CanaryDefinition`. It needs only a narrow backend, so
whatever runs the stable and canary pod sets can plug in (today :class:`~pipeline.
release.local.LocalTarget`: nginx in front of two servers; later ``pipeline deploy
--local``'s cluster):

* :class:`Traffic` ``set_weight(percent)`` — ``setWeight`` becomes nginx's weights;
* :class:`MetricSource` ``result(promql)`` — an ``analysis`` runs each metric's PromQL,
  unchanged, against the local Prometheus (a vector is a list of floats, as Argo
  Rollouts hands it to the conditions);
* ``sleep``/``wait_continue`` — ``pause`` sleeps its duration or waits for ``pipeline
  promote --continue``.

Analysis semantics are Argo Rollouts': each metric is measured ``count`` times,
``interval`` apart, the first after ``initialDelay``; a measurement is Failed when the
failureCondition holds (or, without one, when the successCondition does not), Successful
when the successCondition holds (or, without one, when the failureCondition does not),
Inconclusive otherwise, Error when the condition cannot be evaluated; the metric fails
once failed measurements exceed ``failureLimit``, inconclusive ones ``inconclusiveLimit``
or consecutive errors ``consecutiveErrorLimit``, and the analysis ends at the first
metric that fails. One deviation, failing closed: Argo Rollouts pauses a Rollout whose
analysis is Inconclusive; locally that is a failure (rolled back). A Prometheus that
cannot be reached raises :class:`~pipeline.errors.UnreachableError` (the promotion
holds, then rolls back); a step analysis that was interrupted so resumes at that step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.errors import PipelineError, UnreachableError
from pipeline.release.analysis import AnalysisResult
from pipeline.release.canary import Analysis, CanaryDefinition, Metric, Pause
from pipeline.release.expr import Condition, ExprError

Result = float | list[float]


class Traffic(Protocol):
    """Routes ``weight`` % of requests to the canary pods, the rest to the stable ones."""

    def set_weight(self, weight: int) -> None: ...


class MetricSource(Protocol):
    """Answers a PromQL instant query as Argo Rollouts' Prometheus provider does."""

    def result(self, promql: str) -> Result: ...


_NEGATE = {">=": "<", ">": "<=", "<=": ">", "<": ">="}


def _first(result: Result) -> float:
    if isinstance(result, list):
        return result[0] if result else math.nan
    return result


def _limit(limit: float) -> str:
    return str(int(limit)) if limit.is_integer() and abs(limit) >= 1 else f"{limit:.3f}"


def _number(value: float, limit: float) -> str:
    if limit.is_integer() and abs(limit) >= 1:
        return str(int(round(value)))
    return f"{value:.3f}"


def summarise(metric: Metric, result: Result | None, phase: str) -> str:
    """``success rate 0.000 < 0.990``: the number next to the threshold it was held to.

    Why from the condition: the threshold lives in the rendered template only; its last
    ``result[0] OP number`` comparison is what a person reads as "the limit".
    """
    label = metric.name.replace("-", " ")
    condition = metric.success or metric.failure
    threshold = condition.threshold() if condition else None
    value = math.nan if result is None else _first(result)
    if threshold is None:
        shown = "n/a" if math.isnan(value) else f"{value:.3f}"
        return f"{label} {shown}: {phase.lower()} ({condition.text if condition else ''})"
    op, limit = threshold
    passed = phase == "Successful"
    if metric.success is None:  # the threshold is the failure condition's
        passed = not passed
    if math.isnan(value):
        return f"{label} n/a (no data: no requests in the window) {_NEGATE[op]} {_limit(limit)}"
    return f"{label} {_number(value, limit)} {op if passed else _NEGATE[op]} {_limit(limit)}"


def passing_limit(metric: Metric) -> tuple[str, float] | None:
    """``(op, limit)`` a value must satisfy to pass: the success condition's comparison,
    or the negation of the failure condition's; None when neither compares a number."""
    if metric.success is not None:
        return metric.success.threshold()
    found = metric.failure.threshold() if metric.failure is not None else None
    return (_NEGATE[found[0]], found[1]) if found else None


def assess(success: Condition | None, failure: Condition | None, result: Result) -> str:
    """One measurement's phase, as Argo Rollouts' ``EvaluateResult``: failure wins."""
    try:
        ok = success(result) if success else None
        bad = failure(result) if failure else None
    except ExprError:
        return "Error"
    if ok is None and bad is None:
        return "Successful"
    if bad is None:
        bad = not ok
    if ok is None:
        ok = not bad
    if bad:
        return "Failed"
    return "Successful" if ok else "Inconclusive"


@dataclass(frozen=True)
class MetricMeasurement:
    """One measurement of one metric: its value, phase and the readable line."""

    template: str
    metric: str
    query: str
    value: Result | None
    phase: str
    summary: str
    error: str = ""
    #: Why it counts against the canary (empty when Successful).
    failures: tuple[str, ...] = ()
    #: The limit the value was held to, as data (``value COMPARISON threshold`` passes),
    #: and the condition it came from: what the evidence report plots, whatever the metric.
    threshold: float | None = None
    comparison: str = ""
    condition: str = ""

    @property
    def ok(self) -> bool:
        return self.phase == "Successful"

    def to_dict(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return None if math.isnan(x) or math.isinf(x) else round(x, 6)

        value: Any = None
        if isinstance(self.value, list):
            value = [clean(v) for v in self.value]
        elif self.value is not None:
            value = clean(self.value)
        return {"template": self.template, "metric": self.metric, "value": value,
                "phase": self.phase, "ok": self.ok, "summary": self.summary,
                "failures": list(self.failures), "error": self.error or None,
                "threshold": self.threshold, "comparison": self.comparison or None,
                "condition": self.condition or None}


@dataclass
class _MetricRun:
    metric: Metric
    due: float
    measured: int = 0
    failed: int = 0
    inconclusive: int = 0
    errors: int = 0
    outcome: str = ""  # "" running, else Successful/Failed/Inconclusive/Error

    def judge(self) -> None:
        m = self.metric
        if self.failed > m.failure_limit:
            self.outcome = "Failed"
        elif self.inconclusive > m.inconclusive_limit:
            self.outcome = "Inconclusive"
        elif self.errors > m.consecutive_error_limit:
            self.outcome = "Error"
        elif self.measured >= m.count:
            self.outcome = "Successful"


@dataclass
class StepExecutor:
    """Runs a :class:`CanaryDefinition`'s stages against a backend; logs what it ran."""

    definition: CanaryDefinition
    traffic: Traffic
    metrics: MetricSource
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    #: Called for ``pause: {}`` with a description; returns when resumed.
    wait_continue: Callable[[str], None] | None = None
    on_event: Callable[[str], None] = field(default=lambda _m: None)
    #: Called before the first analysis after a weight change; returns once the metric
    #: source has data of the new split (:meth:`~pipeline.release.cluster_target.
    #: ClusterTraffic.wait_observed`). Why: a window that opens before the first scrape of
    #: a pod reads as "no requests", a failure the canary did not cause. Argo Rollouts on
    #: a cluster has scrape intervals far shorter than its windows; locally short test
    #: windows meet newly started pods.
    settle: Callable[[], None] | None = None
    #: Every step carried out, in order: ``{"setWeight": 10}``, ``{"pause": 2.0}``,
    #: ``{"analysis": [metric.describe(), ...]}``; ``{"rollback": 0}`` on a roll-back.
    log: list[dict[str, Any]] = field(default_factory=list)
    _next: dict[int, int] = field(default_factory=dict)
    _unsettled: bool = False

    def set_weight(self, weight: int) -> None:
        self.traffic.set_weight(weight)
        self._unsettled = True
        self.log.append({"rollback": 0} if weight == 0 else {"setWeight": weight})

    def analyse(self, stage: Any) -> AnalysisResult:
        """The steps after stage ``stage.number``'s setWeight: pauses, then analyses."""
        canary_stage = self.definition.stages[stage.number - 1]
        if canary_stage.weight != stage.weight:
            raise PipelineError(f"stage {stage.label} is {stage.weight}% but the rendered "
                                f"Rollout says {canary_stage.weight}%")
        taken: list[MetricMeasurement] = []
        start = self._next.get(stage.number, 0)
        for index in range(start, len(canary_stage.steps)):
            step = canary_stage.steps[index]
            if isinstance(step, Pause):
                self._pause(step, stage.label)
            elif isinstance(step, Analysis):
                ok, measured = self._analysis(step)
                taken += measured
                if not ok:
                    self._next[stage.number] = len(canary_stage.steps)
                    return AnalysisResult(False, tuple(taken))  # type: ignore[arg-type]
            self._next[stage.number] = index + 1
        return AnalysisResult(True, tuple(taken))  # type: ignore[arg-type]

    def _pause(self, step: Pause, label: str) -> None:
        self.log.append({"pause": step.seconds})
        if step.seconds is not None:
            self.on_event(f"stage {label}: pause {step.seconds:g}s")
            self.sleep(step.seconds)
            return
        if self.wait_continue is None:
            raise PipelineError("the Rollout pauses until resumed, and nothing can resume it "
                                "here")
        self.on_event(f"stage {label}: paused until `pipeline promote --continue`")
        self.wait_continue(f"stage {label}")

    def _analysis(self, step: Analysis) -> tuple[bool, list[MetricMeasurement]]:
        self.log.append({"analysis": [m.describe() for m in step.metrics]})
        if self._unsettled and self.settle is not None:
            self.settle()
        self._unsettled = False
        start = self.clock()
        runs = [_MetricRun(m, start + m.initial_delay) for m in step.metrics]
        taken: list[MetricMeasurement] = []
        while True:
            running = [r for r in runs if not r.outcome]
            if not running:
                return True, taken
            run = min(running, key=lambda r: r.due)
            wait = run.due - self.clock()
            if wait > 0:
                self.sleep(wait)
            measurement = self._measure(run)
            taken.append(measurement)
            self.on_event(f"  {'ok  ' if measurement.ok else 'FAIL'} {measurement.summary}")
            run.due += run.metric.interval
            run.judge()
            if run.outcome and run.outcome != "Successful":
                return False, taken

    def _measure(self, run: _MetricRun) -> MetricMeasurement:
        m = run.metric
        run.measured += 1
        where = f"(measurement {run.measured}/{m.count} of {m.template}/{m.name})"
        try:
            result = self.metrics.result(m.query)
        except UnreachableError:
            run.measured -= 1
            raise
        except PipelineError as exc:  # Prometheus refused the query: Argo's Error
            run.errors += 1
            text = f"{m.name.replace('-', ' ')}: query failed: {exc}"
            return MetricMeasurement(m.template, m.name, m.query, None, "Error", text,
                                     str(exc), (f"{text} {where}",))
        phase = assess(m.success, m.failure, result)
        summary = summarise(m, result, phase)
        run.errors = run.errors + 1 if phase == "Error" else 0
        if phase == "Failed":
            run.failed += 1
        elif phase == "Inconclusive":
            run.inconclusive += 1
        failures: Sequence[str] = () if phase == "Successful" else (f"{summary} {where}",)
        limit = passing_limit(m)
        condition = m.success or m.failure
        return MetricMeasurement(m.template, m.name, m.query, result, phase, summary,
                                 failures=tuple(failures),
                                 threshold=limit[1] if limit else None,
                                 comparison=limit[0] if limit else "",
                                 condition=condition.text if condition else "")


__all__ = ["MetricMeasurement", "MetricSource", "StepExecutor", "Traffic", "assess",
           "passing_limit", "summarise"]
