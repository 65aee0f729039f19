"""Where an image's source came from, as URIs other tools can read: nothing of the builder's disk.

Why a module: the git remote goes into the image (``org.opencontainers.image.source``)
and into SLSA provenance (``resolvedDependencies[].uri``), which verifiers, registries
and scanners read. Both must be RFC 3986 URIs, must never carry the remote's
credentials (``https://x-access-token:...@``), and must never name a path on the
machine that built the image: a remote that is a local path (``/srv/git/model.git``,
``file:///...``) identifies nothing to anyone else, so it is treated as no remote.
What a verifier can always check is the commit (``gitCommit`` digest) and which
directory of that commit was built (the project's path inside the repository).
"""

from __future__ import annotations

import re
from urllib.parse import quote

#: Schemes of remotes that name a repository others can reach.
NETWORK_SCHEMES = frozenset({"https", "http", "ssh", "git", "git+ssh", "ssh+git"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: scp-like syntax: ``[user@]host:path`` (a host part without '/'); ``transport::address``
#: (git's remote helpers, e.g. ``ext::``) and ``host://`` are not.
_SCP = re.compile(r"^(?:[^@/:]+@)?([A-Za-z0-9][A-Za-z0-9.-]*):(?!//)(?!:)(.+)$")


def strip_userinfo(url: str) -> str:
    """The URL without credentials (``https://user:token@host`` -> ``https://host``)."""
    # Up to the *last* '@' of the authority (a password may hold an unescaped '@'),
    # any scheme spelling: nothing of the userinfo may reach a label.
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1", url)


def network_remote(url: str | None) -> str | None:
    """``url`` as a credential-free network URL, or None for a local path or no remote.

    ``git@github.com:org/repo.git`` (scp-like) becomes ``ssh://github.com/org/repo.git``.
    """
    url = (url or "").strip()
    if not url:
        return None
    scheme = _SCHEME.match(url)
    if scheme:
        return strip_userinfo(url) if scheme.group(1).lower() in NETWORK_SCHEMES else None
    scp = _SCP.match(url)
    if scp:
        return f"ssh://{scp.group(1)}/{scp.group(2).lstrip('/')}"
    return None  # a path on this machine


def source_uri(remote: str | None, revision: str, path: str = ".") -> str:
    """The source's URI for provenance: ``git+<remote>@<revision>``, else ``file:<path>``.

    Without a network remote the URI is the project's directory relative to the root of
    the commit (RFC 3986 ``path-rootless``, e.g. ``file:examples/tiny``): with the
    ``gitCommit`` digest beside it that is all a verifier can check, and it says
    nothing about where the builder's checkout was.
    """
    network = network_remote(remote)
    if network:
        return f"git+{quote(network, safe=':/@?#[]!$&()*+,;=%~-._')}@{revision}"
    return "file:" + quote(path or ".", safe="/-._~")


__all__ = ["NETWORK_SCHEMES", "network_remote", "source_uri", "strip_userinfo"]
