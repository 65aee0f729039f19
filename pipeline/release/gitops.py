"""Release state in a GitOps repository: git is the database.

Each environment has two files: ``environments/<env>/values.yaml``, the secure-runtime
chart values that pin the image digest and the sealed-model digest (what Argo CD's
Application for the environment renders the chart with, so they must pass the chart's
``values.schema.json``), and ``environments/<env>/release.yaml``, the release record:
what (image, model, canary weight, stage, status), when, who, why (a forced promotion's
reason, a roll-back's reasons) and the analysis evidence. Every change is one commit of
both, so ``git log`` is the audit trail, Argo CD syncs whatever the last commit says,
and "the last good release" is a query over history rather than a separate store that
could disagree with it.

Only digest-pinned references are ever written: a tag can move after the analysis
passed, a digest cannot.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline._fileio import write_atomic
from pipeline.errors import ConfigError, ConflictError, InputError, NotFoundError
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

    @property
    def label(self) -> str:
        """``app@sha256:aaaaaaaaaaaa + model@sha256:111111111111``: both halves, always.

        Why both: a release that changes only the model would otherwise read as a
        re-deploy (or a roll-back) of the image that already runs.
        """
        return f"{short(self.image)} + {short(self.model)}"

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
    #: The canary weights of this promotion (so ``--resume`` walks the same ones).
    stages: tuple[int, ...] = field(default_factory=tuple)
    #: Who made the change and when (UTC, ISO 8601): the record says it, not only git.
    who: str = ""
    when: str = ""
    #: The measurements behind this stage's verdict (numbers, thresholds, failures).
    evidence: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    #: ``--force --reason``: why a predecessor environment was skipped.
    forced: str = ""
    #: A manual-approval gate: who approved.
    approved_by: str = ""

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
        for key in ("stages", "who", "when", "evidence", "forced", "approved_by"):
            value = getattr(self, key)
            if value:
                data[key] = list(value) if isinstance(value, tuple) else value
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
                stages=tuple(int(w) for w in data.get("stages") or ()),
                who=str(data.get("who") or ""), when=str(data.get("when") or ""),
                evidence=tuple(dict(e) for e in data.get("evidence") or ()),
                forced=str(data.get("forced") or ""),
                approved_by=str(data.get("approved_by") or ""),
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
    author: str = ""
    date: str = ""


def actor() -> str:
    """Who is acting: the git author when the caller set one, else the login name."""
    from pipeline.config import acting_user

    return acting_user()


def now() -> str:
    """UTC now, to the second, ISO 8601 (the record's ``when``)."""
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def split_reference(ref: str) -> dict[str, str]:
    """``{repository, digest}`` of a pinned reference: the chart's image/model values."""
    parsed = Reference.parse(ref)
    if not parsed.digest:
        raise InputError(f"{ref!r} is not pinned by digest")
    return {"repository": parsed.name, "digest": parsed.digest}


def pin_values(base: Mapping[str, Any], release: Release) -> dict[str, Any]:
    """``base`` chart values with ``image`` and ``model`` pinned to ``release``.

    Everything else in ``base`` (the environment's own values) is kept; the pinned keys
    are exactly those the secure-runtime chart's values.schema.json declares, and a
    ``tag`` is dropped (the chart refuses tags).
    """
    values = copy.deepcopy(dict(base))
    for key, ref in (("image", release.image), ("model", release.model)):
        section = dict(values.get(key) or {})
        section.pop("tag", None)
        section.update(split_reference(ref))
        values[key] = section
    return values


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
        if not (self.path / ".git").exists() and not self._is_bare():
            raise NotFoundError(f"{self.path}: not a git working tree (git init or clone it)")

    def _is_bare(self) -> bool:
        """A bare repository can be read (``history``, ``read``), never committed to."""
        if not self.path.is_dir():
            return False
        done = subprocess.run(["git", "-C", str(self.path), "rev-parse",
                               "--is-bare-repository"], capture_output=True, text=True,
                              timeout=60)
        return done.returncode == 0 and done.stdout.strip() == "true"

    def read(self, rel: str, rev: str = "HEAD") -> str | None:
        """The committed text of ``rel`` at ``rev`` (None when it is not there)."""
        if not self.head():
            return None
        text = self._git("show", f"{rev}:{rel}", check=False)
        return text or None

    def committed_files(self, directory: str, rev: str = "HEAD") -> list[str]:
        """Paths committed below ``directory`` at ``rev`` (what git says, not the disk)."""
        if not self.head():
            return []
        out = self._git("ls-tree", "-r", "--name-only", rev, "--", directory, check=False)
        return sorted(line for line in out.splitlines() if line.strip())

    def log_of(self, rel: str) -> list[tuple[str, str, str, str]]:
        """``(sha, author, date, subject)`` of every commit touching ``rel``, newest first."""
        if not self.head():
            return []
        out = self._git("log", "--format=%H%x1f%an%x1f%aI%x1f%s", "--", rel)
        return [tuple((line.split("\x1f", 3) + ["", "", ""])[:4])  # type: ignore[misc]
                for line in out.splitlines()]

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
        """The release record of ``env``."""
        if not _ENV_RE.match(env):
            raise InputError(f"invalid environment name {env!r} (lowercase letters, digits, -)")
        return f"environments/{env}/release.yaml"

    @classmethod
    def values_relpath(cls, env: str) -> str:
        """The chart values of ``env`` (what Argo CD renders the chart with)."""
        return cls.relpath(env).replace("release.yaml", "values.yaml")

    @property
    def git_dir(self) -> Path:
        return Path(self._git("rev-parse", "--absolute-git-dir").strip())

    def head(self) -> str | None:
        return self._git("rev-parse", "--verify", "-q", "HEAD", check=False).strip() or None

    def values(self, env: str) -> dict[str, Any]:
        """The committed chart values of ``env`` ({} before the first commit of them)."""
        if not self.head():
            return {}
        text = self._git("show", f"HEAD:{self.values_relpath(env)}", check=False)
        data = yaml.safe_load(text) if text else None
        return data if isinstance(data, dict) else {}

    def local_changes(self, *paths: str) -> list[str]:
        """Uncommitted changes (tracked or untracked) below ``paths`` (default: all)."""
        out = self._git("status", "--porcelain", "--untracked-files=all", "--", *paths)
        return [line[3:] for line in out.splitlines() if line.strip()]

    def require_clean(self) -> None:
        """ConflictError when the working tree has local changes: a promotion would
        commit on top of an edit nobody reviewed, or lose it."""
        changed = self.local_changes()
        if changed:
            raise ConflictError(f"{self.path} has local changes ({', '.join(changed[:5])}): "
                                "commit or discard them before promoting")

    def discard(self, env: str) -> list[str]:
        """Undo uncommitted changes to ``env``'s files (a step a crash interrupted)."""
        paths = [self.relpath(env), self.values_relpath(env)]
        changed = self.local_changes(*paths)
        for rel in changed:
            tracked = self._git("ls-files", "--", rel).strip()
            if tracked:
                self._git("checkout", "-q", "HEAD", "--", rel)
            else:
                (self.path / rel).unlink(missing_ok=True)
        return changed

    def write_file(self, rel: str, text: str) -> None:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, text, mode=0o644)

    def commit_files(self, files: Mapping[str, str], message: str) -> str:
        """Write ``files`` (relative path → text) and commit exactly them."""
        for rel, text in files.items():
            self.write_file(rel, text)
        self._git("add", "--", *files)
        self._git("commit", "-q", "--allow-empty", "-m", message, "--", *files)
        return self._git("rev-parse", "HEAD").strip()

    def fetch(self, remote: str, branch: str) -> None:
        """Bring ``branch`` from ``remote`` in and fast-forward to it (ConflictError if the
        histories diverged: someone else promoted meanwhile)."""
        self._git("fetch", "-q", remote, branch)
        if not self.head():
            self._git("checkout", "-q", "-B", branch, "FETCH_HEAD")
            return
        done = subprocess.run(["git", "-C", str(self.path), "merge", "-q", "--ff-only",
                               "FETCH_HEAD"], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ConflictError(f"{self.path} has diverged from {remote}/{branch}: "
                                f"{(done.stderr or done.stdout).strip()[:300]}")

    def has_remote_branch(self, remote: str, branch: str) -> bool:
        """Whether ``remote`` has ``branch`` yet (a new GitOps remote has none)."""
        out = self._git("ls-remote", "--heads", remote, branch, check=False)
        return bool(out.strip())

    def push(self, remote: str, branch: str) -> None:
        """Push HEAD to ``remote``/``branch``; a rejected push is a ConflictError."""
        done = subprocess.run(["git", "-C", str(self.path), "push", "--porcelain", remote,
                               f"HEAD:refs/heads/{branch}"], capture_output=True, text=True,
                              timeout=120)
        if done.returncode == 0:
            return
        text = (done.stderr + done.stdout).strip()
        if "rejected" in text or "non-fast-forward" in text or "fetch first" in text:
            raise ConflictError(f"push to {remote} {branch} was rejected (non-fast-forward: "
                                "someone else pushed first); nothing was overwritten: "
                                "fetch, check what runs, and run again")
        raise ConfigError(f"git push to {remote} failed: {text[:300]}")

    def current(self, env: str) -> ReleaseState | None:
        """The committed state of ``env`` (HEAD), or None before its first release."""
        rel = self.relpath(env)
        if not self._git("rev-parse", "--verify", "-q", "HEAD", check=False).strip():
            return None
        text = self._git("show", f"HEAD:{rel}", check=False)
        return ReleaseState.from_yaml(text, rel) if text else None

    def commit(self, state: ReleaseState, message: str, *,
               base_values: Mapping[str, Any] | None = None) -> str:
        """Write ``state`` and the chart values pinning its release; commit those two.

        The values keep the environment's own settings (``base_values``, else what is
        committed) and pin ``image``/``model`` to ``state``'s release: the candidate
        while progressing, the last good release after a roll-back. Other files of the
        repository are left untouched. ``who``/``when`` are filled in when empty.
        """
        env = state.environment
        state = state.with_(who=state.who or actor(), when=state.when or now())
        base = self.values(env) if base_values is None else base_values
        values = pin_values(base, state.release)
        header = ("# Chart values of helm/secure-runtime for this environment, written by "
                  "`pipeline promote`/`rollback`.\n# image and model are pinned by digest; "
                  "environments/<env>/release.yaml says why.\n")
        return self.commit_files({
            self.values_relpath(env): header + yaml.safe_dump(values, sort_keys=False),
            self.relpath(env): state.to_yaml(),
        }, message)

    def history(self, env: str) -> list[Commit]:
        """Every committed state of ``env``, newest first."""
        rel = self.relpath(env)
        if not self._git("rev-parse", "--verify", "-q", "HEAD", check=False).strip():
            return []
        out = self._git("log", "--format=%H%x1f%an%x1f%aI%x1f%s", "--", rel)
        commits = []
        for line in out.splitlines():
            sha, author, date, subject = (line.split("\x1f", 3) + ["", "", ""])[:4]
            text = self._git("show", f"{sha}:{rel}", check=False)
            if text:
                state = ReleaseState.from_yaml(text, f"{sha[:12]}:{rel}")
                commits.append(Commit(sha, subject, state, author, date))
        return commits

    def promoted(self, env: str, release: Release) -> Commit | None:
        """The commit that promoted ``release`` in ``env``, if it ever was."""
        for entry in self.history(env):
            if entry.state.status == "promoted" and entry.state.release == release:
                return entry
        return None

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


__all__ = ["Commit", "GitOpsRepo", "Release", "ReleaseState", "STATUSES", "actor", "now",
           "pin_values", "pinned", "short", "split_reference"]
