"""The scan gate: thresholds, an allow-list that expires, and what "not scanned" means.

Why every allow-list entry needs a reason and an expiry: an exception nobody
re-reviews becomes permanent. An expired entry stops applying (and is reported).
"Not scanned" is never treated as clean: policy decides whether it fails (prod) or
warns (dev), and the default environment is prod (fail closed).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import ConfigError, PolicyError
from pipeline.scan.findings import SEVERITIES, ScanResult, severity_rank

ENVIRONMENTS = ("dev", "prod")


@dataclass(frozen=True)
class AllowEntry:
    """A finding id accepted until ``expires`` for ``reason``."""

    id: str
    reason: str
    expires: _dt.date
    target: str = ""  # optional: only findings whose target contains this


@dataclass(frozen=True)
class GatePolicy:
    """Gate settings; ``max_severity`` is the highest severity that may pass."""

    environment: str = "prod"
    max_severity: str = "MEDIUM"
    allow: tuple[AllowEntry, ...] = ()
    unscanned: str | None = None  # "fail" | "warn"; default: fail in prod, warn in dev

    @property
    def unscanned_action(self) -> str:
        return self.unscanned or ("fail" if self.environment == "prod" else "warn")


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict and why."""

    passed: bool
    failures: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    allowed: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "failures": list(self.failures),
            "warnings": list(self.warnings),
            "allowed": list(self.allowed),
        }


def _date(value: Any, where: str) -> _dt.date:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(
            f"{where}: 'expires' must be a date (YYYY-MM-DD), got {value!r}"
        ) from None


def parse_policy(raw: Mapping[str, Any] | None, environment: str | None = None) -> GatePolicy:
    """A GatePolicy from the ``scan`` section of pipeline.yaml (or a policy file)."""
    raw = dict(raw or {})
    env = environment or str(raw.get("environment", "prod"))
    if env not in ENVIRONMENTS:
        raise ConfigError(f"scan.environment must be one of {ENVIRONMENTS}, got {env!r}")
    max_sev = str(raw.get("max_severity", "MEDIUM")).upper()
    if max_sev not in SEVERITIES:
        raise ConfigError(f"scan.max_severity must be one of {SEVERITIES}, got {max_sev!r}")
    unscanned = raw.get("unscanned")
    if unscanned is not None and unscanned not in ("fail", "warn"):
        raise ConfigError("scan.unscanned must be 'fail' or 'warn'")
    entries = []
    for number, item in enumerate(raw.get("allow") or []):
        where = f"scan.allow[{number}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: must be a mapping with id, reason, expires")
        ident, reason = item.get("id"), item.get("reason")
        if not isinstance(ident, str) or not ident:
            raise ConfigError(f"{where}: 'id' is required")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(f"{where}: 'reason' is required (why is {ident} acceptable?)")
        if "expires" not in item:
            raise ConfigError(f"{where}: 'expires' is required (allow-list entries expire)")
        entries.append(
            AllowEntry(
                ident, reason.strip(), _date(item["expires"], where), str(item.get("target", ""))
            )
        )
    return GatePolicy(env, max_sev, tuple(entries), unscanned)


def evaluate(result: ScanResult, policy: GatePolicy, today: _dt.date | None = None) -> GateDecision:
    """Apply ``policy`` to ``result``."""
    today = today or _dt.date.today()
    limit = severity_rank(policy.max_severity)
    failures, warnings, allowed = [], [], []
    live = [a for a in policy.allow if a.expires >= today]
    for entry in policy.allow:
        if entry.expires < today:
            warnings.append(f"allow-list entry {entry.id} expired on {entry.expires.isoformat()}")
    for finding in result.findings:
        if severity_rank(finding.severity) <= limit:
            continue
        match = next((a for a in live if a.id == finding.id and a.target in finding.target), None)
        if match:
            allowed.append(
                f"{finding.id} ({finding.target}): {match.reason}, until {match.expires}"
            )
            continue
        failures.append(
            f"{finding.kind} {finding.id} {finding.severity} in {finding.target}"
            + (f": {finding.title}" if finding.title else "")
        )
    if not result.vulnerabilities_scanned:
        message = f"vulnerabilities: {result.vulnerability_status}"
        if policy.unscanned_action == "fail":
            failures.append(f"{message} (environment {policy.environment}: not allowed)")
        else:
            warnings.append(message)
    return GateDecision(not failures, tuple(failures), tuple(warnings), tuple(allowed))


def enforce(decision: GateDecision) -> None:
    """Raise PolicyError (exit 11) when the gate refused."""
    if not decision.passed:
        raise PolicyError("scan gate refused the image:\n  " + "\n  ".join(decision.failures))
