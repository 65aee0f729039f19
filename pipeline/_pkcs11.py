"""PKCS#11 tokens, shared by the sealing key provider and the token signers.

One way to reach a token: load the module, find the token (by label or slot), log in
with a PIN read by one strict reader, close the session afterwards. Both
``pipeline.sealing.keys.pkcs11`` (KEKs that wrap data keys) and
``pipeline.signing._pkcs11`` (EC keys that sign models and images) open their
sessions here, so a PIN problem, a missing token or an unloadable module reads the
same whoever hit it, and neither core package needs the other.

python-pkcs11 is the project's one PKCS#11 library: model-signing's own PKCS#11
signer uses PyKCS11, and two libraries in one process fight over
C_Initialize/C_Finalize (one finalizing the module ends the other's sessions).
PINs never appear in a message, a repr or a log line.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import (
    AuthError,
    InsecureKeyStoreError,
    KeyProviderError,
    KeyProviderUnreachableError,
)

__all__ = ["describe", "open_session", "read_pin_file", "token_labels"]

_MAX_PIN_FILE_BYTES = 4096


def read_pin_file(path: Path) -> str:
    """A token PIN from a file that only its owner can read (0600, ours, not a symlink).

    The one PIN reader of the project: the sealing key provider and the token signers
    (model and image signatures) all take PINs from files through here.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise AuthError(f"cannot read PIN file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if info.st_mode & 0o077 or info.st_uid != os.getuid():
            raise InsecureKeyStoreError(
                f"PIN file {path} must be owned by you and not accessible by "
                f"group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path}"
            )
        raw = handle.read(_MAX_PIN_FILE_BYTES)
    try:
        pin = raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise AuthError(f"PIN file {path} is not UTF-8") from None
    if not pin:
        raise AuthError(f"PIN file {path} is empty")
    return pin


def describe(exc: BaseException, limit: int = 300) -> str:
    """A python-pkcs11 error for a message: its text, else its class (the CKR_ code).

    Any ``pin-value=`` that a URI in the text may carry is redacted.
    """
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    text = re.sub(r"pin-value=[^&;\s]*", "pin-value=<redacted>", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def token_labels(library: Any) -> list[str]:
    """Labels of the tokens present (for 'not found' messages); empty on any error."""
    labels: list[str] = []
    with contextlib.suppress(Exception):
        for slot in library.get_slots(token_present=True):
            with contextlib.suppress(Exception):
                label = slot.get_token().label
                if label:
                    labels.append(label)
    return labels


def _find_token(library: Any, module: str, token_label: str | None, slot_id: int | None) -> Any:
    import pkcs11

    if slot_id is not None:
        slots = [s for s in library.get_slots(token_present=True) if s.slot_id == slot_id]
        if not slots:
            raise KeyProviderUnreachableError(f"no token in PKCS#11 slot {slot_id}")
        token = slots[0].get_token()
        if token_label is not None and token.label != token_label:
            raise KeyProviderError(f"the token in slot {slot_id} is not {token_label!r}")
        return token
    try:
        return library.get_token(token_label=token_label)
    except pkcs11.NoSuchToken:
        pass
    # Tokens initialised after this process first loaded the module are invisible
    # until the library is re-initialised (SoftHSM scans its token dir at start).
    try:
        library.reinitialize()
        return library.get_token(token_label=token_label)
    except pkcs11.NoSuchToken:
        present = ", ".join(repr(label) for label in token_labels(library)) or "none"
        raise KeyProviderUnreachableError(
            f"PKCS#11 token {token_label!r} not found in {module} (tokens present: {present})"
        ) from None


@contextlib.contextmanager
def open_session(
    module: str,
    *,
    pin: str | Callable[[], str],
    token_label: str | None = None,
    slot_id: int | None = None,
    rw: bool = False,
) -> Iterator[tuple[Any, Any]]:
    """A logged-in ``(token, session)`` on the token named by label or slot; closed after.

    Errors: the module cannot be loaded or the token is absent ->
    KeyProviderUnreachableError; the PIN is refused -> AuthError; anything else the
    token refuses -> KeyProviderError. Checking that ``module`` exists is the
    caller's (a missing path is a configuration problem for one, an unreachable
    device for the other). ``pin`` may be a function: it is called only once the token
    is found, so a missing token is reported as such, not as a missing PIN.
    """
    import pkcs11

    try:
        library = pkcs11.lib(module)
    except (OSError, RuntimeError, pkcs11.PKCS11Error) as exc:
        raise KeyProviderUnreachableError(
            f"cannot load PKCS#11 module {module}: {describe(exc)}"
        ) from None
    try:
        token = _find_token(library, module, token_label, slot_id)
    except pkcs11.PKCS11Error as exc:
        what = repr(token_label) if slot_id is None else f"in slot {slot_id}"
        raise KeyProviderUnreachableError(
            f"cannot reach PKCS#11 token {what}: {describe(exc)}"
        ) from None
    user_pin = pin() if callable(pin) else pin
    try:
        session = token.open(rw=rw, user_pin=user_pin)
    except pkcs11.UserAlreadyLoggedIn:
        # Login state belongs to the process, not the session: another user of this
        # token in the process (a signer, a key provider) is logged in, so this is too.
        session = token.open(rw=rw)
    except (pkcs11.PinIncorrect, pkcs11.PinInvalid, pkcs11.PinLenRange) as exc:
        raise AuthError(
            f"PKCS#11 token {token.label!r} rejected the PIN (incorrect PIN: "
            f"{type(exc).__name__})"
        ) from None
    except (pkcs11.PinLocked, pkcs11.PinExpired, pkcs11.UserPinNotInitialized) as exc:
        raise AuthError(
            f"PKCS#11 token {token.label!r} refused login: {describe(exc)}"
        ) from None
    except (pkcs11.DeviceRemoved, pkcs11.TokenNotPresent, pkcs11.DeviceError) as exc:
        raise KeyProviderUnreachableError(
            f"PKCS#11 token {token.label!r} is unavailable: {describe(exc)}"
        ) from None
    except pkcs11.PKCS11Error as exc:
        raise KeyProviderError(
            f"cannot open a session on PKCS#11 token {token.label!r}: {describe(exc)}"
        ) from None
    finally:
        del user_pin
    try:
        yield token, session
    finally:
        with contextlib.suppress(Exception):
            session.close()
