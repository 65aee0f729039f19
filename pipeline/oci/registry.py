"""Reaching a registry from library code: how (:class:`RegistryOptions`), with what client
(:func:`open_client`) and what a reference names right now (:func:`resolve_descriptor`).

:class:`RegistryOptions` is the one way registry options travel: the CLI builds one
from its flags (``pipeline._cli._registry``), the runtime from its configuration, a
test by hand; every library function that talks to a registry takes it as
``registry_options`` (or an open ``client``) and nothing else. It is frozen, so a
function cannot change what its caller asked for, and its ``repr`` hides the password.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import IntegrityError, NotFoundError
from pipeline.oci.deadline import Deadline
from pipeline.oci.digest import parse_digest
from pipeline.oci.reference import Reference

if TYPE_CHECKING:
    from pipeline.oci.client import RegistryClient

__all__ = [
    "Credentials",
    "RegistryOptions",
    "open_client",
    "resolve_descriptor",
    "resolve_digest",
]


@dataclass(frozen=True)
class Credentials:
    """A username/password pair; ``repr`` hides the password."""

    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        import base64

        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True)
class RegistryOptions:
    """How to reach registries: transport, trust, timeouts, where credentials come from.

    ``insecure``: plain HTTP, refused for anything but a loopback registry.
    ``ca_file``: PEM bundle that verifies the registry's TLS certificate (else the
    system CAs). ``timeout`` (seconds per request), ``retries`` and ``backoff``
    (seconds, doubled per retry) for transient failures. ``deadline``: one total
    deadline (:class:`~pipeline.oci.deadline.Deadline`) for everything done with these
    options — every request, retry and token fetch of a CLI command or one admission
    decision — made where that operation starts (``with_deadline``). ``credentials``: an explicit
    pair; ``None`` means the settings' (``PIPELINE_REGISTRY_USERNAME``/``_PASSWORD``),
    then docker's ``config.json``, then anonymous.
    """

    insecure: bool = False
    ca_file: Path | None = None
    timeout: float = 30.0
    retries: int = 4
    backoff: float = 0.2
    credentials: Credentials | None = None
    deadline: Deadline | None = None

    def with_deadline(self, seconds: float | None) -> RegistryOptions:
        """These options with a deadline ``seconds`` from now (None: unchanged)."""
        if seconds is None:
            return self
        import dataclasses

        return dataclasses.replace(self, deadline=Deadline.after(seconds))

    def client(self, registry: str | Reference) -> RegistryClient:
        """A new client for ``registry`` (a host or a reference's host); the caller closes it."""
        from pipeline.oci.client import RegistryClient

        host = registry.registry if isinstance(registry, Reference) else registry
        credentials = self.credentials
        return RegistryClient(
            host,
            insecure=self.insecure,
            ca_file=str(self.ca_file) if self.ca_file is not None else None,
            username=credentials.username if credentials else None,
            password=credentials.password if credentials else None,
            retries=self.retries,
            timeout=self.timeout,
            backoff=self.backoff,
            deadline=self.deadline,
        )


@contextlib.contextmanager
def open_client(
    ref: Reference,
    client: RegistryClient | None = None,
    registry_options: RegistryOptions | None = None,
) -> Iterator[RegistryClient]:
    """The caller's ``client`` as is, or a new one for ``ref``'s registry, closed afterwards."""
    if client is not None:
        yield client
        return
    if registry_options is not None and not isinstance(registry_options, RegistryOptions):
        raise TypeError(
            f"registry_options must be a RegistryOptions, not {type(registry_options).__name__}"
        )
    own = (registry_options or RegistryOptions()).client(ref)
    try:
        yield own
    finally:
        own.close()


def resolve_descriptor(client: Any, ref: Reference) -> dict[str, Any]:
    """The descriptor (mediaType, digest, size) of what ``ref`` names right now.

    A tag is resolved at this moment: a signature made now binds that digest, and a
    tag moved later no longer matches it.
    """
    descriptor: dict[str, Any] | None = client.head_manifest(ref.repository, ref.identifier)
    if descriptor is None:
        raise NotFoundError(f"{ref}: no such manifest in the registry")
    if ref.digest and descriptor.get("digest") != ref.digest:
        raise IntegrityError(f"{ref}: registry answered with digest {descriptor.get('digest')}")
    return descriptor


def resolve_digest(client: Any, ref: Reference) -> str:
    """The digest to verify: the pinned one (no request), else the tag's current one."""
    if ref.digest:
        parse_digest(ref.digest)
        return ref.digest
    return str(resolve_descriptor(client, ref)["digest"])
