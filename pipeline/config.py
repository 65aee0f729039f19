"""Where settings come from: flags, then environment, then ``pipeline.yaml``.

This is the one module of ``pipeline`` that reads ``os.environ`` for settings, and
the one place the precedence is implemented (:func:`_pick`): a flag (the caller's
argument) wins, then the environment variable, then the key in ``pipeline.yaml``,
then the default. Every setting a module needs is a field of a typed section below,
so its variable name, file key and default are written once and listed in one table
(docs/architecture.md, "Settings").

The same resolution serves the CLI and ``secure_runtime.load_sealed`` so that a
model sealed with ``pipeline seal`` opens in the runtime with no extra wiring.

Lookup of the configuration file: ``$PIPELINE_CONFIG``, else ``./pipeline.yaml``,
else ``~/.config/pipeline/pipeline.yaml``. Secrets (PINs, passwords, keys) are never
read from this file's values, only from the environment or from files it names.

Sections are resolved when asked for (``settings.pkcs11()``), against the environment
of that moment, so a long-lived :class:`Settings` never serves a stale variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

__all__ = [
    "DEFAULT_KEYRING",
    "ROOT_DEPLOY_STATE",
    "BuildSettings",
    "DeploySettings",
    "EnvironmentSettings",
    "KeySettings",
    "Pkcs11Settings",
    "RegistrySettings",
    "ReleaseSettings",
    "ScanSettings",
    "Settings",
    "acting_user",
    "load_settings",
    "read_yaml_mapping",
]

DEFAULT_KEYRING = Path("~/.config/pipeline/keyring.json")
_CACHE_ROOT = Path("~/.cache/secure-model-pipeline")
#: The local deploy's state when run as root: pods run as their own uid and must be able
#: to search every directory above their image trees, which /root (0700) forbids.
ROOT_DEPLOY_STATE = Path("/var/lib/secure-model-pipeline/deploy")

Env = Mapping[str, str]


def _env(env: Env | None) -> Env:
    return os.environ if env is None else env


def _pick(env: Env, variable: str | None, section: Mapping[str, Any], key: str | None,
          *, empty_is_set: bool = False) -> Any:
    """Environment over file: the one precedence rule (flags are the caller's)."""
    if variable is not None:
        value = env.get(variable)
        if value is not None and (value or empty_is_set):
            return value
    if key is not None:
        return section.get(key)
    return None


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True)
class Pkcs11Settings:
    """A PKCS#11 token: ``PIPELINE_PKCS11_*`` over ``keys.pkcs11`` in pipeline.yaml.

    The PIN comes from ``PIPELINE_PKCS11_PIN`` or a file (``pin_file``), never from
    pipeline.yaml itself: a ``pin`` key there is a ConfigError.
    """

    module: str | None = None
    token_label: str | None = None
    pin: str | None = field(default=None, repr=False)
    pin_file: Path | None = None

    @classmethod
    def resolve(cls, section: Mapping[str, Any], env: Env | None = None) -> Pkcs11Settings:
        env = _env(env)
        if "pin" in section:
            raise ConfigError(
                "keys.pkcs11.pin is not allowed: a PIN never goes in pipeline.yaml; "
                "use keys.pkcs11.pin_file, PIPELINE_PKCS11_PIN_FILE or PIPELINE_PKCS11_PIN"
            )
        pin_file = _text(_pick(env, "PIPELINE_PKCS11_PIN_FILE", section, "pin_file"))
        return cls(
            module=_text(_pick(env, "PIPELINE_PKCS11_MODULE", section, "module")),
            token_label=_text(_pick(env, "PIPELINE_PKCS11_TOKEN", section, "token_label")),
            pin=_text(_pick(env, "PIPELINE_PKCS11_PIN", {}, None)),
            pin_file=Path(pin_file).expanduser() if pin_file else None,
        )


