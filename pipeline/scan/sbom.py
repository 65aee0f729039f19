"""CycloneDX SBOM of a built image, read from the image itself (not from the build inputs).

Why from the image: the SBOM must describe what ships. Debian packages come from the
dpkg status files the builder writes (``/var/lib/dpkg/status.d/<pkg>``), Python
packages from ``*.dist-info/METADATA`` (and egg-info), every copy of each with its
location (``evidence.occurrences``), as syft reports them. The serial number and
timestamp derive from the image digest and its ``created`` time, so the same image
always gives the same SBOM (and the same attestation payload). Every SBOM is validated
against the CycloneDX 1.6 JSON schema before it is returned.
"""

from __future__ import annotations

import datetime as _dt
import email.parser
import json
import re
import uuid
from typing import Any

from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.component_evidence import ComponentEvidence, Occurrence
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from pipeline import __version__
from pipeline.errors import IntegrityError
from pipeline.oci.local_image import LocalImage, iter_files, open_image

PREDICATE_TYPE = "https://cyclonedx.org/bom"
#: Python distribution metadata, as pip (dist-info) or setuptools (egg-info) install it.
_PYTHON_METADATA = re.compile(r"(^|/)[^/]+(\.dist-info/METADATA|\.egg-info/PKG-INFO|\.egg-info)$")
_STATUS = re.compile(r"^var/lib/dpkg/status\.d/[^/]+$")
#: os-release(5): /etc/os-release first, /usr/lib/os-release where /etc has only a link.
_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")


def _deb_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            continue  # continuation lines (descriptions) are not needed
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _distro(text: str) -> str | None:
    """The purl ``distro`` qualifier (``debian-12``) from an os-release file, as syft sets it."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip().strip("\"'")
    name, version = fields.get("ID"), fields.get("VERSION_ID")
    return f"{name}-{version}" if name and version else None


def _component(purl: PackageURL, name: str, version: str, description: str | None,
               location: str) -> Component:
    """One installed copy: the bom-ref names the copy (a purl alone does not)."""
    return Component(
        name=name,
        version=version,
        type=ComponentType.LIBRARY,
        purl=purl,
        bom_ref=f"{purl} at {location}",
        description=description or None,
        evidence=ComponentEvidence(occurrences=[Occurrence(location=location)]),
    )


def _components(image: LocalImage) -> list[Component]:
    """Every distribution found, one component per copy, with its location.

    Why per copy and not per name: an image can hold one package twice (setuptools
    vendors ``platformdirs`` inside itself, the image imports the top-level one), and the
    copy a scanner should judge is the one that is used. The location is the absolute
    path of the metadata file, as syft reports it.
    """
    found: dict[str, tuple[tuple[str, str, str, str], Component]] = {}
    debs: dict[str, dict[str, str]] = {}
    os_release: dict[str, str] = {}
    want = lambda p: bool(  # noqa: E731
        _STATUS.match(p) or _PYTHON_METADATA.search(p) or p in _OS_RELEASE)
    for path, data in iter_files(image, want):  # later layers replace earlier ones
        text = data.decode("utf-8", "replace")
        if path in _OS_RELEASE:
            os_release[path] = text
        elif _STATUS.match(path):
            debs[path] = _deb_fields(text)
        else:
            meta = email.parser.Parser().parsestr(text, headersonly=True)
            name, version = meta.get("Name"), meta.get("Version")
            if not name or not version:
                continue
            key = re.sub(r"[-_.]+", "-", name).lower()
            purl = PackageURL("pypi", None, key, version)
            location = "/" + path
            found[path] = (("pypi", key, version, location),
                           _component(purl, name, version, meta.get("Summary"), location))
    # The distribution the packages belong to is what the image says it is (its
    # os-release, shipped by base-files), not what the builder assumes.
    distro = next((d for p in _OS_RELEASE if p in os_release
                   for d in [_distro(os_release[p])] if d), None)
    for path, fields in debs.items():
        name, version = fields.get("Package"), fields.get("Version")
        if not name or not version:
            continue
        qualifiers = {"arch": fields.get("Architecture", "amd64")}
        if distro:
            qualifiers["distro"] = distro
        purl = PackageURL("deb", "debian", name, version, qualifiers)
        location = "/" + path
        found[path] = (("deb", name, version, location),
                       _component(purl, name, version, fields.get("Description"), location))
    return [component for _, component in sorted(found.values(), key=lambda item: item[0])]


def image_sbom(target: str) -> dict[str, Any]:
    """The validated CycloneDX 1.6 JSON document (as a dict) for the image at ``target``."""
    image = open_image(target)
    labels = (image.config.get("config") or {}).get("Labels") or {}
    created = image.config.get("created") or "1970-01-01T00:00:00Z"
    timestamp = _dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    subject = Component(
        name=labels.get("org.opencontainers.image.title", "image"),
        version=image.digest,
        type=ComponentType.CONTAINER,
        bom_ref=image.digest,
        purl=PackageURL(
            "oci", None, labels.get("org.opencontainers.image.title", "image"), image.digest
        ),
    )
    tool = Component(
        name="secure-model-pipeline", version=__version__, type=ComponentType.APPLICATION
    )
    components = _components(image)
    bom = Bom(
        components=components,
        serial_number=uuid.uuid5(uuid.NAMESPACE_URL, f"sbom:{image.digest}"),
        metadata=BomMetaData(
            component=subject, timestamp=timestamp, tools=ToolRepository(components=[tool])
        ),
    )
    bom.register_dependency(subject, components)
    text = JsonV1Dot6(bom).output_as_string(indent=None)
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise IntegrityError(f"generated SBOM is not valid CycloneDX 1.6: {error}")
    return json.loads(text)


def validate_sbom(document: dict[str, Any]) -> None:
    """Raise IntegrityError unless ``document`` is valid CycloneDX 1.6 JSON."""
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(document))
    if error is not None:
        raise IntegrityError(f"not a valid CycloneDX 1.6 SBOM: {error}")
