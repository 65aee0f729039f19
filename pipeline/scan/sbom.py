"""CycloneDX SBOM of a built image, read from the image itself (not from the build inputs).

Why from the image: the SBOM must describe what ships. Debian packages come from the
dpkg status files the builder writes (``/var/lib/dpkg/status.d/<pkg>``), Python
packages from ``*.dist-info/METADATA``. The serial number and timestamp derive from the
image digest and its ``created`` time, so the same image always gives the same SBOM
(and the same attestation payload). Every SBOM is validated against the CycloneDX 1.6
JSON schema before it is returned.
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
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from pipeline import __version__
from pipeline.errors import IntegrityError
from pipeline.oci.local_image import LocalImage, iter_files, open_image

PREDICATE_TYPE = "https://cyclonedx.org/bom"
_DIST_INFO = re.compile(r"(^|/)[^/]+\.dist-info/METADATA$")
_STATUS = re.compile(r"^var/lib/dpkg/status\.d/[^/]+$")


def _deb_fields(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line[:1] in (" ", "\t") and key:
            continue  # continuation lines (descriptions) are not needed
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _components(image: LocalImage) -> list[Component]:
    debs: dict[str, Component] = {}
    wheels: dict[str, Component] = {}
    want = lambda p: bool(_STATUS.match(p) or _DIST_INFO.search(p))  # noqa: E731
    distro = "debian-12"
    for path, data in iter_files(image, want):
        text = data.decode("utf-8", "replace")
        if _STATUS.match(path):
            fields = _deb_fields(text)
            name, version = fields.get("Package"), fields.get("Version")
            if not name or not version:
                continue
            arch = fields.get("Architecture", "amd64")
            purl = PackageURL("deb", "debian", name, version, {"arch": arch, "distro": distro})
            debs[name] = Component(
                name=name,
                version=version,
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=str(purl),
                description=(fields.get("Description") or None),
            )
        else:
            meta = email.parser.Parser().parsestr(text, headersonly=True)
            name, version = meta.get("Name"), meta.get("Version")
            if not name or not version:
                continue
            key = re.sub(r"[-_.]+", "-", name).lower()
            purl = PackageURL("pypi", None, key, version)
            wheels[key] = Component(
                name=name,
                version=version,
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=str(purl),
                description=(meta.get("Summary") or None),
            )
    return [debs[k] for k in sorted(debs)] + [wheels[k] for k in sorted(wheels)]


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
