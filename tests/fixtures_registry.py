"""Real OCI registries for tests: the Debian ``docker-registry`` (distribution 2.8).

* ``registry`` (session): plain HTTP, anonymous, on 127.0.0.1:<free port>.
* ``tls_registry`` (session): HTTPS with a CA generated here, htpasswd (bcrypt)
  Basic auth; the CA path and the credentials are on the returned object.
* ``flaky_proxy`` (function): a small threaded HTTP proxy in front of
  ``registry`` that can answer 503, drop connections, or alter response bodies,
  to exercise retries, "registry down mid-push" and digest verification.
* ``image_layout`` (function): a factory writing a small but real OCI image
  (gzip tar layers, config, manifest) into an OCI layout.

Nothing here is mocked: the registry is the real binary, started from a
generated config.yml with its own storage directory, and killed at the end.
"""

from __future__ import annotations

import datetime
import gzip
import http.client
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline._process import stop_process
from pipeline.errors import UnreachableError
from pipeline.oci.local_registry import start_local_registry

TEST_USER = "pipeline-test"




@dataclass
class RegistryServer:
    """A running registry: ``host`` is ``127.0.0.1:PORT`` (use it in references)."""

    host: str
    url: str
    storage: Path
    process: subprocess.Popen[bytes] | None = None
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def client(self, **options: object):  # -> RegistryClient
        from pipeline.oci.client import RegistryClient

        defaults: dict[str, object] = {"retries": 1, "backoff": 0.01}
        if self.ca_file:
            defaults.update(
                ca_file=str(self.ca_file), username=self.username, password=self.password
            )
        else:
            defaults["insecure"] = True
        defaults.update(options)
        return RegistryClient(self.host, **defaults)  # type: ignore[arg-type]

    def ref(self, repository: str, tag: str = "latest") -> str:
        return f"{self.host}/{repository}:{tag}"

    def drop_tag(self, repository: str, tag: str) -> None:
        """Remove a tag the way a retention job does: from the registry's own storage
        (distribution 2.8 has no tag DELETE; the manifest itself stays)."""
        import shutil

        path = self.storage / "docker/registry/v2/repositories" / repository / "_manifests/tags"
        shutil.rmtree(path / tag)

    def cosign_layout_only(self, repository: str, digest: str) -> None:
        """Leave only cosign's ``.sig``/``.att`` tags for ``digest``: drop its discovery tags
        and referrers fallback index, so a test can tamper with the one remaining copy."""
        tags = self.storage / "docker/registry/v2/repositories" / repository / "_manifests/tags"
        prefix = digest.replace(":", "-")
        for path in tags.iterdir():
            name = path.name
            if name == prefix or name.startswith((prefix + ".sig.", prefix + ".att.")):
                self.drop_tag(repository, name)


def _write_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pipeline test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return ca_path, cert_path, key_path


def start_registry(
    directory: Path,
    *,
    tls: bool = False,
    htpasswd: tuple[str, str] | None = None,
    extra_config: dict | None = None,
) -> RegistryServer:
    """Start docker-registry (pipeline.oci.local_registry) with TLS/auth as asked."""
    directory.mkdir(parents=True, exist_ok=True)
    config: dict = {"http": {}}
    ca_file: Path | None = None
    username = password = None
    if tls:
        ca_file, cert, key = _write_certificates(directory)
        config["http"]["tls"] = {"certificate": str(cert), "key": str(key)}
    if htpasswd:
        username, password = htpasswd
        line = subprocess.run(
            ["htpasswd", "-Bbn", username, password], check=True, capture_output=True, text=True
        ).stdout.strip()
        (directory / "htpasswd").write_text(line + "\n")
        config["auth"] = {
            "htpasswd": {"realm": "pipeline-test", "path": str(directory / "htpasswd")}
        }
    config.update(extra_config or {})
    try:
        local = start_local_registry(
            directory,
            config=config,
            scheme="https" if tls else "http",
            verify=str(ca_file) if ca_file else True,
        )
    except UnreachableError as exc:
        raise RuntimeError(str(exc)) from None
    return RegistryServer(
        host=local.host, url=local.url, storage=local.storage, process=local.process,
        ca_file=ca_file, username=username, password=password,
    )


