"""Settings: one precedence (environment over pipeline.yaml over default), typed sections."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import (
    BuildSettings,
    Pkcs11Settings,
    RegistrySettings,
    load_settings,
)
from pipeline.errors import ConfigError


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_environment_wins_over_the_file_and_the_file_over_the_default(tmp_path: Path) -> None:
    path = _config(tmp_path, "keys:\n  pkcs11: {module: /file.so, token_label: file}\n"
                             "build: {layer_cache: /file/layers}\n")
    settings = load_settings(path, env={})
    assert settings.pkcs11(env={}).module == "/file.so"
    assert settings.pkcs11(env={"PIPELINE_PKCS11_MODULE": "/env.so"}).module == "/env.so"
    assert settings.pkcs11(env={"PIPELINE_PKCS11_MODULE": ""}).module == "/file.so"
    assert settings.build(env={}).layer_cache == Path("/file/layers")
    assert settings.build(env={"PIPELINE_LAYER_CACHE": "/env"}).layer_cache == Path("/env")
    assert BuildSettings.resolve({}, {}).layer_cache == BuildSettings().layer_cache


def test_sections_resolve_against_the_environment_of_the_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(_config(tmp_path, "{}\n"))
    monkeypatch.setenv("PIPELINE_TRIVY_DB", "/db/now")
    assert settings.scan().trivy_db == "/db/now"


def test_secrets_never_come_from_the_file_and_never_show(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PIN never goes in pipeline.yaml"):
        Pkcs11Settings.resolve({"pin": "1234"}, {})
    with pytest.raises(ConfigError, match="registry.password is not allowed"):
        RegistrySettings.resolve({"password": "x"}, {})
    token = Pkcs11Settings.resolve({}, {"PIPELINE_PKCS11_PIN": "s3cret"})
    registry = RegistrySettings.resolve({}, {"PIPELINE_REGISTRY_PASSWORD": "s3cret"})
    keys = load_settings(_config(tmp_path, "{}\n"), env={}).keys(
        env={"PIPELINE_SIGNING_KEY_PASSWORD": "s3cret"})
    assert token.pin == registry.password == keys.signing_key_password == "s3cret"
    assert all("s3cret" not in repr(x) for x in (token, registry, keys))


def test_an_empty_registry_password_is_a_password() -> None:
    conf = RegistrySettings.resolve({}, {"PIPELINE_REGISTRY_USERNAME": "u",
                                         "PIPELINE_REGISTRY_PASSWORD": ""})
    assert (conf.username, conf.password) == ("u", "")


def test_docker_config_directory(tmp_path: Path) -> None:
    conf = RegistrySettings.resolve({}, {"DOCKER_CONFIG": str(tmp_path)})
    assert conf.docker_config == tmp_path / "config.json"


def test_trust_and_keyring(tmp_path: Path) -> None:
    path = _config(tmp_path, "keys: {keyring: ring.json, provider: pkcs11}\n"
                             "trust: {public_keys: [a.pub]}\n")
    settings = load_settings(path, env={})
    keys = settings.keys(env={})
    assert keys.keyring == (tmp_path / "ring.json").resolve()
    assert keys.provider == "pkcs11" and keys.trust == (Path("a.pub"),)
    assert settings.keys(env={"PIPELINE_TRUST": "x.pub:y.pub"}).trust == (
        Path("x.pub"), Path("y.pub"))
    assert load_settings(path, env={"PIPELINE_KEYRING": "/k.json"}).keyring == Path("/k.json")


def test_malformed_sections_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keys.pkcs11"):
        load_settings(_config(tmp_path, "keys: {pkcs11: [1]}\n"), env={})
    with pytest.raises(ConfigError, match="section 'registry'"):
        load_settings(_config(tmp_path, "registry: [1]\n"), env={}).registry(env={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(env={"PIPELINE_CONFIG": str(tmp_path / "missing.yaml")})


def test_only_config_reads_the_environment_for_settings() -> None:
    """``os.environ.get``, ``os.environ[...]``, ``os.getenv`` and ``in os.environ`` appear in
    pipeline/config.py only; copying the environment for a subprocess is not reading it."""
    import ast

    root = Path(__file__).resolve().parents[2] / "pipeline"

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ"
                and isinstance(node.value, ast.Name) and node.value.id == "os")

    readers = []
    for path in sorted(root.rglob("*.py")):
        if path == root / "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            read = (
                (isinstance(node, ast.Attribute) and node.attr in ("get", "getenv")
                 and (is_environ(node.value) or (isinstance(node.value, ast.Name)
                                                 and node.value.id == "os")))
                or (isinstance(node, ast.Subscript) and is_environ(node.value))
                or (isinstance(node, ast.Compare) and any(is_environ(c) for c in node.comparators))
            )
            if read:
                readers.append(f"{path.relative_to(root.parent)}:{node.lineno}")
    assert not readers, readers


def test_release_environments_in_order_with_gates_and_argocd(tmp_path: Path) -> None:
    from pipeline.config import ReleaseSettings

    (tmp_path / "token").write_text("s3cret\n")
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "release:\n"
        "  gitops: {remote: origin, branch: trunk}\n"
        "  argocd: {server: 'https://argocd.example', token_file: token, timeout: 60}\n"
        "  image_policy: policies/image-policy.yaml\n"
        "  environments:\n"
        "    - {name: dev, values: {replicaCount: 1}}\n"
        "    - {name: staging, namespace: ml-staging}\n"
        "    - {name: prod, approval: manual}\n")
    release = load_settings(path, env={}).release(env={})
    assert [e.name for e in release.environments] == ["dev", "staging", "prod"]
    assert release.predecessor("dev") is None and release.predecessor("prod") == "staging"
    assert release.environment("dev").values == {"replicaCount": 1}
    assert release.environment("staging").namespace == "ml-staging"
    assert release.environment("prod").approval == "manual"
    assert (release.remote, release.branch, release.argocd_timeout) == ("origin", "trunk", 60.0)
    assert release.argocd_token == "s3cret" and "s3cret" not in repr(release)
    assert release.image_policy == tmp_path / "policies/image-policy.yaml"
    env = {"PIPELINE_GITOPS_REMOTE": "upstream", "PIPELINE_ARGOCD_TOKEN": "from-env"}
    over = load_settings(path, env=env).release(env=env)
    assert (over.remote, over.argocd_token) == ("upstream", "from-env")
    with pytest.raises(ConfigError, match="unknown environment 'qa' .*dev, staging, prod"):
        release.environment("qa")
    for bad, why in [
        ({"argocd": {"token": "x"}}, "token is not allowed"),
        ({"environments": [{"name": "dev"}, {"name": "dev"}]}, "repeated"),
        ({"environments": [{"name": "dev", "approvals": "manual"}]}, "unknown key"),
        ({"environments": [{"name": "dev", "approval": "yes"}]}, "approval must be"),
        ({"environments": {"dev": {}}}, "must be a list"),
    ]:
        with pytest.raises(ConfigError, match=why):
            ReleaseSettings.resolve(bad, env={})


def test_the_deploy_state_dir_resolves_flag_env_file_default(tmp_path: Path) -> None:
    from pipeline.config import DeploySettings

    settings = load_settings(_config(tmp_path, "deploy: {state_dir: /file/state}\n"), env={})
    assert settings.deploy(env={}).state_dir == Path("/file/state")
    assert settings.deploy(env={"PIPELINE_DEPLOY_STATE": "/env"}).state_dir == Path("/env")
    assert DeploySettings.resolve({}, {}).state_dir == DeploySettings().state_dir
    assert DeploySettings().state_dir.name == "deploy"
