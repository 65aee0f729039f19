"""SARIF logs (pipeline/_sarif.py) validate, and the validator the report tests use rejects
what code scanning rejects."""

from __future__ import annotations

import pytest

from pipeline._sarif import Result, Rule, file_uri, sarif_log
from tests.support.sarif import validate_sarif


def _log() -> dict:
    return sarif_log("t", "1", [Rule("r", "a rule")],
                     [Result("r", "error", "m", "a/b.yaml", 3)])


def test_a_log_of_ours_validates() -> None:
    log = validate_sarif(_log())
    result = log["runs"][0]["results"][0]
    assert result["locations"][0]["physicalLocation"] == {
        "artifactLocation": {"uri": "a/b.yaml", "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 3}}


@pytest.mark.parametrize("breakage", [
    lambda log: log.update(version="2.0.0"),
    lambda log: log["runs"][0]["results"][0].update(level="fatal"),
    lambda log: log["runs"][0]["results"][0]["locations"][0]["physicalLocation"].update(
        region={"startLine": 0}),
    lambda log: log["runs"][0]["tool"]["driver"].pop("name"),
    lambda log: log["runs"][0]["results"][0].pop("message"),
])
def test_the_official_schema_catches_a_broken_log(breakage) -> None:  # type: ignore[no-untyped-def]
    log = _log()
    breakage(log)
    with pytest.raises(AssertionError, match="not valid SARIF"):
        validate_sarif(log)


def test_file_uris(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert file_uri("<stdin>") == ("", "")
    assert file_uri("./x/a b.yaml") == ("x/a%20b.yaml", "%SRCROOT%")
    inside = tmp_path / "d" / "m.yaml"
    assert file_uri(str(inside), base=tmp_path) == ("d/m.yaml", "%SRCROOT%")
    outside = file_uri("/etc/hosts", base=tmp_path)
    assert outside == ("file:///etc/hosts", "")
    with pytest.raises(ValueError, match="level"):
        sarif_log("t", "1", [], [Result("r", "fatal", "m")])