def stop_registry(server: RegistryServer) -> None:
    stop_process(server.process)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A plain-HTTP anonymous registry on 127.0.0.1."""
    server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    stop_registry(server)


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """An HTTPS registry (CA generated here) with htpasswd Basic auth."""
    password = os.urandom(12).hex()
    server = start_registry(
        tmp_path_factory.mktemp("tls-registry"), tls=True, htpasswd=(TEST_USER, password)
    )
    yield server
    stop_registry(server)


# -- bearer-token registry -------------------------------------------------------------
def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """A token server for distribution's token auth: checks Basic creds, signs an ES256 JWT.

    The registry verifies the JWT against ``root.pem`` itself; this only issues
    tokens (for every scope asked, to the one known user), as an auth server would.
    """

    def __init__(self, directory: Path, username: str, password: str, service: str):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pipeline test token signer")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.root = directory / "token-root.pem"
        self.root.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = (
            __import__("base64").b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        )
        self.username, self.password, self.service = username, password, service
        self.issuer = "pipeline-test-issuer"
        self.requests: list[list[str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]}
        claims = {
            "iss": self.issuer,
            "sub": self.username,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                import base64
                from urllib.parse import parse_qs, urlsplit

                expected = (
                    "Basic "
                    + base64.b64encode(f"{service.username}:{service.password}".encode()).decode()
                )
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                query = parse_qs(urlsplit(self.path).query)
                scopes = query.get("scope", [])
                service.requests.append(scopes)
                body = json.dumps({"token": service.token(scopes), "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """An HTTPS registry using the bearer-token flow (``.token_service`` issues the JWTs)."""
    directory = tmp_path_factory.mktemp("token-registry")
    password = os.urandom(12).hex()
    tokens = TokenService(directory, TEST_USER, password, service="pipeline-test-registry")
    server = start_registry(
        directory,
        tls=True,
        extra_config={
            "auth": {
                "token": {
                    "realm": tokens.realm,
                    "service": tokens.service,
                    "issuer": tokens.issuer,
                    "rootcertbundle": str(tokens.root),
                }
            }
        },
    )
    server.username, server.password = TEST_USER, password
    server.token_service = tokens  # type: ignore[attr-defined]
    yield server
    stop_registry(server)
    tokens.close()


# -- flaky proxy -----------------------------------------------------------------------
@dataclass
class FlakyProxy:
    """An HTTP proxy to a registry that misbehaves on demand (thread-safe counters).

    ``fail_first``: answer 503 to that many requests, then forward.
    ``drop``: predicate(method, path, count) -> True to close the connection unanswered.
    ``tamper``: function(method, path, body) -> new body for responses.
    ``log``: (method, path, status) of every request seen.
    ``rewrite_digest``: after ``tamper``, send a Docker-Content-Digest that matches the
    altered body (a registry that serves bad content consistently, not a corrupted hop).
    ``reject``: predicate(method, path) -> True to refuse the request with HTTP 400
    ``TAG_INVALID`` (a registry whose tag rules refuse a name: immutability, patterns).
    """

    upstream: RegistryServer
    host: str = ""
    fail_first: int = 0
    drop: Callable[[str, str, int], bool] | None = None
    tamper: Callable[[str, str, bytes], bytes] | None = None
    rewrite_digest: bool = False
    reject: Callable[[str, str], bool] | None = None
    #: Paginate ``tags/list`` as distribution 3, GHCR and Harbor do (``n``, ``last``, a
    #: ``Link`` header): the Debian distribution 2.8 ignores ``n`` and sends every tag.
    #: ``paginate`` caps a page; ``link_loop`` sends a Link back to the same page.
    paginate: int = 0
    link_loop: bool = False
    #: Serve the OCI 1.1 referrers API in front of distribution 2.8 (which has none): a
    #: manifest PUT with a ``subject`` is recorded and answered with ``OCI-Subject``, and
    #: ``GET /v2/<name>/referrers/<digest>`` lists what was recorded, as distribution 3,
    #: Harbor and Zot do. A stand-in named as such, not a real registry's API.
    referrers_api: bool = False
    _referrers: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    log: list[tuple[str, str, int]] = field(default_factory=list)
    _count: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def client(self, **options: object):
        from pipeline.oci.client import RegistryClient

        defaults: dict[str, object] = {"insecure": True, "retries": 3, "backoff": 0.01}
        defaults.update(options)
        return RegistryClient(self.host, **defaults)  # type: ignore[arg-type]

    def _next(self) -> int:
        with self._lock:
            self._count += 1
            return self._count


def _paginate(proxy: FlakyProxy, path: str, data: bytes) -> tuple[bytes, str | None]:
    """One page of a tags/list answer, the way distribution 3 pages it (sorted, n, last)."""
    from urllib.parse import parse_qs, urlencode, urlsplit

    parts = urlsplit(path)
    if proxy.link_loop:
        return data, f'<{path}>; rel="next"'
    query = parse_qs(parts.query)
    body = json.loads(data)
    tags = sorted(body.get("tags") or [])
    last = query.get("last", [""])[0]
    size = min(int(query.get("n", [proxy.paginate])[0]), proxy.paginate)
    rest = [t for t in tags if t > last]
    page, more = rest[:size], rest[size:]
    body["tags"] = page
    link = None
    if more:
        link = f'<{parts.path}?{urlencode({"last": page[-1], "n": size})}>; rel="next"'
    return json.dumps(body).encode(), link


def _make_handler(proxy: FlakyProxy) -> type[BaseHTTPRequestHandler]:
    upstream_port = int(proxy.upstream.host.rsplit(":", 1)[1])

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = io.BytesIO()
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return out.getvalue()
                    out.write(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            count = proxy._next()
            body = self._read_body()
            method, path = self.command, self.path
            if proxy.drop and proxy.drop(method, path, count):
                proxy.log.append((method, path, -1))
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if proxy.referrers_api and method == "GET" and "/referrers/sha256:" in path:
                self._referrers_answer(path)
                return
            if proxy.reject and proxy.reject(method, path):
                proxy.log.append((method, path, 400))
                refusal = json.dumps({"errors": [{"code": "TAG_INVALID",
                                                  "message": "tag refused by policy"}]}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(refusal)))
                self.end_headers()
                self.wfile.write(refusal)
                return
            if count <= proxy.fail_first:
                proxy.log.append((method, path, 503))
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("transfer-encoding", "connection", "content-length")
            }
            headers["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            conn.close()
            headers_out = response.getheaders()
            if proxy.tamper and method != "HEAD":
                original = data
                data = proxy.tamper(method, path, data)
                if proxy.rewrite_digest and data != original:
                    import hashlib

                    fixed = "sha256:" + hashlib.sha256(data).hexdigest()
                    headers_out = [
                        (k, fixed if k.lower() == "docker-content-digest" else v)
                        for k, v in headers_out
                    ]
            subject_header = None
            if proxy.referrers_api and method == "PUT" and "/manifests/" in path \
                    and response.status in (200, 201):
                subject_header = self._record_referrer(path, body, headers_out)
            if subject_header:
                headers_out = [*headers_out, ("OCI-Subject", subject_header)]
            if (proxy.paginate or proxy.link_loop) and method == "GET" and "/tags/list" in path:
                data, link = _paginate(proxy, path, data)
                if link:
                    headers_out = [*headers_out, ("Link", link)]
            proxy.log.append((method, path, response.status))
            self.send_response(response.status)
            for key, value in headers_out:
                if key.lower() in (
                    "transfer-encoding",
                    "connection",
                    "content-length",
                    "date",
                    "server",
                ):
                    continue
                self.send_header(key, value)
            if method == "HEAD":
                self.send_header("Content-Length", response.getheader("Content-Length", "0"))
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        def _record_referrer(self, path: str, body: bytes, headers: list) -> str | None:
            import hashlib

            try:
                manifest = json.loads(body)
            except ValueError:
                return None
            subject = manifest.get("subject") if isinstance(manifest, dict) else None
            if not isinstance(subject, dict):
                return None
            name = path.split("/v2/", 1)[1].split("/manifests/", 1)[0]
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            descriptor = {"mediaType": manifest.get("mediaType"), "digest": digest,
                          "size": len(body)}
            if manifest.get("artifactType"):
                descriptor["artifactType"] = manifest["artifactType"]
            if manifest.get("annotations"):
                descriptor["annotations"] = manifest["annotations"]
            with proxy._lock:
                listed = proxy._referrers.setdefault((name, subject["digest"]), [])
                if all(d["digest"] != digest for d in listed):
                    listed.append(descriptor)
            return str(subject["digest"])

        def _referrers_answer(self, path: str) -> None:
            from urllib.parse import parse_qs, urlsplit

            parts = urlsplit(path)
            name, _, digest = parts.path.split("/v2/", 1)[1].rpartition("/referrers/")
            wanted = parse_qs(parts.query).get("artifactType", [None])[0]
            with proxy._lock:
                listed = list(proxy._referrers.get((name, digest), []))
            if wanted:
                listed = [d for d in listed if d.get("artifactType") == wanted]
            data = json.dumps({"schemaVersion": 2,
                               "mediaType": "application/vnd.oci.image.index.v1+json",
                               "manifests": listed}).encode()
            proxy.log.append(("GET", path, 200))
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.index.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    return Handler


@pytest.fixture
def flaky_proxy(registry: RegistryServer) -> Iterator[FlakyProxy]:
    """A misbehaving proxy in front of ``registry`` (configure its fields in the test)."""
    proxy = FlakyProxy(upstream=registry)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(proxy))
    server.daemon_threads = True
    proxy._server = server
    proxy.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield proxy
    server.shutdown()
    server.server_close()


# -- a small real image ----------------------------------------------------------------
def _tar_gz(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A reproducible gzip tar layer and its diff_id (sha256 of the uncompressed tar)."""
    import hashlib

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    tar_bytes = raw.getvalue()
    compressed = gzip.compress(tar_bytes, mtime=0)
    return compressed, "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def write_image(
    layout_dir: Path, *, tag: str | None = "v1", layers: list[dict[str, bytes]] | None = None
):
    """Write a small linux/amd64 OCI image into a layout; returns (layout, manifest digest)."""
    from pipeline.oci import media_types as mt
    from pipeline.oci.layout import OCILayout

    layout = OCILayout.create(layout_dir)
    layers = layers if layers is not None else [{"hello.txt": b"hello from the pipeline\n"}]
    layer_descriptors, diff_ids = [], []
    for files in layers:
        blob, diff_id = _tar_gz(files)
        layer_descriptors.append(layout.write_blob(blob, mt.OCI_LAYER_GZIP))
        diff_ids.append(diff_id)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
        sort_keys=True,
    ).encode()
    config_descriptor = layout.write_blob(config, mt.OCI_CONFIG)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": config_descriptor,
            "layers": layer_descriptors,
        },
        sort_keys=True,
    ).encode()
    digest = layout.add_manifest(manifest, mt.OCI_MANIFEST, tag=tag)
    return layout, digest


@pytest.fixture
def image_layout(tmp_path: Path) -> Callable[..., tuple[object, str]]:
    """Factory: ``image_layout(name="img", tag="v1", layers=[{path: bytes}])``."""

    def make(name: str = "img", **kwargs: object):
        return write_image(tmp_path / name, **kwargs)  # type: ignore[arg-type]

    return make


__all__ = [
    "FlakyProxy",
    "RegistryServer",
    "flaky_proxy",
    "image_layout",
    "registry",
    "start_registry",
    "stop_registry",
    "tls_registry",
    "token_registry",
    "write_image",
]
