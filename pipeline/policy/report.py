"""Reports of a policy check: text for people, JSON, GitHub annotations, JUnit XML.

Why several: a developer reads text, a script reads JSON, GitHub Actions turns
``::error`` lines into annotations on the PR's files, and most other CI systems
(GitLab, Jenkins, Tekton dashboards) read JUnit XML. All are built from the same
:class:`~pipeline.policy.check.CheckResult`, so they never disagree.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import defaultdict

from pipeline.policy.check import CheckResult, Violation

FORMATS = ("text", "json", "github", "junit")


def _line(v: Violation) -> str:
    prefix = "warning: " if v.action != "Deny" else ""
    return (f"{prefix}{v.source}: document {v.index}: {v.object_ref}: "
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
        props = f"file={_gh_property(v.source)},title={_gh_property('policy ' + v.policy)}"
        body = f"{v.object_ref} (document {v.index}): {v.message}"
        lines.append(f"::{level} {props}::{_gh_data(body)}")
    lines.append(summary(result))
    return "\n".join(lines)


def render_junit(result: CheckResult) -> str:
    """JUnit XML: one test case per object, one failure per refused object."""
    by_object: dict[tuple[str, int, str, str], list[Violation]] = defaultdict(list)
    for v in result.violations:
        by_object[(v.source, v.index, v.kind, v.name)].append(v)
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


def render(result: CheckResult, fmt: str) -> str:
    """The report of ``result`` in ``fmt`` (one of :data:`FORMATS`)."""
    renderers = {"text": render_text, "json": render_json, "github": render_github,
                 "junit": render_junit}
    return renderers[fmt](result)