@dataclass(frozen=True)
class RegistrySettings:
    """Registry credentials: ``PIPELINE_REGISTRY_USERNAME``/``_PASSWORD``, then docker's file.

    ``registry.username`` may sit in pipeline.yaml; the password only in the environment
    (or docker's ``config.json``, ``$DOCKER_CONFIG/config.json``).
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    docker_config: Path = field(default_factory=lambda: Path("~/.docker/config.json").expanduser())

    @classmethod
    def resolve(cls, section: Mapping[str, Any], env: Env | None = None) -> RegistrySettings:
        env = _env(env)
        if "password" in section:
            raise ConfigError("registry.password is not allowed in pipeline.yaml: set "
                              "PIPELINE_REGISTRY_PASSWORD or use docker's config.json")
        docker = _text(_pick(env, "DOCKER_CONFIG", section, "docker_config"))
        return cls(
            username=_text(_pick(env, "PIPELINE_REGISTRY_USERNAME", section, "username")),
            # An empty password is a password (some registries issue them).
            password=_pick(env, "PIPELINE_REGISTRY_PASSWORD", {}, None, empty_is_set=True),
            docker_config=(Path(docker).expanduser() / "config.json" if docker
                           else Path("~/.docker/config.json").expanduser()),
        )


@dataclass(frozen=True)
class ScanSettings:
    """Scanner locations: ``PIPELINE_TRIVY``, ``PIPELINE_TRIVY_DB``, ``_DB_REPOSITORY``.

    The gate policy (severities, allow-lists) is the raw ``scan`` section, parsed by
    :func:`pipeline.scan.gate.parse_policy`.
    """

    trivy: Path | None = None
    trivy_db: str | None = None
    trivy_db_repository: str | None = None

    @classmethod
    def resolve(cls, section: Mapping[str, Any], env: Env | None = None) -> ScanSettings:
        env = _env(env)
        trivy = _text(_pick(env, "PIPELINE_TRIVY", section, "trivy"))
        return cls(
            trivy=Path(trivy) if trivy else None,
            trivy_db=_text(_pick(env, "PIPELINE_TRIVY_DB", section, "trivy_db")),
            trivy_db_repository=_text(
                _pick(env, "PIPELINE_TRIVY_DB_REPOSITORY", section, "trivy_db_repository")
            ),
        )


@dataclass(frozen=True)
class KeySettings:
    """Keys: keyring, default key provider, signing-key password, trusted model signers.

    ``PIPELINE_KEYRING`` over ``keys.keyring`` (relative to pipeline.yaml);
    ``keys.provider``; ``PIPELINE_SIGNING_KEY_PASSWORD`` (environment only);
    ``PIPELINE_TRUST`` (``os.pathsep``-separated PEM paths) over ``trust.public_keys``.
    """

    keyring: Path = field(default_factory=lambda: DEFAULT_KEYRING.expanduser())
    provider: str | None = None
    signing_key_password: str | None = field(default=None, repr=False)
    trust: tuple[Path, ...] = ()


@dataclass(frozen=True)
class BuildSettings:
    """Image builds: ``PIPELINE_BASE_LOCK``, ``PIPELINE_DEB_CACHE``, ``PIPELINE_LAYER_CACHE``,
    ``SOURCE_DATE_EPOCH`` (over ``build.base_lock``, ``build.deb_cache``, ``build.layer_cache``).
    """

    base_lock: Path | None = None
    deb_cache: Path = field(default_factory=lambda: (_CACHE_ROOT / "debs").expanduser())
    layer_cache: Path = field(default_factory=lambda: (_CACHE_ROOT / "layers").expanduser())
    source_date_epoch: str | None = None

    @classmethod
    def resolve(cls, section: Mapping[str, Any], env: Env | None = None) -> BuildSettings:
        env = _env(env)
        lock = _text(_pick(env, "PIPELINE_BASE_LOCK", section, "base_lock"))
        debs = _text(_pick(env, "PIPELINE_DEB_CACHE", section, "deb_cache"))
        layers = _text(_pick(env, "PIPELINE_LAYER_CACHE", section, "layer_cache"))
        defaults = cls()
        return cls(
            base_lock=Path(lock.strip()) if lock and lock.strip() else None,
            deb_cache=Path(debs) if debs else defaults.deb_cache,
            layer_cache=Path(layers) if layers else defaults.layer_cache,
            source_date_epoch=_text(_pick(env, "SOURCE_DATE_EPOCH", {}, None)),
        )


@dataclass(frozen=True)
class DeploySettings:
    """Local deploys: ``PIPELINE_DEPLOY_STATE`` over ``deploy.state_dir``: the one directory
    ``pipeline deploy --local`` writes (image cache by digest, the run's pods and logs)."""

    state_dir: Path = field(default_factory=lambda: ROOT_DEPLOY_STATE if os.geteuid() == 0
                            else (_CACHE_ROOT / "deploy").expanduser())

    @classmethod
    def resolve(cls, section: Mapping[str, Any], env: Env | None = None) -> DeploySettings:
        env = _env(env)
        state = _text(_pick(env, "PIPELINE_DEPLOY_STATE", section, "state_dir"))
        return cls(state_dir=Path(state).expanduser()) if state else cls()


_ENV_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


@dataclass(frozen=True)
class EnvironmentSettings:
    """One environment of ``release.environments`` (the list is the promotion order).

    ``values`` are the secure-runtime chart values of this environment (image and model
    are pinned by ``pipeline promote``); ``approval: manual`` makes a promotion need
    ``--approve``; ``namespace``/``cluster`` are where Argo CD deploys it.
    """

    name: str
    namespace: str
    values: dict[str, Any] = field(default_factory=dict)
    approval: str | None = None
    cluster: str = "https://kubernetes.default.svc"


@dataclass(frozen=True)
class ReleaseSettings:
    """``release`` in pipeline.yaml: environments in order, the chart, the GitOps remote
    and Argo CD. ``PIPELINE_GITOPS_REMOTE`` over ``gitops.remote``,
    ``PIPELINE_ARGOCD_SERVER`` over ``argocd.server``; the Argo CD token only from
    ``PIPELINE_ARGOCD_TOKEN`` or the file ``argocd.token_file`` names (never the file's
    own values)."""

    environments: tuple[EnvironmentSettings, ...] = ()
    chart_repo_url: str | None = None
    chart_path: str = "helm/secure-runtime"
    chart_revision: str = "HEAD"
    gitops_repo_url: str | None = None
    remote: str | None = None
    branch: str = "main"
    argocd_server: str | None = None
    argocd_token: str | None = field(default=None, repr=False)
    argocd_namespace: str = "argocd"
    argocd_project: str = "default"
    argocd_timeout: float = 300.0
    image_policy: Path | None = None
    policies: Path | None = None

    def environment(self, name: str) -> EnvironmentSettings:
        """The environment called ``name``; ConfigError naming the known ones."""
        for env in self.environments:
            if env.name == name:
                return env
        known = ", ".join(e.name for e in self.environments) or "none declared"
        raise ConfigError(f"unknown environment {name!r} (release.environments: {known})")

    def predecessor(self, name: str) -> str | None:
        """The environment before ``name`` in the promotion order (None for the first)."""
        names = [e.name for e in self.environments]
        index = names.index(self.environment(name).name)
        return names[index - 1] if index else None

    @classmethod
    def resolve(cls, section: Mapping[str, Any], env: Env | None = None,
                base: Path | None = None) -> ReleaseSettings:
        import re

        env = _env(env)

        def sub(name: str) -> Mapping[str, Any]:
            value = section.get(name) or {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"release.{name} must be a mapping")
            return value

        chart, gitops, argocd = sub("chart"), sub("gitops"), sub("argocd")
        if "token" in argocd:
            raise ConfigError("release.argocd.token is not allowed in pipeline.yaml: set "
                              "PIPELINE_ARGOCD_TOKEN or release.argocd.token_file")
        raw_envs = section.get("environments") or []
        if not isinstance(raw_envs, list):
            raise ConfigError("release.environments must be a list (the promotion order)")
        envs: list[EnvironmentSettings] = []
        for index, item in enumerate(raw_envs):
            where = f"release.environments[{index}]"
            if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
                raise ConfigError(f"{where}: expected a mapping with a 'name'")
            unknown = sorted(set(item) - {"name", "namespace", "values", "approval", "cluster"})
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {unknown}")
            name = item["name"]
            if not re.match(_ENV_NAME, name) or name in {e.name for e in envs}:
                raise ConfigError(f"{where}: invalid or repeated environment name {name!r}")
            values = item.get("values") or {}
            if not isinstance(values, Mapping):
                raise ConfigError(f"{where}.values must be a mapping (chart values)")
            approval = item.get("approval")
            if approval not in (None, "manual"):
                raise ConfigError(f"{where}.approval must be 'manual' or absent")
            envs.append(EnvironmentSettings(
                name, str(item.get("namespace") or name), dict(values), approval,
                str(item.get("cluster") or "https://kubernetes.default.svc")))
        token = env.get("PIPELINE_ARGOCD_TOKEN") or None
        token_file = _text(argocd.get("token_file"))
        if not token and token_file:
            path = Path(token_file).expanduser()
            if base is not None and not path.is_absolute():
                path = base / path
            try:
                token = path.read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise ConfigError(f"release.argocd.token_file: cannot read {path}: "
                                  f"{exc.strerror}") from None

        def path_of(value: Any) -> Path | None:
            text = _text(value)
            if not text:
                return None
            found = Path(text).expanduser()
            return base / found if base is not None and not found.is_absolute() else found

        try:
            timeout = float(argocd.get("timeout", 300))
        except (TypeError, ValueError):
            raise ConfigError("release.argocd.timeout must be a number of seconds") from None
        return cls(
            environments=tuple(envs),
            chart_repo_url=_text(chart.get("repo_url")),
            chart_path=str(chart.get("path") or "helm/secure-runtime"),
            chart_revision=str(chart.get("target_revision") or "HEAD"),
            gitops_repo_url=_text(gitops.get("repo_url")),
            remote=_text(_pick(env, "PIPELINE_GITOPS_REMOTE", gitops, "remote")),
            branch=str(gitops.get("branch") or "main"),
            argocd_server=_text(_pick(env, "PIPELINE_ARGOCD_SERVER", argocd, "server")),
            argocd_token=token,
            argocd_namespace=str(argocd.get("namespace") or "argocd"),
            argocd_project=str(argocd.get("project") or "default"),
            argocd_timeout=timeout,
            image_policy=path_of(section.get("image_policy")),
            policies=path_of(section.get("policies")),
        )


@dataclass(frozen=True)
class Settings:
    """The parsed configuration file; typed sections resolve against the environment.

    ``keyring`` is resolved at load (a relative ``keys.keyring`` is relative to the
    file); ``raw`` keeps the whole file for capabilities with sections of their own.
    """

    keyring: Path = field(default_factory=lambda: DEFAULT_KEYRING.expanduser())
    raw: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def section(self, name: str) -> dict[str, Any]:
        """One top-level section of pipeline.yaml (empty when absent)."""
        value = self.raw.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.source}: section '{name}' must be a mapping")
        return value

    def _keys_section(self, name: str) -> dict[str, Any]:
        value = self.section("keys").get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.source}: section 'keys.{name}' must be a mapping")
        return dict(value)

    def pkcs11(self, env: Env | None = None) -> Pkcs11Settings:
        """The PKCS#11 token settings (``keys.pkcs11``), environment first."""
        return Pkcs11Settings.resolve(self._keys_section("pkcs11"), env)

    def registry(self, env: Env | None = None) -> RegistrySettings:
        """Registry credentials (``registry``), environment first."""
        return RegistrySettings.resolve(self.section("registry"), env)

    def scan(self, env: Env | None = None) -> ScanSettings:
        """Scanner locations (``scan``), environment first."""
        return ScanSettings.resolve(self.section("scan"), env)

    def build(self, env: Env | None = None) -> BuildSettings:
        """Image-build locations (``build``), environment first."""
        return BuildSettings.resolve(self.section("build"), env)

    def deploy(self, env: Env | None = None) -> DeploySettings:
        """Where local deploys keep their state (``deploy``), environment first."""
        return DeploySettings.resolve(self.section("deploy"), env)

    def release(self, env: Env | None = None) -> ReleaseSettings:
        """Environments, chart, GitOps remote and Argo CD (``release``), environment first."""
        base = self.source.parent if self.source else None
        return ReleaseSettings.resolve(self.section("release"), env, base)

    def keys(self, env: Env | None = None) -> KeySettings:
        """Keyring, key provider, signing-key password and trusted model signers."""
        env = _env(env)
        trust_env = env.get("PIPELINE_TRUST")
        if trust_env:
            trusted = [p for p in trust_env.split(os.pathsep) if p]
        else:
            listed = self.section("trust").get("public_keys") or []
            trusted = [str(k) for k in listed] if isinstance(listed, list) else []
        return KeySettings(
            keyring=self.keyring,
            provider=_text(self.section("keys").get("provider")),
            signing_key_password=_text(_pick(env, "PIPELINE_SIGNING_KEY_PASSWORD", {}, None)),
            trust=tuple(Path(p).expanduser() for p in trusted),
        )


