"""Image references (``registry/repository[:tag][@digest]``), normalised like docker.

The grammar is the one of github.com/distribution/reference, so a reference
means the same thing here as in docker, skopeo and cosign:

* the first path component is a registry when it contains ``.`` or ``:``, is
  ``localhost``, or has upper-case letters; otherwise the registry is
  ``docker.io`` (and ``index.docker.io`` is folded into it);
* single-name repositories on docker.io get ``library/``;
* repository components are lower case (``[a-z0-9]+`` joined by ``.``, ``_``,
  ``__`` or dashes), at most 255 characters in all;
* with neither tag nor digest, the tag is ``latest``.

Anything else is refused with InputError: a reference that another tool would
read differently is a supply-chain hazard.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pipeline.errors import InputError
from pipeline.oci.digest import parse_digest

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
_LEGACY_REGISTRY = "index.docker.io"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN_RE = re.compile(rf"^(?:{_IPV6}|{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*)(?::[0-9]+)?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference; ``str()`` gives its canonical form."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise ``text``; InputError when it is not a valid reference."""
        if not isinstance(text, str) or not text:
            raise InputError("empty image reference")
        if text != text.strip() or any(c.isspace() for c in text):
            raise InputError(f"invalid image reference {text!r}: contains whitespace")
        remainder = text
        digest = None
        if "@" in remainder:
            remainder, digest = remainder.split("@", 1)
            try:
                parse_digest(digest)
            except InputError as exc:
                raise InputError(f"invalid image reference {text!r}: {exc}") from None
        tag = None
        slash = remainder.rfind("/")
        colon = remainder.rfind(":")
        if colon > slash:
            remainder, tag = remainder[:colon], remainder[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise InputError(f"invalid image reference {text!r}: invalid tag {tag!r}")
        registry, repository = _split_name(remainder, text)
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry=registry, repository=repository, tag=tag, digest=digest)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to ``digest`` (the tag is kept for readability)."""
        parse_digest(digest)
        return replace(self, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag`` (any digest is dropped: it would contradict)."""
        if not _TAG_RE.match(tag):
            raise InputError(f"invalid tag {tag!r}")
        return replace(self, tag=tag, digest=None)

    @property
    def identifier(self) -> str:
        """What the registry API is asked for: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def _split_name(name: str, original: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        registry, path = first, rest
        if not _DOMAIN_RE.match(registry):
            raise InputError(f"invalid image reference {original!r}: invalid registry {registry!r}")
    else:
        registry, path = DEFAULT_REGISTRY, name
    if registry == _LEGACY_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if not path:
        raise InputError(f"invalid image reference {original!r}: missing repository")
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.match(component):
            if component.lower() != component and _PATH_COMPONENT_RE.match(component.lower()):
                raise InputError(
                    f"invalid image reference {original!r}: repository must be lowercase"
                )
            raise InputError(
                f"invalid image reference {original!r}: invalid repository component {component!r}"
            )
    if len(registry) + 1 + len(path) > _MAX_NAME:
        raise InputError(f"invalid image reference {original!r}: name longer than {_MAX_NAME}")
    return registry, path


__all__ = ["DEFAULT_REGISTRY", "DEFAULT_TAG", "Reference"]
