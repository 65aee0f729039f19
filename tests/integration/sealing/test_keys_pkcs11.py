"""The ``pkcs11`` key provider against a real SoftHSM2 token (tests/fixtures_softhsm.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, ObjectClass

from pipeline.cli import run
from pipeline.config import Settings
from pipeline.errors import (
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_KEY,
    EXIT_UNREACHABLE,
    AuthError,
    ConfigError,
    InsecureKeyStoreError,
    KeyProviderError,
    KeyProviderUnreachableError,
)
from pipeline.sealing.keys import KeyProvider, get_provider, resolve_key_id
from pipeline.sealing.keys.pkcs11 import Pkcs11KeyProvider
from tests.fixtures_softhsm import SoftHSMToken

pytestmark = pytest.mark.integration

KEY_ID_RE = re.compile(r"^pkcs11:[A-Za-z0-9._-]+:[0-9a-f]{32}$")


@pytest.fixture
def provider(softhsm_token: SoftHSMToken) -> Pkcs11KeyProvider:
    return Pkcs11KeyProvider(
        softhsm_token.module, softhsm_token.label, pin_file=softhsm_token.pin_file
    )


def test_create_generates_non_extractable_key_on_token(
    provider: Pkcs11KeyProvider, softhsm_token: SoftHSMToken
) -> None:
    key_id = provider.create_key("hsm-kek-attrs")
    assert KEY_ID_RE.match(key_id)
    token = pkcs11.lib(softhsm_token.module).get_token(token_label=softhsm_token.label)
    with token.open(user_pin=softhsm_token.pin) as session:
        (key,) = session.get_objects(
            {Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: "hsm-kek-attrs"}
        )
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.VALUE_LEN] == 32
        assert bytes(key[Attribute.ID]).hex() == key_id.rsplit(":", 1)[1]
        with pytest.raises(pkcs11.PKCS11Error):
            key[Attribute.VALUE]  # the key bytes never leave the token


def test_wrap_unwrap_round_trip(provider: Pkcs11KeyProvider) -> None:
    key_id = provider.create_key("hsm-roundtrip")
    data_key = os.urandom(32)
    wrapped = provider.wrap(key_id, data_key)
    assert data_key not in wrapped
    unwrapped = provider.unwrap(key_id, wrapped)
    assert isinstance(unwrapped, bytearray)
    assert unwrapped == data_key
    assert provider.wrap(key_id, data_key) != wrapped  # fresh nonce


def test_list_and_resolve(provider: Pkcs11KeyProvider) -> None:
    key_id = provider.create_key("hsm-listed")
    listed = provider.list_keys()
    (entry,) = [k for k in listed if k["name"] == "hsm-listed"]
    assert entry == {"key_id": key_id, "name": "hsm-listed", "created": entry["created"]}
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$", entry["created"])
    assert resolve_key_id(provider, "hsm-listed") == key_id
    assert resolve_key_id(provider, key_id) == key_id


def test_duplicate_label_is_refused(provider: Pkcs11KeyProvider) -> None:
    provider.create_key("hsm-dup")
    with pytest.raises(KeyProviderError, match="already exists"):
        provider.create_key("hsm-dup")


def test_unknown_key_id(provider: Pkcs11KeyProvider) -> None:
    unknown = "pkcs11:hsm-nothere:" + "00" * 16
    with pytest.raises(KeyProviderError, match="unknown key id"):
        provider.wrap(unknown, os.urandom(32))
    key_id = provider.create_key("hsm-unknown")
    wrapped = provider.wrap(key_id, os.urandom(32))
    with pytest.raises(KeyProviderError, match="unknown key id"):
        provider.unwrap(unknown, wrapped)
    with pytest.raises(KeyProviderError, match="not a pkcs11 key id"):
        provider.unwrap("local:hsm-unknown:0011223344556677", wrapped)


def test_wrong_key_and_tampering_are_refused(provider: Pkcs11KeyProvider) -> None:
    one = provider.create_key("hsm-one")
    two = provider.create_key("hsm-two")
    wrapped = provider.wrap(one, os.urandom(32))
    with pytest.raises(KeyProviderError, match="wrong key, or the wrapped key was tampered"):
        provider.unwrap(two, wrapped)
    for index in (0, 1, 12, 13, 30, len(wrapped) - 1):
        tampered = bytearray(wrapped)
        tampered[index] ^= 0x80
        with pytest.raises(KeyProviderError):
            provider.unwrap(one, bytes(tampered))
    with pytest.raises(KeyProviderError, match="malformed"):
        provider.unwrap(one, wrapped[:-1])


def test_wrong_pin_is_an_auth_error(softhsm_token: SoftHSMToken) -> None:
    wrong = Pkcs11KeyProvider(softhsm_token.module, softhsm_token.label, pin="not-the-pin")
    with pytest.raises(AuthError, match="rejected the PIN") as info:
        wrong.list_keys()
    assert "not-the-pin" not in str(info.value)
    assert "not-the-pin" not in repr(wrong)


def test_missing_pin_is_an_auth_error(softhsm_token: SoftHSMToken) -> None:
    with pytest.raises(AuthError, match="no PIN"):
        Pkcs11KeyProvider(softhsm_token.module, softhsm_token.label).list_keys()


def test_readable_pin_file_is_refused(softhsm_token: SoftHSMToken, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(softhsm_token.pin)
    os.chmod(pin_file, 0o644)
    loose = Pkcs11KeyProvider(softhsm_token.module, softhsm_token.label, pin_file=pin_file)
    with pytest.raises(InsecureKeyStoreError, match="PIN file"):
        loose.list_keys()


def test_unknown_token_and_module(softhsm_token: SoftHSMToken, tmp_path: Path) -> None:
    missing = Pkcs11KeyProvider(softhsm_token.module, "no-such-token", pin="x")
    with pytest.raises(KeyProviderUnreachableError, match="token 'no-such-token' not found"):
        missing.list_keys()
    nomodule = Pkcs11KeyProvider(tmp_path / "nope.so", softhsm_token.label, pin="x")
    with pytest.raises(ConfigError, match="module not found"):
        nomodule.list_keys()
    notalib = tmp_path / "fake.so"
    notalib.write_bytes(b"not an ELF file")
    with pytest.raises(KeyProviderUnreachableError, match="cannot load PKCS#11 module"):
        Pkcs11KeyProvider(notalib, softhsm_token.label, pin="x").list_keys()


def test_token_initialised_after_module_load_is_found(
    provider: Pkcs11KeyProvider, softhsm_token: SoftHSMToken
) -> None:
    provider.list_keys()  # the module is now loaded and initialised in this process
    softhsm_token.init_token("pipeline-late")
    late = Pkcs11KeyProvider(softhsm_token.module, "pipeline-late", pin=softhsm_token.pin)
    key_id = late.create_key("late-kek")
    data_key = os.urandom(32)
    assert late.unwrap(key_id, late.wrap(key_id, data_key)) == data_key
    assert provider.list_keys()  # the first token still works after re-initialisation


def test_get_provider_reads_settings_and_env(
    softhsm_token: SoftHSMToken, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PIPELINE_PKCS11_MODULE", "PIPELINE_PKCS11_TOKEN", "PIPELINE_PKCS11_PIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PIPELINE_PKCS11_PIN_FILE", raising=False)
    conf = {
        "module": softhsm_token.module,
        "token_label": softhsm_token.label,
        "pin_file": str(softhsm_token.pin_file),
    }
    provider = get_provider("pkcs11", Settings(raw={"keys": {"pkcs11": conf}}))
    assert isinstance(provider, KeyProvider)
    assert provider.wrap_algorithm == "CKM_AES_GCM"
    assert isinstance(provider.list_keys(), list)
    monkeypatch.setenv("PIPELINE_PKCS11_TOKEN", "from-env")
    from_env = get_provider("pkcs11", Settings(raw={"keys": {"pkcs11": conf}}))
    assert from_env.token_label == "from-env"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="no PKCS#11 module"):
        get_provider("pkcs11", Settings(raw={"keys": {"pkcs11": {"token_label": "x"}}}))
    with pytest.raises(ConfigError, match="PIN never goes in pipeline.yaml"):
        get_provider("pkcs11", Settings(raw={"keys": {"pkcs11": {**conf, "pin": "1234"}}}))


def test_cli_create_list_and_wrong_pin(
    softhsm_env: SoftHSMToken,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(["keys", "create", "cli-hsm-kek", "--provider", "pkcs11"]) == 0
    out, err = capsys.readouterr()
    key_id = out.strip()
    assert KEY_ID_RE.match(key_id)
    assert softhsm_env.pin not in out + err

    assert run(["keys", "list", "--provider", "pkcs11", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["provider"] == "pkcs11"
    assert key_id in [k["key_id"] for k in listed["keys"]]

    assert run(["keys", "create", "cli-hsm-kek", "--provider", "pkcs11"]) == EXIT_KEY
    capsys.readouterr()

    monkeypatch.delenv("PIPELINE_PKCS11_PIN_FILE")
    monkeypatch.setenv("PIPELINE_PKCS11_PIN", "wrong-pin-0000")
    assert run(["keys", "list", "--provider", "pkcs11"]) == EXIT_AUTH
    out, err = capsys.readouterr()
    assert "rejected the PIN" in err
    assert "wrong-pin-0000" not in out + err
    assert "Traceback" not in err

    monkeypatch.setenv("PIPELINE_PKCS11_TOKEN", "no-such-token")
    assert run(["keys", "list", "--provider", "pkcs11"]) == EXIT_UNREACHABLE
    assert "token 'no-such-token' not found" in capsys.readouterr().err

    monkeypatch.delenv("PIPELINE_PKCS11_MODULE")
    assert run(["keys", "list", "--provider", "pkcs11"]) == EXIT_CONFIG
    assert "no PKCS#11 module configured" in capsys.readouterr().err


def test_cli_in_a_subprocess(softhsm_token: SoftHSMToken, tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {**os.environ, **softhsm_token.env}
    env.pop("PIPELINE_PKCS11_PIN", None)
    command = [sys.executable, "-m", "pipeline", "keys", "create", "sub-hsm", "--provider"]
    result = subprocess.run(
        [*command, "pkcs11", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert KEY_ID_RE.match(json.loads(result.stdout)["key_id"])