def acting_user(env: Env | None = None) -> str:
    """Who is acting, for release records: ``GIT_AUTHOR_NAME`` when set (CI sets it to
    the person or bot behind the job), else the login name."""
    name = _env(env).get("GIT_AUTHOR_NAME")
    if name:
        return name
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "secure-model-pipeline"


def _config_path(explicit: str | os.PathLike[str] | None, env: Env) -> Path | None:
    candidates = [explicit, env.get("PIPELINE_CONFIG")]
    for candidate in candidates:
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise ConfigError(f"configuration file not found: {path}")
            return path
    for path in (Path("pipeline.yaml"), Path("~/.config/pipeline/pipeline.yaml").expanduser()):
        if path.is_file():
            return path
    return None


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping; ConfigError otherwise."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_settings(
    config: str | os.PathLike[str] | None = None, env: Env | None = None
) -> Settings:
    """Resolve settings from ``config`` (or the default lookup) and the environment."""
    env = _env(env)
    path = _config_path(config, env)
    raw = read_yaml_mapping(path) if path else {}
    keys = raw.get("keys") or {}
    if not isinstance(keys, dict):
        raise ConfigError(f"{path}: section 'keys' must be a mapping")
    from_env = env.get("PIPELINE_KEYRING")
    keyring = from_env or keys.get("keyring")
    keyring_path = Path(keyring).expanduser() if keyring else DEFAULT_KEYRING.expanduser()
    if path and keyring and not from_env and not keyring_path.is_absolute():
        keyring_path = (path.parent / keyring_path).resolve()
    settings = Settings(keyring=keyring_path, raw=raw, source=path)
    settings._keys_section("pkcs11")  # a malformed section fails at load, as it always did
    return settings
