"""Release state in a GitOps repository: git is the database.

Each environment has one file, ``environments/<env>/release.yaml``, that pins what
runs there (image digest, sealed-model digest, canary weight) and how far the rollout
got (stage, status). Every change is one commit, so ``git log`` is the audit trail,
Argo CD syncs whatever the last commit says, and "the last good release" is a query
over history rather than a separate store that could disagree with it.

Only digest-pinned references are ever written: a tag can move after the analysis
passed, a digest cannot.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline._fileio import write_atomic
from pipeline.errors import ConfigError, InputError, NotFoundError
from pipeline.oci.reference import Reference

STATUSES = ("progressing", "promoted", "rolled-back")
_ENV_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "secure-model-pipeline",
    "GIT_AUTHOR_EMAIL": "pipeline@localhost",
    "GIT_COMMITTER_NAME": "secure-model-pipeline",
    "GIT_COMMITTER_EMAIL": "pipeline@localhost",
}


def pinned(text: str, what: str) -> str:
    """The canonical form of a digest-pinned reference; InputError for a tag-only one.

    Why: the analysis vouches for bytes, not for a name; a tag may point elsewhere by
    the time Argo CD syncs.
    """
    ref = Reference.parse(text)
    if not ref.digest:
        raise InputError(f"{what} reference {text!r} is not pinned by digest "
                         "(use REF@sha256:...): tag-only references are refused")
    return str(ref)


@dataclass(frozen=True)
class Release:
    """One image + sealed model pair: what a stage routes traffic to."""

    image: str
    model: str

    def to_dict(self) -> dict[str, str]:
        return {"image": self.image, "model": self.model}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Release:
        if not isinstance(data, dict) or not isinstance(data.get("image"), str) \
                or not isinstance(data.get("model"), str):
            raise ConfigError(f"{where}: expected a mapping with 'image' and 'model'")
        return cls(data["image"], data["model"])


@dataclass(frozen=True)
class ReleaseState:
    """The content of ``release.yaml``.

    ``image``/``model`` is the release this commit is about: the candidate while
    ``progressing``, the new release once ``promoted``, the last good release after a
    roll-back (then ``failed`` names the candidate that was refused). ``weight`` is the
    percentage of traffic sent to ``image``/``model``; the rest goes to ``stable``.
    ``analysis`` is the verdict of this stage (pending, passed, failed, manual) so the
    result of a stage is a change of the file, and so a commit of its own.
    """

    environment: str
    image: str
    model: str
    weight: int
    stage: str
    status: str
    stable: Release | None = None
    failed: Release | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)
    analysis: str = ""

    @property
    def release(self) -> Release:
        return Release(self.image, self.model)

    def to_yaml(self) -> str:
        data: dict[str, Any] = {
            "environment": self.environment,
            "image": self.image,
            "model": self.model,
            "weight": self.weight,
            "stage": self.stage,
            "status": self.status,
            "stable": self.stable.to_dict() if self.stable else None,
            "analysis": self.analysis,
        }
        if self.failed:
            data["failed"] = self.failed.to_dict()
        if self.reasons:
            data["reasons"] = list(self.reasons)
        header = "# Written by `pipeline promote` / `pipeline rollback`; one commit per change.\n"
        return header + yaml.safe_dump(data, sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str, where: str) -> ReleaseState:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping")
        try:
            weight = int(data["weight"])
            status = str(data["status"])
            state = cls(
                environment=str(data["environment"]), image=str(data["image"]),
                model=str(data["model"]), weight=weight, stage=str(data.get("stage", "")),
                status=status,
                stable=Release.from_dict(data["stable"], f"{where}: stable")
                if data.get("stable") else None,
                failed=Release.from_dict(data["failed"], f"{where}: failed")
                if data.get("failed") else None,
                reasons=tuple(str(r) for r in data.get("reasons") or ()),
                analysis=str(data.get("analysis") or ""),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: missing or invalid field: {exc}") from None
        if status not in STATUSES or not 0 <= weight <= 100:
            raise ConfigError(f"{where}: invalid status {status!r} or weight {weight}")
        return state

    def with_(self, **changes: Any) -> ReleaseState:
        return replace(self, **changes)


@dataclass(frozen=True)
class Commit:
    """A commit of the GitOps repository and the state it recorded."""

    sha: str
    message: str
    state: ReleaseState


class GitOpsRepo:
    """A working tree of the GitOps repository (a path or a local clone).

    Commits are made with the caller's git identity when one is configured, else a
    fixed pipeline identity, so commits never fail on a fresh CI machine.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not self.path.exists() and create:
            self.path.mkdir(parents=True)
            self._git("init", "-q")
        if not (self.path / ".git").exists():
            raise NotFoundError(f"{self.path}: not a git working tree (git init or clone it)")

    def _git(self, *args: str, check: bool = True) -> str:
        env = dict(os.environ)
        for key, value in _GIT_IDENTITY.items():
            env.setdefault(key, value)
        try:
            done = subprocess.run(["git", "-C", str(self.path), *args], capture_output=True,
                                  text=True, env=env, timeout=60)
        except FileNotFoundError:
            raise ConfigError("git is not installed") from None
        if check and done.returncode != 0:
            raise ConfigError(f"git {args[0]} failed in {self.path}: "
                              f"{(done.stderr or done.stdout).strip()}")
        return done.stdout

    @staticmethod
    def relpath(env: str) -> str:
        if not _ENV_RE.match(env):
            raise InputError(f"invalid environment name {env!r} (lowercase letters, digits, -)")
        return f"environments/{env}/release.yaml"

    def current(self, env: str) -> ReleaseState | None:
        """The committed state of ``env`` (HEAD), or None before its first release."""
        rel = self.relpath(env)
        if not self._git("rev-parse", "--verify", "-q", "HEAD", check=False).strip():
            return None
        text = self._git("show", f"HEAD:{rel}", check=False)
        return ReleaseState.from_yaml(text, rel) if text else None

    def commit(self, state: ReleaseState, message: str) -> str:
        """Write ``state`` and commit it alone (other files are left untouched)."""
        rel = self.relpath(state.environment)
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, state.to_yaml(), mode=0o644)
        self._git("add", "--", rel)
        self._git("commit", "-q", "--allow-empty", "-m", message, "--", rel)
        return self._git("rev-parse", "HEAD").strip()

    def history(self, env: str) -> list[Commit]:
        """Every committed state of ``env``, newest first."""
        rel = self.relpath(env)
        if not self._git("rev-parse", "--verify", "-q", "HEAD", check=False).strip():
            return []
        out = self._git("log", "--format=%H%x1f%s", "--", rel)
        commits = []
        for line in out.splitlines():
            sha, _, subject = line.partition("\x1f")
            text = self._git("show", f"{sha}:{rel}", check=False)
            if text:
                state = ReleaseState.from_yaml(text, f"{sha[:12]}:{rel}")
                commits.append(Commit(sha, subject, state))
        return commits

    def last_promoted(self, env: str, *, exclude: Release | None = None) -> Commit | None:
        """The newest commit whose status is ``promoted`` (and not ``exclude``), if any."""
        for entry in self.history(env):
            if entry.state.status == "promoted" and entry.state.release != exclude:
                return entry
        return None


def short(ref: str) -> str:
    """``name@sha256:abcdef123456`` for commit messages (full digests stay in the file)."""
    name, _, digest = ref.partition("@")
    algo, _, hexpart = digest.partition(":")
    return f"{name.rsplit('/', 1)[-1]}@{algo}:{hexpart[:12]}"


__all__ = ["Commit", "GitOpsRepo", "Release", "ReleaseState", "STATUSES", "pinned", "short"]
