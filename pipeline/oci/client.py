"""A client for the OCI distribution API (``/v2/``), verifying everything it receives.

Trust model: the registry is storage, not an authority. Every manifest and blob
that comes back is re-hashed and compared with the digest we asked for (and
with ``Docker-Content-Digest`` when the registry sends one); a mismatch is an
IntegrityError, never a warning. Pushing an image uploads every blob and
confirms it with HEAD before the manifest is PUT, so a tag never points at
missing content, even when the registry dies half way.

Blob uploads are :mod:`pipeline.oci._upload`'s, referrers (the API and its tag
fallback) :mod:`pipeline.oci._referrers`'s; this module is the transport they share.

Transport: one ``requests.Session``; HTTPS by default with the system CAs or
``ca_file``; plain HTTP only with ``insecure=True`` and only to a loopback
address (anything else is a ConfigError). Transient failures (connection
errors, 429, 5xx) are retried with exponential backoff, then reported as
UnreachableError. 401/403 -> AuthError, 404 -> NotFoundError.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter

from pipeline.errors import (
    AuthError,
    ConfigError,
    InputError,
    IntegrityError,
    NotFoundError,
)
from pipeline.oci import _referrers, _upload
from pipeline.oci import media_types as mt
from pipeline.oci._auth import Authenticator, is_loopback_host, resolve_credentials
from pipeline.oci._retry import RetryableStatus, with_retries
from pipeline.oci._watchdog import SocketWatch
from pipeline.oci.deadline import Deadline
from pipeline.oci.digest import digest_of, is_digest, parse_digest
from pipeline.oci.manifest import MAX_MANIFEST_BYTES

ALL_MANIFEST_TYPES = mt.ALL_MANIFEST_TYPES
_IO_BLOCK = 1 << 20


class BlobSink(Protocol):
    """Where a downloaded blob goes: a file, a buffer, a layout's verifying writer."""

    def write(self, data: bytes, /) -> int | None: ...


class _BigBlockAdapter(HTTPAdapter):
    """Send request bodies in 1 MiB writes instead of urllib3's 16 KiB (upload speed);
    every connection it opens reports to the client's :class:`SocketWatch` (deadline)."""

    def __init__(self, watch: SocketWatch, **kwargs: Any) -> None:
        self._watch = watch
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("blocksize", _IO_BLOCK)
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._watch.pool_classes()


def _error_detail(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(
            f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)
        )
    except (ValueError, AttributeError):
        return ""


