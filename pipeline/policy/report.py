"""Reports of a policy check: text, JSON, GitHub annotations, JUnit XML, SARIF 2.1.0.

Why several: a developer reads text, a script reads JSON, GitHub Actions turns
``::error`` lines into annotations on the PR's files, most other CI systems (GitLab,
Jenkins, Tekton dashboards) read JUnit XML, and GitHub code scanning (and most SAST
dashboards) read SARIF. All are built from the same
:class:`~pipeline.policy.check.CheckResult`, so they never disagree; each finding carries
its file and line (for a chart: the template and the line its object starts at).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import defaultdict

from pipeline import __version__
from pipeline._sarif import Result, Rule, dumps, file_uri, sarif_log
from pipeline.policy.check import IMAGE_POLICY_NAME, CheckResult, Violation

FORMATS = ("text", "json", "github", "junit", "sarif")
TOOL = "secure-model-pipeline policy check"
_SARIF_LEVEL = {"Deny": "error", "Warn": "warning", "Audit": "note"}


def _where(v: Violation) -> str:
    return f"{v.source}:{v.line}" if v.line else v.source


def _line(v: Violation) -> str:
    prefix = "warning: " if v.action != "Deny" else ""
    env = f", environment {v.environment}" if v.environment else ""
    chart = f" (chart {v.chart}{env})" if v.chart else ""
    return (f"{prefix}{_where(v)}: document {v.index}: {v.object_ref}{chart}: "
            f"policy {v.policy}: {v.message}")


def summary(result: CheckResult) -> str:
    """One line: how many objects, policies, violations."""
    verdict = "ok" if result.ok else f"{len(result.violations)} violation(s)"
    extra = f", {len(result.warnings)} warning(s)" if result.warnings else ""
    images = f", {result.images_checked} image(s) verified" if result.images_checked else ""
    return (f"{verdict}{extra}: {result.objects} object(s) checked against "
            f"{len(result.policies)} policies{images}")


def render_text(result: CheckResult) -> str:
    lines = [_line(v) for v in result.violations + result.warnings]
    lines += [f"note: policy {name} has no binding: not enforced" for name in result.unbound]
    lines.append(summary(result))
    return "\n".join(lines)


def render_json(result: CheckResult) -> str:
    return json.dumps(result.to_dict(), indent=2, sort_keys=True)


def _gh_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _gh_property(text: str) -> str:
    return _gh_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(result: CheckResult) -> str:
    """GitHub Actions workflow commands: one ``::error`` (or ``::warning``) per finding."""
    lines = []
    for v in result.violations + result.warnings:
        level = "error" if v.action == "Deny" else "warning"
        line = f",line={v.line}" if v.line else ""
        props = (f"file={_gh_property(v.source)}{line},"
                 f"title={_gh_property('policy ' + v.policy)}")
        env = f", environment {v.environment}" if v.environment else ""
        body = f"{v.object_ref} (document {v.index}{env}): {v.message}"
        lines.append(f"::{level} {props}::{_gh_data(body)}")
    lines.append(summary(result))
    return "\n".join(lines)


def render_junit(result: CheckResult) -> str:
    """JUnit XML: one test case per object, one failure per refused object."""
    by_object: dict[tuple[str, int, str, str], list[Violation]] = defaultdict(list)
    for v in result.violations:
        by_object[(v.where, v.index, v.kind, v.name)].append(v)
    suites = ET.Element("testsuites", name="pipeline policy check")
    suite = ET.SubElement(
        suites, "testsuite", name="policies", tests=str(len(result.checked)),
        failures=str(len(by_object)), errors="0", skipped="0",
    )
    for key in result.checked:
        source, index, kind, name = key
        case = ET.SubElement(suite, "testcase", classname=f"{source}#{index}",
                             name=f"{kind}/{name or '<unnamed>'}")
        found = by_object.get(key)
        if found:
            failure = ET.SubElement(
                case, "failure", type="PolicyViolation",
                message="; ".join(f"{v.policy}: {v.message}" for v in found),
            )
            failure.text = "\n".join(_line(v) for v in found)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def render_sarif(result: CheckResult) -> str:
    """SARIF 2.1.0: one rule per policy, one result per finding, located in file and line.

    Deny is ``error``, Warn ``warning``, Audit ``note`` (as the binding's
    validationActions say); ``runs[0].results`` is empty for a clean check.
    """
    rules = [Rule(name, f"ValidatingAdmissionPolicy {name}" if name != IMAGE_POLICY_NAME
                  else "image policy: signatures and attestations",
                  full=description,
                  properties={"policyFile": source})
             for name, (source, description) in sorted(result.rules.items())]
    known = {rule.id for rule in rules}
    rules += [Rule(name, f"policy {name}") for name in
              sorted({v.policy for v in result.violations + result.warnings} - known)]
    results = []
    for v in result.violations + result.warnings:
        uri, base = file_uri(v.source)
        namespace = f"{v.namespace}/" if v.namespace else ""
        results.append(Result(
            v.policy, _SARIF_LEVEL.get(v.action, "error"),
            f"{v.object_ref} (document {v.index}"
            f"{', environment ' + v.environment if v.environment else ''}): {v.message}",
            uri, v.line, base,
            logical_name=f"{namespace}{v.object_ref}",
            identity="\0".join((v.source, f"{namespace}{v.object_ref}", v.environment,
                                 v.message)),
            properties={"action": v.action, "binding": v.binding, "document": v.index,
                        **({"chart": v.chart} if v.chart else {}),
                        **({"environment": v.environment} if v.environment else {}),
                        **({"errored": True} if v.errored else {})},
        ))
    notes = [("note", f"policy {name} has no binding: not enforced") for name in result.unbound]
    return dumps(sarif_log(TOOL, __version__, rules, results, notifications=notes,
                           properties={"objects": result.objects,
                                       "imagesChecked": result.images_checked}))


def render(result: CheckResult, fmt: str) -> str:
    """The report of ``result`` in ``fmt`` (one of :data:`FORMATS`)."""
    renderers = {"text": render_text, "json": render_json, "github": render_github,
                 "junit": render_junit, "sarif": render_sarif}
    return renderers[fmt](result)
