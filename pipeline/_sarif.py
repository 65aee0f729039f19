"""SARIF 2.1.0 logs: the report format GitHub code scanning and most SAST dashboards read.

Why a ground module: ``pipeline policy check`` (policy) and ``pipeline scan`` (scan) are
separate capabilities and both write SARIF; one builder keeps the two logs the same shape
(tool, rules with their index, levels, physical locations) and valid against the official
schema (tests/fixtures/sarif/, checked in tests). Only what the spec defines is written;
``properties`` bags carry what it does not.

Locations: a file path relative to the working directory is written as a relative URI
against ``%SRCROOT%`` (what code scanning resolves against the repository root), an
absolute one as a ``file://`` URI, and a result without a file (stdin) gets a logical
location only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
VERSION = "2.1.0"
SRCROOT = "%SRCROOT%"
LEVELS = ("error", "warning", "note", "none")
FINGERPRINT = "secureModelPipelineFinding/v1"


@dataclass(frozen=True)
class Rule:
    """One rule (policy, scanner check): ``id`` is what results point at."""

    id: str
    short: str
    full: str = ""
    help_uri: str = ""
    level: str = "error"
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    """One finding: a rule, a level, a message and where (file and line, or only a name)."""

    rule_id: str
    level: str
    message: str
    uri: str = ""
    line: int = 0
    uri_base_id: str = SRCROOT
    logical_name: str = ""
    logical_kind: str = "resource"
    properties: Mapping[str, Any] = field(default_factory=dict)
    #: What makes this finding the same finding in the next run (rule, object, place,
    #: environment): code scanning tracks alerts by it instead of by line hash alone, so
    #: the staging and prod findings of one template line stay two alerts.
    identity: str = ""


def file_uri(path: str, base: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """``(uri, uriBaseId)`` of a file path: relative to ``base`` (default: the cwd) if inside.

    Returns ``("", "")`` for a path that names no file (``<stdin>``).
    """
    if not path or path.startswith("<"):
        return "", ""
    root = Path(base) if base is not None else Path.cwd()
    candidate = Path(path)
    if candidate.is_absolute():
        try:
            candidate = candidate.resolve().relative_to(root.resolve())
        except ValueError:
            return candidate.as_uri(), ""
    posix = PurePosixPath(*candidate.parts).as_posix()
    while posix.startswith("./"):
        posix = posix[2:]
    return quote(posix, safe="/"), SRCROOT


def _message(text: str) -> dict[str, str]:
    return {"text": text or "(no message)"}


def _result(item: Result, rule_index: Mapping[str, int]) -> dict[str, Any]:
    if item.level not in LEVELS:
        raise ValueError(f"SARIF level {item.level!r} is not one of {LEVELS}")
    out: dict[str, Any] = {"ruleId": item.rule_id, "level": item.level,
                           "message": _message(item.message)}
    if item.rule_id in rule_index:
        out["ruleIndex"] = rule_index[item.rule_id]
    location: dict[str, Any] = {}
    if item.uri:
        artifact: dict[str, Any] = {"uri": item.uri}
        if item.uri_base_id:
            artifact["uriBaseId"] = item.uri_base_id
        physical: dict[str, Any] = {"artifactLocation": artifact}
        if item.line > 0:
            physical["region"] = {"startLine": item.line}
        location["physicalLocation"] = physical
    if item.logical_name:
        location["logicalLocations"] = [{"fullyQualifiedName": item.logical_name,
                                         "kind": item.logical_kind}]
    if location:
        out["locations"] = [location]
    if item.identity:
        digest = hashlib.sha256(f"{item.rule_id}\0{item.identity}".encode()).hexdigest()
        out["partialFingerprints"] = {FINGERPRINT: digest}
    if item.properties:
        out["properties"] = dict(item.properties)
    return out


def _rule(rule: Rule) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rule.id, "name": rule.id,
                           "shortDescription": _message(rule.short),
                           "defaultConfiguration": {"level": rule.level}}
    if rule.full:
        out["fullDescription"] = _message(rule.full)
    if rule.help_uri:
        out["helpUri"] = rule.help_uri
    if rule.properties:
        out["properties"] = dict(rule.properties)
    return out


def sarif_log(
    tool: str,
    version: str,
    rules: Sequence[Rule],
    results: Iterable[Result],
    *,
    information_uri: str = "",
    notifications: Sequence[tuple[str, str]] = (),
    uri_bases: Mapping[str, str] | None = None,
    properties: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One SARIF log with one run. ``notifications`` are ``(level, text)`` pairs the tool
    reports about itself (an input it could not scan), never findings."""
    rule_index = {rule.id: i for i, rule in enumerate(rules)}
    driver: dict[str, Any] = {"name": tool, "version": version,
                              "rules": [_rule(r) for r in rules]}
    if information_uri:
        driver["informationUri"] = information_uri
    invocation: dict[str, Any] = {"executionSuccessful": True}
    if notifications:
        invocation["toolExecutionNotifications"] = [
            {"level": level, "message": _message(text)} for level, text in notifications]
    run: dict[str, Any] = {
        "tool": {"driver": driver},
        "invocations": [invocation],
        "originalUriBaseIds": {SRCROOT: {"description": _message(
            "the directory the command ran in (the repository root in CI)")}},
        "results": [_result(r, rule_index) for r in results],
    }
    for base, text in (uri_bases or {}).items():
        run["originalUriBaseIds"][base] = {"description": _message(text)}
    if properties:
        run["properties"] = dict(properties)
    return {"$schema": SCHEMA_URI, "version": VERSION, "runs": [run]}


def dumps(log: Mapping[str, Any]) -> str:
    """The log as JSON text (stable key order, so reports diff cleanly)."""
    return json.dumps(log, indent=2, sort_keys=True)


__all__ = ["FINGERPRINT", "LEVELS", "SCHEMA_URI", "SRCROOT", "VERSION", "Result", "Rule", "dumps",
           "file_uri", "sarif_log"]
