"""Blob uploads (distribution spec "pushing blobs"): one PUT, or PATCH chunks, or a mount.

A blob is uploaded only when the repository lacks it; a file is streamed (never read
whole) and hashed on the way, so a file that changed since its digest was taken is
caught. Big blobs go up in chunks. A failed upload session cannot be resumed reliably
(distribution forgets it after a failed PATCH), so a retry starts a fresh one from POST.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests

from pipeline.errors import InputError, IntegrityError, NotFoundError, UnreachableError
from pipeline.oci._retry import with_retries
from pipeline.oci.digest import digest_of, file_digest, parse_digest

if TYPE_CHECKING:
    from pipeline.oci.client import RegistryClient

#: blobs at least this big are uploaded in chunks (PATCH) unless told otherwise.
CHUNKED_THRESHOLD = 256 * 1024 * 1024
DEFAULT_CHUNK = 64 * 1024 * 1024


class _Window:
    """A read-only view of ``length`` bytes of a file from ``offset`` (one upload chunk)."""

    def __init__(
        self,
        path: Path,
        offset: int,
        length: int,
        hasher: Any = None,
        progress: Callable[[int], None] | None = None,
    ):
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._file.seek(offset)
        self._left = length
        self._hasher = hasher
        self._progress = progress
        self.len = length  # requests uses this for Content-Length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._file.read(size)
        self._left -= len(data)
        if self._hasher is not None:
            self._hasher.update(data)
        if self._progress is not None:
            self._progress(len(data))
        return data

    def close(self) -> None:
        self._file.close()


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def push_blob(
    client: RegistryClient,
    repository: str,
    data: bytes | Path | str,
    digest: str | None = None,
    *,
    mount_from: str | None = None,
    chunk_size: int | None = None,
) -> str:
    """Upload a blob unless the repository has it; returns its digest.

    ``data`` is bytes or a file path (streamed, never read whole). With
    ``mount_from`` the registry is first asked to link the blob from that
    repository (no bytes sent). Big blobs, or any with ``chunk_size``, go
    up in PATCH chunks; the rest in one PUT.
    """
    path = Path(data) if isinstance(data, (str, os.PathLike)) else None
    payload = b""
    hashers: list[Any] = []
    if path is not None and digest:
        # Hash while uploading (one read of the file); the registry checks it too.
        actual, size = digest, path.stat().st_size
        hashers.append(None)
    elif path is not None:
        actual, size = file_digest(path, "sha256")
    else:
        assert isinstance(data, (bytes, bytearray, memoryview))
        payload = bytes(data)
        algorithm = parse_digest(digest)[0] if digest else "sha256"
        actual, size = digest_of(payload, algorithm), len(payload)
    if digest and digest != actual:
        raise IntegrityError(f"blob content has digest {actual}, expected {digest}")
    digest = actual
    if client.blob_exists(repository, digest):
        return digest
    what = f"upload blob {repository}@{digest}"
    scope = client._scope(repository, "pull,push")
    if mount_from and mount_from != repository:
        location = _start_upload(client, repository, digest, mount_from, scope, what)
        if location is None:
            return digest  # mounted
    if chunk_size is None and size >= CHUNKED_THRESHOLD:
        chunk_size = DEFAULT_CHUNK

    def upload() -> str | None:
        location = _start_upload(client, repository, digest, None, scope, what, 0)
        assert location is not None
        hasher = hashlib.new(parse_digest(digest)[0]) if hashers else None
        content = _Content(path, payload, size, hasher, client.on_bytes)
        result = _send(client, location, content, digest, chunk_size, scope, what)
        if hasher is not None and f"{hasher.name}:{hasher.hexdigest()}" != digest:
            raise IntegrityError(f"{path}: content does not match {digest} (changed on disk?)")
        return result

    # A failed upload session cannot be resumed reliably: restart it from POST.
    returned = with_retries(
        lambda: _unwrap_unreachable(upload),
        retries=client.retries,
        what=what,
        base_delay=client.backoff,
    )
    if returned and returned != digest:
        raise IntegrityError(f"{what}: registry stored digest {returned}")
    return digest


def _start_upload(
    client: RegistryClient,
    repository: str,
    digest: str,
    mount_from: str | None,
    scope: str,
    what: str,
    inner_retries: int | None = None,
) -> str | None:
    url = f"/v2/{repository}/blobs/uploads/"
    if mount_from:
        url += "?" + urlencode({"mount": digest, "from": mount_from})
        scope = f"{scope} {client._scope(mount_from)}"
    response = client._request(
        "POST",
        url,
        scope=scope,
        ok=(201, 202),
        what=what,
        headers={"Content-Length": "0"},
        retries=inner_retries,
    )
    if response.status_code == 201:
        return None
    location = response.headers.get("Location")
    if not location:
        raise InputError(f"{what}: registry gave no upload location")
    return urljoin(client.base_url + "/", location)


@dataclass(frozen=True)
class _Content:
    """What one upload sends: a file (streamed, hashed on the way) or bytes in memory."""

    path: Path | None
    data: bytes
    size: int
    hasher: Any
    on_bytes: Callable[[int], None] | None

    def part(self, start: int, length: int) -> Callable[[], Any]:
        """A fresh body for bytes ``start`` .. ``start + length`` (a retry re-reads)."""
        if self.path is None:
            return lambda: self.data[start : start + length]
        path = self.path
        return lambda: _Window(path, start, length, self.hasher, self.on_bytes)


def _send(
    client: RegistryClient,
    location: str,
    content: _Content,
    digest: str,
    chunk: int | None,
    scope: str,
    what: str,
) -> str | None:
    """One PUT with everything, or PATCH chunks then an empty PUT; the registry's digest."""
    if not chunk:
        return _close_upload(client, location, digest, scope, what,
                             content.part(0, content.size), content.size)
    offset = 0
    while offset < content.size:
        length = min(chunk, content.size - offset)
        response = client._request(
            "PATCH",
            location,
            scope=scope,
            body=content.part(offset, length),
            ok=(202, 204),
            what=what,
            retries=0,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Content-Range": f"{offset}-{offset + length - 1}",
            },
        )
        location = urljoin(client.base_url + "/", response.headers.get("Location", location))
        offset += length
    return _close_upload(client, location, digest, scope, what, b"", 0)


def _close_upload(
    client: RegistryClient,
    location: str,
    digest: str,
    scope: str,
    what: str,
    body: Callable[[], Any] | bytes,
    size: int,
) -> str | None:
    """The final ``PUT ?digest=`` of an upload (with the last bytes, or none); its digest."""
    response = client._request(
        "PUT",
        _with_query(location, digest=digest),
        scope=scope,
        body=body,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        ok=(201, 204),
        what=what,
        retries=0,
    )
    return response.headers.get("Docker-Content-Digest")


class _UploadFailed(requests.ConnectionError):
    """One upload attempt failed in a way a fresh upload session may fix."""


def _unwrap_unreachable(upload: Callable[[], str | None]) -> str | None:
    """Run one upload; turn an inner 'gave up' into a retryable error for the outer loop."""

    try:
        return upload()
    except UnreachableError as exc:
        raise _UploadFailed(str(exc)) from None
    except NotFoundError as exc:
        # distribution forgets an upload session after a failed PATCH: start again
        if "BLOB_UPLOAD_UNKNOWN" in str(exc):
            raise _UploadFailed(str(exc)) from None
        raise
