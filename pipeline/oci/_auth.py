"""Registry authentication: anonymous, HTTP Basic, and the Docker/OCI bearer-token flow.

Flow (distribution "token authentication specification"): a request answered
``401`` with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...`` makes
us GET a token from ``realm`` (with Basic credentials when we have them) and
retry once with ``Authorization: Bearer <token>``. A ``Basic`` challenge is
answered with the credentials, or refused when there are none.

Credentials come from arguments, then ``PIPELINE_REGISTRY_USERNAME`` /
``PIPELINE_REGISTRY_PASSWORD``, then a docker ``config.json`` ``auths`` entry.
They are never logged, never put in an exception message, and never sent in
clear text except to a loopback address.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests

from pipeline.errors import AuthError, ConfigError
from pipeline.oci.registry import Credentials

if TYPE_CHECKING:
    from pipeline.oci.deadline import Deadline

ENV_USERNAME = "PIPELINE_REGISTRY_USERNAME"
ENV_PASSWORD = "PIPELINE_REGISTRY_PASSWORD"
_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback IPs (where plain HTTP cannot be intercepted)."""
    host = host.strip("[]").lower()
    # Not "*.localhost": whether such a name is loopback is up to the resolver (glibc
    # without nss-myhostname asks DNS), so plain HTTP could leave the machine.
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """Parse ``WWW-Authenticate`` into ``[(scheme, params)]`` (scheme lower-cased)."""
    challenges: list[tuple[str, dict[str, str]]] = []
    text = header.strip()
    while text:
        match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", text)
        if not match:
            break
        scheme = match.group(1).lower()
        text = text[match.end() :]
        params: dict[str, str] = {}
        while True:
            pm = _PARAM_RE.match(text)
            if not pm:
                break
            value = pm.group(2) if pm.group(2) is not None else pm.group(3)
            params[pm.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            text = text[pm.end() :].lstrip()
            if text.startswith(","):
                text = text[1:].lstrip()
                # a comma may also separate challenges: stop when the next token is a scheme
                if re.match(r"[A-Za-z][A-Za-z0-9_-]*\s+[A-Za-z]", text) or not _PARAM_RE.match(
                    text
                ):
                    break
            else:
                break
        challenges.append((scheme, params))
    return challenges


def _docker_config_credentials(registry: str, path: Path) -> Credentials | None:
    if not path.is_file():
        return None
    try:
        auths = json.loads(path.read_text(encoding="utf-8")).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        raise ConfigError(f"{path}: not a valid docker config.json") from None
    keys = {registry, f"https://{registry}", f"http://{registry}"}
    if registry == "docker.io":
        keys |= {"https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"}
    for key, entry in auths.items():
        if key.rstrip("/") not in keys and key not in keys:
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise ConfigError(f"{path}: auth entry for {key} is not base64 user:pass") from None
            return Credentials(user, password)
        if entry.get("username") and entry.get("password"):
            return Credentials(entry["username"], entry["password"])
    return None


def resolve_credentials(
    registry: str, username: str | None = None, password: str | None = None
) -> Credentials | None:
    """Credentials from arguments, then settings (environment), then docker config.json."""
    if username is not None or password is not None:
        if not username or password is None:
            raise ConfigError("registry credentials need both a username and a password")
        return Credentials(username, password)
    from pipeline.config import load_settings

    configured = load_settings().registry()
    if configured.username or configured.password:
        if not configured.username or configured.password is None:
            raise ConfigError(f"set both {ENV_USERNAME} and {ENV_PASSWORD}")
        return Credentials(configured.username, configured.password)
    return _docker_config_credentials(registry, configured.docker_config)


class Authenticator:
    """Answers challenges and remembers what worked, per requested scope."""

    def __init__(
        self,
        session: requests.Session,
        credentials: Credentials | None,
        *,
        base_url: str,
        verify: bool | str,
        timeout: float | Callable[[], float],
        deadline: Deadline | None = None,
    ):
        self._session = session
        self._credentials = credentials
        self._base_url = base_url
        self._verify = verify
        self._timeout = timeout
        self._deadline = deadline
        self._basic = False
        self._tokens: dict[str, str] = {}

    def header(self, scope: str) -> str | None:
        """The Authorization header to send for ``scope`` (None: try anonymous)."""
        if scope in self._tokens:
            return f"Bearer {self._tokens[scope]}"
        if self._basic and self._credentials:
            return self._credentials.basic_header()
        return None

    def answer(self, response: requests.Response, scope: str) -> bool:
        """Handle a 401; True when a retry with new credentials makes sense."""
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        for scheme, params in challenges:
            if scheme == "bearer" and params.get("realm"):
                self._tokens[scope] = self._fetch_token(params, scope)
                return True
        for scheme, _ in challenges:
            if scheme == "basic":
                if not self._credentials:
                    raise AuthError("registry requires credentials and none were given")
                if self._basic:
                    return False  # credentials already sent and refused
                self._check_clear_text(self._base_url)
                self._basic = True
                return True
        return False

    def forget(self, scope: str) -> None:
        self._tokens.pop(scope, None)

    def _check_clear_text(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" and not is_loopback_host(parts.hostname or ""):
            raise AuthError(f"refusing to send credentials over plain HTTP to {parts.hostname}")

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        realm = params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("https", "http"):
            raise AuthError(f"token realm {realm!r} is not an HTTP(S) URL")
        scopes = {s for s in f"{params.get('scope', '')} {scope}".split() if s}
        query: list[tuple[str, str]] = [("scope", s) for s in sorted(scopes)]
        if params.get("service"):
            query.insert(0, ("service", params["service"]))
        headers = {}
        if self._credentials:
            self._check_clear_text(realm)
            headers["Authorization"] = self._credentials.basic_header()
        # The token fetch spends the same deadline as the registry requests around it.
        timeout = self._timeout() if callable(self._timeout) else self._timeout
        try:
            response = self._session.get(
                realm, params=query, headers=headers, timeout=timeout, verify=self._verify
            )
        except requests.RequestException as exc:
            if self._deadline is not None and self._deadline.expired:
                raise self._deadline.error(
                    f"token service {parts.hostname}", f"token for {scope}"
                ) from None
            raise AuthError(
                f"token service {parts.hostname} unreachable: {exc.__class__.__name__}"
            ) from None
        if response.status_code in (401, 403):
            raise AuthError(
                f"token service {parts.hostname} refused the credentials "
                f"(HTTP {response.status_code})"
            )
        if response.status_code != 200:
            raise AuthError(f"token service {parts.hostname} answered HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise AuthError(f"token service {parts.hostname} answered non-JSON") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"token service {parts.hostname} answered without a token")
        return token
