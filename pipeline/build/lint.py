"""Image lint: what a model-serving image must never contain. Findings fail the build.

Why these rules: a shell, a package manager or an SSH binary turns a code-execution bug
into a foothold; setuid/setgid files and world-writable paths are privilege escalation
routes; a root user defeats the read-only, nonroot runtime; secrets in env or labels are
readable by anyone who can pull the image. Lint runs on the merged view of all layers
(OCI whiteouts honoured), from per-layer indexes. Secret *values* are never reported.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.errors import BuildError

SHELLS = frozenset({"sh", "bash", "dash", "ash", "busybox", "zsh", "ksh", "mksh", "csh",
                    "tcsh", "fish", "rbash", "toybox"})
PACKAGE_MANAGERS = re.compile(
    r"^(apt|apt-get|apt-cache|apt-key|apt-config|apt-mark|aptitude|dpkg(-.*)?|rpm|rpmbuild|"
    r"yum|dnf|microdnf|zypper|apk|pacman|pip|pip3(\.\d+)?|easy_install(-.*)?|conda|mamba|"
    r"uv|poetry|npm|gem)$"
)
SSH = frozenset({"ssh", "sshd", "scp", "sftp", "sftp-server", "ssh-agent", "ssh-keygen",
                 "ssh-add", "dropbear", "dropbearkey", "dbclient"})
WRITABLE_OK = frozenset({"tmp", "var/tmp"})
_SITE = re.compile(r"(^|/)(site|dist)-packages/(pip|setuptools/_vendor/pip)$")
_SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|PASSPHRASE|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|"
    r"CREDENTIAL|(^|_)AUTH(_|$)|(^|_)KEY$|(^|_)PWD$)"
)
_POINTER = re.compile(r"_(FILE|PATH|DIR|ID|URL|URI|NAME|REF|ENDPOINT|HEADER|TYPE)$")
_SECRET_VALUES = (
    ("aws-access-key-id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("private-key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("github-token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b")),
    ("slack-token", re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}")),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
)


@dataclass(frozen=True)
class IndexEntry:
    """One path of a layer as the lint sees it: ``kind`` is file, dir or symlink."""

    path: str
    kind: str
    mode: int


@dataclass(frozen=True)
class Finding:
    """One broken rule: ``where`` is a path or a config key, never a secret value."""

    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.where}: {self.message}"


def merge_layers(layers: Sequence[Iterable[IndexEntry]]) -> dict[str, IndexEntry]:
    """The filesystem after applying layers in order (``.wh.`` files delete, opaque dirs clear)."""
    view: dict[str, IndexEntry] = {}
    for layer in layers:
        items = list(layer)
        for entry in items:
            directory, name = posixpath.split(entry.path)
            if name == ".wh..wh..opq":
                prefix = f"{directory}/" if directory else ""
                for path in [p for p in view if p.startswith(prefix) and p != directory]:
                    del view[path]
            elif name.startswith(".wh."):
                gone = posixpath.join(directory, name[4:])
                for path in [p for p in view if p == gone or p.startswith(gone + "/")]:
                    del view[path]
        for entry in items:
            name = posixpath.basename(entry.path)
            if not name.startswith(".wh."):
                view[entry.path] = entry
    return view


def _in_bin_dir(path: str) -> bool:
    return posixpath.basename(posixpath.dirname(path)) in ("bin", "sbin", "libexec")


def lint_filesystem(
    view: Mapping[str, IndexEntry], allowed_shells: frozenset[str] = frozenset()
) -> list[Finding]:
    """Rules on paths and modes of the merged filesystem.

    ``allowed_shells`` names exact paths (no leading ``/``) of a shell an image is built
    to need: only the pipeline's own step image, whose scripts run in bash.
    """
    findings: list[Finding] = []
    for path in sorted(view):
        entry = view[path]
        name = posixpath.basename(path)
        if entry.kind != "dir" and _in_bin_dir(path):
            if name in SHELLS and path in allowed_shells:
                pass
            elif name in SHELLS:
                findings.append(Finding("shell", f"/{path}", "a shell in the image"))
            elif PACKAGE_MANAGERS.match(name):
                findings.append(Finding("package-manager", f"/{path}", "a package manager"))
            elif name in SSH:
                findings.append(Finding("ssh", f"/{path}", "an SSH binary"))
        if entry.kind == "dir" and _SITE.search(path):
            findings.append(Finding("package-manager", f"/{path}", "pip is installed"))
        if entry.kind != "dir" and entry.mode & 0o4000:
            findings.append(Finding("setuid", f"/{path}", "setuid file"))
        if entry.kind != "dir" and entry.mode & 0o2000:
            findings.append(Finding("setgid", f"/{path}", "setgid file"))
        if entry.kind != "symlink" and entry.mode & 0o002 and path not in WRITABLE_OK:
            findings.append(Finding("world-writable", f"/{path}", "writable by every user"))
    return findings


def _secret_findings(name: str, value: str, rule: str, where: str) -> list[Finding]:
    upper = re.sub(r"[^A-Za-z0-9]+", "_", name).upper().strip("_")
    if value and _SECRET_NAME.search(upper) and not _POINTER.search(upper):
        return [Finding(rule, where, "name suggests a secret and a value is set")]
    for kind, pattern in _SECRET_VALUES:
        if pattern.search(value):
            return [Finding(rule, where, f"value looks like a credential ({kind})")]
    return []


def _is_root(user: str) -> bool:
    name = user.split(":", 1)[0].strip()
    return name in ("", "0", "root")


def lint_config(config: Mapping[str, Any]) -> list[Finding]:
    """Rules on the image config: nonroot user, no secrets in env or labels."""
    inner = config.get("config") or {}
    findings: list[Finding] = []
    user = str(inner.get("User") or "")
    if _is_root(user):
        findings.append(Finding("root-user", "config.User", f"runs as root ({user or 'unset'})"))
    for item in inner.get("Env") or []:
        name, _, value = str(item).partition("=")
        findings += _secret_findings(name, value, "secret-in-env", f"Env {name}")
    for name, value in sorted((inner.get("Labels") or {}).items()):
        findings += _secret_findings(str(name), str(value), "secret-in-label", f"Label {name}")
    return findings


def lint_image(
    layers: Sequence[Iterable[IndexEntry]], config: Mapping[str, Any],
    allowed_shells: frozenset[str] = frozenset(),
) -> list[Finding]:
    """Every finding for an image: merged filesystem, then config."""
    return lint_filesystem(merge_layers(layers), allowed_shells) + lint_config(config)


def enforce(findings: Sequence[Finding]) -> None:
    """BuildError (exit 13) listing every finding, when there is any."""
    if findings:
        lines = "\n  ".join(str(f) for f in findings)
        raise BuildError(f"image lint failed ({len(findings)} finding(s)):\n  {lines}")
