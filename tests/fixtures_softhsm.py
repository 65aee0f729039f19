"""A real SoftHSM2 PKCS#11 token for tests, shared by every test that needs an HSM.

``softhsm_token`` (session scope) initialises a fresh token in its own token directory
(its own SOFTHSM2_CONF, so the machine's tokens are never touched) and yields a
:class:`SoftHSMToken`. ``softhsm_env`` (function scope) puts the token's settings in
the environment the way an operator would (PIPELINE_PKCS11_MODULE/TOKEN/PIN_FILE), for
CLI tests. Subprocesses get ``token.env``.

SOFTHSM2_CONF stays set for the whole session: SoftHSM reads it once, when a process
first initialises the module, so every in-process test must see the same value.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SOFTHSM_MODULE_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


@dataclass(frozen=True)
class SoftHSMToken:
    """Everything needed to use the test token, in process or in a subprocess."""

    module: str
    label: str
    pin: str
    so_pin: str
    conf: Path
    tokendir: Path
    pin_file: Path
    env: dict[str, str] = field(default_factory=dict)

    def init_token(self, label: str, pin: str | None = None) -> None:
        """Initialise one more token in the same token directory (for multi-token tests)."""
        _softhsm_util(self.env, label, pin or self.pin, self.so_pin)


def find_softhsm_module() -> str:
    """The SoftHSM2 PKCS#11 module; fails loudly (Debian package softhsm2) when absent."""
    override = os.environ.get("SOFTHSM2_MODULE")
    for candidate in (override, *SOFTHSM_MODULE_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("SoftHSM2 is not installed (Debian package softhsm2; see scripts/setup.sh)")


def _softhsm_util(env: dict[str, str], label: str, pin: str, so_pin: str) -> None:
    tool = shutil.which("softhsm2-util")
    if tool is None:
        pytest.fail("softhsm2-util is not installed (Debian package softhsm2)")
    # PINs on argv are acceptable here only because these are throwaway test tokens.
    result = subprocess.run(
        [tool, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", so_pin],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"softhsm2-util --init-token failed: {result.stdout} {result.stderr}")


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSMToken]:
    """A freshly initialised SoftHSM2 token, private to this test session."""
    module = find_softhsm_module()
    base = tmp_path_factory.mktemp("softhsm")
    tokendir = base / "tokens"
    tokendir.mkdir(mode=0o700)
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokendir}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n",
        encoding="utf-8",
    )
    label, pin, so_pin = "pipeline-test", "test-user-pin-1234", "test-so-pin-5678"
    pin_file = base / "user.pin"
    fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(pin + "\n")
    env = {
        "SOFTHSM2_CONF": str(conf),
        "PIPELINE_PKCS11_MODULE": module,
        "PIPELINE_PKCS11_TOKEN": label,
        "PIPELINE_PKCS11_PIN_FILE": str(pin_file),
    }
    _softhsm_util(env, label, pin, so_pin)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        yield SoftHSMToken(
            module=module,
            label=label,
            pin=pin,
            so_pin=so_pin,
            conf=conf,
            tokendir=tokendir,
            pin_file=pin_file,
            env=env,
        )


@pytest.fixture
def softhsm_env(softhsm_token: SoftHSMToken, monkeypatch: pytest.MonkeyPatch) -> SoftHSMToken:
    """The test token configured through the environment only (as the CLI sees it)."""
    for name in ("PIPELINE_PKCS11_PIN", "PIPELINE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in softhsm_token.env.items():
        monkeypatch.setenv(name, value)
    return softhsm_token
