"""The ``local`` key provider against real files: wrap/unwrap, tamper, permissions."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.cli import run
from pipeline.config import Settings
from pipeline.errors import (
    EXIT_CONFIG,
    EXIT_INSECURE,
    EXIT_KEY,
    ConfigError,
    InsecureKeyStoreError,
    KeyProviderError,
)
from pipeline.sealing.keys import KeyProvider, get_provider, resolve_key_id
from pipeline.sealing.keys.local import LocalKeyProvider

KEY_ID_RE = re.compile(r"^local:[A-Za-z0-9._-]+:[0-9a-f]{16}$")


@pytest.fixture
def keyring(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyring.json"


@pytest.fixture
def provider(keyring: Path) -> LocalKeyProvider:
    return LocalKeyProvider(keyring)


@pytest.fixture
def cli_env(keyring: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray ./pipeline.yaml
    monkeypatch.delenv("PIPELINE_CONFIG", raising=False)
    monkeypatch.setenv("PIPELINE_KEYRING", str(keyring))
    return keyring


def _materials(keyring: Path) -> list[bytes]:
    document = json.loads(keyring.read_text())
    return [base64.b64decode(entry["material"]) for entry in document["keys"]]


# -- create / list --------------------------------------------------------------------


def test_create_makes_private_keyring_and_lists_without_secrets(
    provider: LocalKeyProvider, keyring: Path
) -> None:
    key_id = provider.create_key("prod-kek")
    assert KEY_ID_RE.match(key_id)
    assert key_id.startswith("local:prod-kek:")
    assert oct(keyring.stat().st_mode & 0o777) == "0o600"
    assert oct(keyring.parent.stat().st_mode & 0o777) == "0o700"
    listed = provider.list_keys()
    assert [k["key_id"] for k in listed] == [key_id]
    assert set(listed[0]) == {"key_id", "name", "created"}
    assert listed[0]["name"] == "prod-kek"
    (material,) = _materials(keyring)
    assert len(material) == 32
    assert base64.b64encode(material).decode() not in json.dumps(listed)


def test_key_ids_are_distinct_and_stable(provider: LocalKeyProvider) -> None:
    first = provider.create_key("a")
    second = provider.create_key("b")
    assert first != second
    assert first.split(":")[2] != second.split(":")[2]
    assert [k["key_id"] for k in provider.list_keys()] == [first, second]
    assert [k["key_id"] for k in provider.list_keys()] == [first, second]


def test_duplicate_name_is_refused(provider: LocalKeyProvider, keyring: Path) -> None:
    provider.create_key("dup")
    before = keyring.read_bytes()
    with pytest.raises(KeyProviderError, match="already exists"):
        provider.create_key("dup")
    assert keyring.read_bytes() == before


@pytest.mark.parametrize("name", ["", "a:b", "../x", "-lead", "a b", "x" * 65, "é"])
def test_invalid_names_are_refused(provider: LocalKeyProvider, name: str) -> None:
    with pytest.raises(KeyProviderError, match="invalid key name"):
        provider.create_key(name)


def test_empty_keyring_lists_nothing(provider: LocalKeyProvider, keyring: Path) -> None:
    assert provider.list_keys() == []
    assert not keyring.exists()


# -- wrap / unwrap ----------------------------------------------------------------------


def test_wrap_unwrap_round_trip(provider: LocalKeyProvider) -> None:
    key_id = provider.create_key("kek")
    data_key = os.urandom(32)
    wrapped = provider.wrap(key_id, data_key)
    assert data_key not in wrapped
    unwrapped = provider.unwrap(key_id, wrapped)
    assert isinstance(unwrapped, bytearray)
    assert unwrapped == data_key
    # a fresh nonce each time: wrapping twice never repeats
    assert provider.wrap(key_id, bytearray(data_key)) != wrapped


def test_provider_satisfies_protocol(keyring: Path) -> None:
    provider = get_provider("local", Settings(keyring=keyring))
    assert isinstance(provider, KeyProvider)
    assert provider.name == "local"
    assert provider.wrap_algorithm == "A256GCM"


def test_unknown_provider_name_is_a_config_error(keyring: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key provider 'vault-nope'"):
        get_provider("vault-nope", Settings(keyring=keyring))


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_only_256_bit_data_keys_are_wrapped(provider: LocalKeyProvider, size: int) -> None:
    key_id = provider.create_key("kek")
    with pytest.raises(KeyProviderError, match="32 bytes"):
        provider.wrap(key_id, os.urandom(size))


def test_unknown_key_id(provider: LocalKeyProvider) -> None:
    with pytest.raises(KeyProviderError, match="keyring .* does not exist"):
        provider.wrap("local:nope:0000000000000000", os.urandom(32))
    key_id = provider.create_key("kek")
    wrapped = provider.wrap(key_id, os.urandom(32))
    with pytest.raises(KeyProviderError, match="unknown key id 'local:nope:0000000000000000'"):
        provider.unwrap("local:nope:0000000000000000", wrapped)


def test_wrong_key_cannot_unwrap(provider: LocalKeyProvider) -> None:
    one = provider.create_key("one")
    two = provider.create_key("two")
    wrapped = provider.wrap(one, os.urandom(32))
    with pytest.raises(KeyProviderError, match="wrong key, or the wrapped key was tampered"):
        provider.unwrap(two, wrapped)


def test_wrap_is_bound_to_its_key_id(provider: LocalKeyProvider, keyring: Path) -> None:
    """Same KEK material under a second id: the AAD still refuses the replay."""
    original = provider.create_key("orig")
    document = json.loads(keyring.read_text())
    clone = dict(document["keys"][0], key_id="local:clone:0123456789abcdef", name="clone")
    document["keys"].append(clone)
    keyring.write_text(json.dumps(document))
    data_key = os.urandom(32)
    wrapped = provider.wrap(original, data_key)
    assert provider.unwrap(original, wrapped) == data_key
    with pytest.raises(KeyProviderError, match="wrong key, or the wrapped key was tampered"):
        provider.unwrap("local:clone:0123456789abcdef", wrapped)


def test_every_tampered_byte_is_detected(provider: LocalKeyProvider) -> None:
    key_id = provider.create_key("kek")
    wrapped = provider.wrap(key_id, os.urandom(32))
    for index in range(len(wrapped)):
        tampered = bytearray(wrapped)
        tampered[index] ^= 0x01
        with pytest.raises(KeyProviderError):
            provider.unwrap(key_id, bytes(tampered))
    for bad in (wrapped[:-1], wrapped + b"\x00", b"", b"\x02" + wrapped[1:]):
        with pytest.raises(KeyProviderError):
            provider.unwrap(key_id, bad)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=120))
def test_arbitrary_wrapped_bytes_never_unwrap(provider: LocalKeyProvider, garbage: bytes) -> None:
    if not provider.list_keys():
        provider.create_key("kek")
    key_id = provider.list_keys()[0]["key_id"]
    with pytest.raises(KeyProviderError):
        provider.unwrap(key_id, garbage)


# -- keyring file: format, permissions, atomicity --------------------------------------


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_malformed_keyring_is_a_clear_error(tmp_path: Path, payload: bytes) -> None:
    directory = tmp_path / "fuzz"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "keyring.json"
    path.write_bytes(payload)
    os.chmod(path, 0o600)
    with pytest.raises(KeyProviderError, match="malformed"):
        LocalKeyProvider(path).list_keys()


def test_malformed_entries_are_refused(provider: LocalKeyProvider, keyring: Path) -> None:
    provider.create_key("kek")
    good = json.loads(keyring.read_text())
    cases = {
        "short key": {"material": base64.b64encode(b"x" * 16).decode()},
        "not base64": {"material": "***"},
        "algorithm": {"algorithm": "DES"},
        "missing name": {"name": None},
    }
    for change in cases.values():
        document = json.loads(json.dumps(good))
        document["keys"][0].update(change)
        keyring.write_text(json.dumps(document))
        with pytest.raises(KeyProviderError, match="malformed"):
            provider.list_keys()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_loose_keyring_permissions_are_refused(
    provider: LocalKeyProvider, keyring: Path, mode: int
) -> None:
    key_id = provider.create_key("kek")
    wrapped = provider.wrap(key_id, os.urandom(32))
    os.chmod(keyring, mode)
    with pytest.raises(InsecureKeyStoreError, match="accessible by group or others"):
        provider.list_keys()
    with pytest.raises(InsecureKeyStoreError):
        provider.unwrap(key_id, wrapped)
    with pytest.raises(InsecureKeyStoreError):
        provider.create_key("other")


def test_keyring_owned_by_someone_else_is_refused(
    provider: LocalKeyProvider, keyring: Path
) -> None:
    provider.create_key("kek")
    os.chown(keyring, os.getuid() + 4242, -1)  # tests run as root (see scripts/setup.sh)
    with pytest.raises(InsecureKeyStoreError, match="owned by uid"):
        provider.list_keys()


def test_group_writable_directory_is_refused(provider: LocalKeyProvider, keyring: Path) -> None:
    provider.create_key("kek")
    os.chmod(keyring.parent, 0o770)
    with pytest.raises(InsecureKeyStoreError, match="writable by group or others"):
        provider.list_keys()


def test_symlinked_keyring_is_refused(provider: LocalKeyProvider, keyring: Path) -> None:
    provider.create_key("kek")
    link = keyring.parent / "link.json"
    link.symlink_to(keyring)
    with pytest.raises(KeyProviderError, match="cannot open keyring"):
        LocalKeyProvider(link).list_keys()


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real, tiny tmpfs (we are root, as the project's set-up requires)."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mount)],
                   check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_failed_write_leaves_keyring_untouched(full_disk: Path) -> None:
    keyring = full_disk / "keys" / "keyring.json"
    provider = LocalKeyProvider(keyring)
    provider.create_key("first")
    before = keyring.read_bytes()
    with open(full_disk / "filler", "wb", buffering=0) as filler:  # use up every block
        with contextlib.suppress(OSError):
            while True:
                filler.write(b"\0" * 4096)
    with pytest.raises(OSError, match="No space left"):
        provider.create_key("second")
    assert keyring.read_bytes() == before
    leftovers = [p.name for p in keyring.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    assert [k["name"] for k in provider.list_keys()] == ["first"]


def test_concurrent_creates_lose_nothing(provider: LocalKeyProvider, keyring: Path) -> None:
    errors: list[BaseException] = []

    def create(name: str) -> None:
        try:
            LocalKeyProvider(keyring).create_key(name)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(f"k{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(k["name"] for k in provider.list_keys()) == [f"k{i}" for i in range(8)]


def test_resolve_key_id_picks_newest_of_a_name(provider: LocalKeyProvider, keyring: Path) -> None:
    old = provider.create_key("svc")
    document = json.loads(keyring.read_text())
    rotated = dict(
        document["keys"][0],
        key_id="local:svc:fedcba9876543210",
        created="2999-01-01T00:00:00.000000Z",
    )
    document["keys"].insert(0, rotated)
    keyring.write_text(json.dumps(document))
    assert resolve_key_id(provider, "svc") == "local:svc:fedcba9876543210"
    assert resolve_key_id(provider, old) == old
    with pytest.raises(KeyProviderError, match="no key named or with id 'missing'"):
        resolve_key_id(provider, "missing")


# -- CLI -------------------------------------------------------------------------------


def test_cli_create_prints_only_the_key_id(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "create", "cli-kek"]) == 0
    out, err = capsys.readouterr()
    key_id = out.strip()
    assert KEY_ID_RE.match(key_id)
    (material,) = _materials(cli_env)
    for text in (out, err):
        assert base64.b64encode(material).decode() not in text
        assert material.hex() not in text

    assert run(["keys", "list", "--json"]) == 0
    out, err = capsys.readouterr()
    listed = json.loads(out)
    assert listed["provider"] == "local"
    assert [k["key_id"] for k in listed["keys"]] == [key_id]
    assert base64.b64encode(material).decode() not in out

    assert run(["--json", "keys", "create", "second", "--provider", "local"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["name"] == "second"
    assert created["wrap_algorithm"] == "A256GCM"
    assert KEY_ID_RE.match(created["key_id"])


def test_cli_loose_keyring_exits_8(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["keys", "create", "kek"]) == 0
    os.chmod(cli_env, 0o644)
    capsys.readouterr()
    assert run(["keys", "list"]) == EXIT_INSECURE
    out, err = capsys.readouterr()
    assert err.startswith("error: keyring ")
    assert "chmod 600" in err
    assert "Traceback" not in err
    assert out == ""


def test_cli_errors_map_to_exit_codes(
    cli_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["keys", "create", "kek"]) == 0
    assert run(["keys", "create", "kek"]) == EXIT_KEY
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "pipeline.yaml").write_text("keys:\n  provider: vault-nope\n")
    assert run(["keys", "list"]) == EXIT_CONFIG
    assert "unknown key provider 'vault-nope'" in capsys.readouterr().err


def test_cli_empty_list(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["keys", "list"]) == 0
    assert "no keys" in capsys.readouterr().out