def _origin(url: str) -> tuple[str, str, int | None]:
    """``(scheme, host, port)`` of ``url``, default ports filled in (for same-origin checks)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port




class RegistryClient:
    """One registry (``host[:port]``), any repositories on it."""

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        ca_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        retries: int = 4,
        timeout: float = 30.0,
        backoff: float = 0.2,
        deadline: Deadline | None = None,
    ):
        if not registry or "/" in registry:
            raise ConfigError(f"invalid registry host {registry!r}")
        self.registry = registry
        host = "registry-1.docker.io" if registry == "docker.io" else registry
        hostname = urlsplit(f"//{host}").hostname or ""
        if insecure:
            if not is_loopback_host(hostname):
                raise ConfigError(
                    f"--insecure (plain HTTP) is only allowed for loopback registries, "
                    f"not {registry}"
                )
            scheme = "http"
        else:
            scheme = "https"
        if ca_file is not None and not Path(ca_file).is_file():
            raise ConfigError(f"CA file not found: {ca_file}")
        self.base_url = f"{scheme}://{host}"
        self.retries = retries
        #: Progress hook: called with the number of blob bytes just sent or received
        #: (streamed uploads and downloads), so a CLI can draw a transfer bar.
        self.on_bytes: Callable[[int], None] | None = None
        self.timeout = timeout
        self.backoff = backoff
        #: The whole operation's deadline (None: only the per-request ``timeout``).
        self.deadline = deadline
        self._watch = SocketWatch()
        self._verify: bool | str = ca_file or True
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or netrc from the environment
        adapter = _BigBlockAdapter(self._watch, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._auth = Authenticator(
            self._session,
            resolve_credentials(registry, username, password),
            base_url=self.base_url,
            verify=self._verify,
            timeout=self._request_timeout,
            deadline=deadline,
        )

    def close(self) -> None:
        self._watch.cancel()
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RegistryClient({self.base_url!r})"

    # -- transport -----------------------------------------------------------------------
    def _request_timeout(self) -> float:
        """This request's timeout: the per-request one, cut to what the deadline leaves.

        Arms the socket watch, so a request in flight at the deadline is cut off too.
        """
        if self.deadline is None:
            return self.timeout
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise self.deadline.error(f"registry {self.registry}")
        self._watch.arm(remaining)
        return min(self.timeout, remaining)

    def _deadline_passed(self, during: str) -> None:
        """After a transport failure: DeadlineError when the deadline is why."""
        if self.deadline is not None and (self.deadline.expired or self._watch.fired):
            raise self.deadline.error(f"registry {self.registry}", during) from None

    def _url(self, path: str) -> str:
        return urljoin(self.base_url + "/", path.lstrip("/"))

    def _request(
        self,
        method: str,
        url: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        body: Callable[[], Any] | bytes | None = None,
        stream: bool = False,
        ok: Sequence[int] = (200,),
        missing_ok: bool = False,
        retries: int | None = None,
        what: str,
    ) -> requests.Response:
        """Send with auth, retries and status mapping; returns a response with an ok status."""
        full = url if url.startswith(("http://", "https://")) else self._url(url)
        # Credentials (Basic, or a bearer token) go only to the registry's own origin: an
        # upload Location or pagination link naming another host, or plain HTTP, gets none.
        same_origin = _origin(full) == _origin(self.base_url)

        def attempt() -> requests.Response:
            response: requests.Response | None = None
            for round_ in range(2):
                send_headers = dict(headers or {})
                auth = self._auth.header(scope) if same_origin else None
                if auth:
                    send_headers["Authorization"] = auth
                timeout = self._request_timeout()
                data = body() if callable(body) else body
                try:
                    response = self._session.request(
                        method,
                        full,
                        headers=send_headers,
                        data=data,
                        stream=stream,
                        timeout=timeout,
                        verify=self._verify,
                        allow_redirects=True,
                    )
                except requests.exceptions.SSLError as exc:
                    raise ConfigError(
                        f"TLS verification of {self.registry} failed: {_short(exc)} (use --ca-file)"
                    ) from None
                except requests.exceptions.InvalidURL as exc:
                    raise InputError(f"invalid registry URL: {exc}") from None
                finally:
                    close = getattr(data, "close", None)
                    if close is not None:
                        close()
                if self._watch.fired:  # cut off at the deadline: what came is not an answer
                    response.close()
                    self._deadline_passed(what)
                if response.status_code == 401 and round_ == 0 and same_origin:
                    if self._auth.header(scope):
                        self._auth.forget(scope)
                    if self._auth.answer(response, scope):
                        response.close()
                        continue
                break
            assert response is not None
            if response.status_code in (408, 429) or response.status_code >= 500:
                response.close()
                raise RetryableStatus(response)
            return response

        response = with_retries(
            attempt,
            retries=self.retries if retries is None else retries,
            what=f"{what} at {self.registry}",
            base_delay=self.backoff,
            deadline=self.deadline,
            who=f"registry {self.registry}",
        )
        status = response.status_code
        if status in ok:
            return response
        detail = _error_detail(response) if not stream or method != "HEAD" else ""
        response.close()
        suffix = f" ({detail})" if detail else ""
        if status == 404:
            if missing_ok:
                return response
            raise NotFoundError(f"{what}: not found at {self.registry}{suffix}")
        if status in (401, 403):
            raise AuthError(f"{what}: access denied by {self.registry} (HTTP {status}){suffix}")
        if "DIGEST_INVALID" in detail:
            raise IntegrityError(f"{what}: registry rejected the digest{suffix}")
        if "BLOB_UNKNOWN" in detail or "MANIFEST_UNKNOWN" in detail:
            raise NotFoundError(f"{what}: {self.registry} does not have it{suffix}")
        raise InputError(f"{what}: {self.registry} answered HTTP {status}{suffix}")

    @staticmethod
    def _scope(repository: str, actions: str = "pull") -> str:
        return f"repository:{repository}:{actions}"

    # -- manifests -----------------------------------------------------------------------
    def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = ALL_MANIFEST_TYPES
    ) -> tuple[bytes, str, str]:
        """Fetch a manifest: ``(body, media_type, digest)``, digest verified."""
        what = f"manifest {repository}:{reference}"
        response = self._request(
            "GET",
            f"/v2/{repository}/manifests/{quote(reference, safe=':')}",
            scope=self._scope(repository),
            headers={"Accept": ", ".join(accept)},
            stream=True,
            what=what,
        )
        body = self._read_limited(response, MAX_MANIFEST_BYTES, what)
        algorithm = parse_digest(reference)[0] if is_digest(reference) else "sha256"
        digest = digest_of(body, algorithm)
        if is_digest(reference) and digest != reference:
            raise IntegrityError(f"{what}: registry returned content with digest {digest}")
        self._check_header_digest(response, body, what)
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise InputError(f"{what}: manifest is not valid JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise InputError(f"{what}: manifest is not a JSON object")
        media_type = parsed.get("mediaType") or response.headers.get("Content-Type", "")
        media_type = media_type.split(";")[0].strip()
        if media_type not in accept and media_type in mt.ALL_MANIFEST_TYPES:
            raise InputError(f"{what}: got media type {media_type}, asked for {list(accept)}")
        return body, media_type, digest

    def head_manifest(self, repository: str, reference: str) -> dict[str, Any] | None:
        """The manifest's descriptor (mediaType, digest, size) or None when absent."""
        what = f"manifest {repository}:{reference}"
        response = self._request(
            "HEAD",
            f"/v2/{repository}/manifests/{quote(reference, safe=':')}",
            scope=self._scope(repository),
            headers={"Accept": ", ".join(ALL_MANIFEST_TYPES)},
            missing_ok=True,
            what=what,
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        size = response.headers.get("Content-Length")
        if not digest or not is_digest(digest) or not size or not size.isdigit():
            body, media_type, digest = self.get_manifest(repository, reference)
            return {"mediaType": media_type, "digest": digest, "size": len(body)}
        if is_digest(reference) and digest != reference:
            raise IntegrityError(f"{what}: registry answered with digest {digest}")
        return {"mediaType": media_type, "digest": digest, "size": int(size)}

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str:
        """Upload a manifest under a tag or its digest; returns its digest.

        When the manifest has a ``subject`` and the registry does not confirm it
        indexed it (no ``OCI-Subject`` header: no referrers API), the referrers
        tag ``sha256-<hex>`` of the subject is updated, as OCI distribution 1.1
        tells clients to do.
        """
        digest, indexed, parsed = self._put_manifest(repository, reference, body, media_type)
        if not indexed:  # the registry did not index it
            _referrers.index_subject(self, repository, parsed, media_type, digest, len(body))
        return digest

    def put_attachment(
        self, repository: str, reference: str, body: bytes, media_type: str
    ) -> tuple[str, bool]:
        """Upload a manifest, leaving the referrers fallback index to the caller.

        Returns ``(digest, indexed)``: ``indexed`` is True when the registry answered
        ``OCI-Subject`` (its referrers API lists the manifest). pipeline.signing keeps
        the fallback index itself, with a merge that survives concurrent writers.
        """
        digest, indexed, _ = self._put_manifest(repository, reference, body, media_type)
        return digest, indexed

    def _put_manifest(
        self, repository: str, reference: str, body: bytes, media_type: str
    ) -> tuple[str, bool, Any]:
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise InputError(f"manifest for {repository}:{reference} is not JSON: {exc}") from None
        if len(body) > MAX_MANIFEST_BYTES:
            raise InputError(f"manifest for {repository} is larger than 4 MiB")
        algorithm = parse_digest(reference)[0] if is_digest(reference) else "sha256"
        digest = digest_of(body, algorithm)
        if is_digest(reference) and digest != reference:
            raise IntegrityError(f"manifest digest {digest} does not match reference {reference}")
        what = f"put manifest {repository}:{reference}"
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{quote(reference, safe=':')}",
            scope=self._scope(repository, "pull,push"),
            headers={"Content-Type": media_type},
            body=body,
            ok=(201, 200),
            what=what,
        )
        returned = response.headers.get("Docker-Content-Digest")
        if returned and returned.startswith(algorithm + ":") and returned != digest:
            raise IntegrityError(f"{what}: registry stored digest {returned}, we sent {digest}")
        return digest, bool(response.headers.get("OCI-Subject")), parsed

    def delete_manifest(self, repository: str, digest: str) -> None:
        """Delete a manifest by digest (registries may refuse: InputError)."""
        parse_digest(digest)
        self._request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            scope=self._scope(repository, "delete"),
            ok=(202, 200),
            what=f"delete {repository}@{digest}",
        )

    # -- blobs ---------------------------------------------------------------------------
    def blob_exists(self, repository: str, digest: str) -> bool:
        parse_digest(digest)
        response = self._request(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scope=self._scope(repository),
            missing_ok=True,
            what=f"blob {repository}@{digest}",
        )
        return response.status_code == 200

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A blob's bytes, verified against ``digest``."""
        buffer = io.BytesIO()
        self.download_blob(repository, digest, buffer)
        return buffer.getvalue()

    def download_blob(self, repository: str, digest: str, dest_file: BlobSink) -> None:
        """Stream a blob into ``dest_file``; IntegrityError (after writing) when it lies.

        The caller owns ``dest_file`` and must discard it on error: the layout's
        BlobWriter does that, so nothing unverified is ever committed.
        """
        algorithm, expected = parse_digest(digest)
        what = f"blob {repository}@{digest}"
        response = self._request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            scope=self._scope(repository),
            stream=True,
            what=what,
        )
        hasher = hashlib.new(algorithm)
        try:
            for chunk in response.iter_content(_IO_BLOCK):
                hasher.update(chunk)
                dest_file.write(chunk)
                if self.on_bytes is not None:
                    self.on_bytes(len(chunk))
        except requests.RequestException as exc:
            from pipeline.errors import UnreachableError

            self._deadline_passed(what)
            raise UnreachableError(
                f"{what}: download interrupted ({exc.__class__.__name__})"
            ) from None
        finally:
            response.close()
        if self._watch.fired:
            self._deadline_passed(what)
        if hasher.hexdigest() != expected:
            raise IntegrityError(
                f"{what}: registry returned content with digest {algorithm}:{hasher.hexdigest()}"
            )

    #: Upload a blob unless the repository has it (one PUT, PATCH chunks, or a mount);
    #: returns its digest. See :func:`pipeline.oci._upload.push_blob`.
    push_blob = _upload.push_blob

    # -- listings ------------------------------------------------------------------------
    def _paged(self, url: str, key: str, scope: str, what: str) -> Iterator[str]:
        while url:
            response = self._request("GET", url, scope=scope, what=what)
            try:
                items = response.json().get(key) or []
            except (ValueError, AttributeError):
                raise InputError(f"{what}: registry answered non-JSON") from None
            yield from (str(item) for item in items)
            link = response.links.get("next", {}).get("url")
            url = urljoin(self.base_url + "/", link) if link else ""

    def list_tags(self, repository: str) -> list[str]:
        """All tags of ``repository`` (paginated); NotFoundError when it does not exist."""
        return list(
            self._paged(
                f"/v2/{repository}/tags/list",
                "tags",
                self._scope(repository),
                f"tags of {repository}",
            )
        )

    def catalog(self) -> list[str]:
        """All repositories the registry lists (paginated)."""
        return list(self._paged("/v2/_catalog", "repositories", "registry:catalog:*", "catalog"))

    # -- referrers -----------------------------------------------------------------------
    #: Descriptors of the manifests whose ``subject`` is a digest (OCI 1.1 referrers API,
    #: else the ``<alg>-<hex>`` fallback tag). See :func:`pipeline.oci._referrers.referrers`.
    referrers = _referrers.referrers

    # -- helpers -------------------------------------------------------------------------
    def _read_limited(self, response: requests.Response, limit: int, what: str) -> bytes:
        chunks, total = [], 0
        try:
            for chunk in response.iter_content(65536):
                total += len(chunk)
                if total > limit:
                    raise InputError(f"{what}: larger than {limit} bytes, refusing it")
                chunks.append(chunk)
        except requests.RequestException as exc:
            from pipeline.errors import UnreachableError

            self._deadline_passed(what)
            raise UnreachableError(
                f"{what}: download interrupted ({exc.__class__.__name__})"
            ) from None
        finally:
            response.close()
        if self._watch.fired:
            self._deadline_passed(what)
        return b"".join(chunks)

    @staticmethod
    def _check_header_digest(response: requests.Response, body: bytes, what: str) -> None:
        header = response.headers.get("Docker-Content-Digest")
        if not header:
            return
        if not is_digest(header):
            raise IntegrityError(f"{what}: registry sent a malformed digest header")
        actual = digest_of(body, parse_digest(header)[0])
        if header != actual:
            raise IntegrityError(
                f"{what}: content has digest {actual} but the registry claims {header}"
            )




def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "..."


__all__ = ["ALL_MANIFEST_TYPES", "RegistryClient"]
