"""The ``local`` key provider: key-encryption keys in a keyring file on this machine.

Meant for a developer laptop, CI and single-node deployments. The keyring holds KEKs
in the clear, so its only protection is the file system: it is created 0600 inside a
0700 directory, written atomically under a lock, and *refused* (fail closed) when it
or its directory has become accessible to anyone else. Format: docs/key-providers.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline._fileio import write_atomic
from pipeline.errors import InsecureKeyStoreError, KeyProviderError
from pipeline.sealing.keys._base import (
    DATA_KEY_SIZE,
    NONCE_SIZE,
    WRAP_VERSION,
    check_data_key,
    check_key_name,
    check_wrapped,
    utc_now,
    wrap_aad,
)

KEYRING_FORMAT = "secure-model-pipeline/keyring"
KEYRING_VERSION = 1
_MAX_KEYRING_BYTES = 16 * 1024 * 1024
_FINGERPRINT_DOMAIN = b"secure-model-pipeline/kek-fingerprint/v1\x00"


def _fingerprint(material: bytes | bytearray) -> str:
    # A one-way, domain-separated digest: distinguishes keys without revealing them.
    return hashlib.sha256(_FINGERPRINT_DOMAIN + bytes(material)).hexdigest()[:16]


def _wipe(buffer: bytearray) -> None:
    buffer[:] = b"\x00" * len(buffer)


def _check_keyring_mode(path: Path, info: os.stat_result) -> None:
    """Refuse a keyring that anyone but us (and root) could read or replace.

    Two shapes are safe. Ours: owned by the current user, mode 0600 (or stricter).
    A read-only mount: owned by root, which nobody else can change, readable by our
    own group at most, never by others and never group-writable. The second is what a
    Kubernetes Secret volume gives a non-root pod (root:fsGroup, mode 0440); the group
    is the pod's own, so nothing outside the pod reads the key through it.
    """
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid == os.getuid():
        if mode & 0o077:
            raise InsecureKeyStoreError(
                f"keyring {path} is accessible by group or others "
                f"(mode {mode:04o}); refusing to use it. "
                f"If nobody else could have read it, run: chmod 600 {path}; "
                "otherwise treat its keys as compromised and rotate them"
            )
        return
    if info.st_uid != 0:
        raise InsecureKeyStoreError(
            f"keyring {path} is owned by uid {info.st_uid}, not by the "
            f"current user (uid {os.getuid()}) or root; refusing to use it"
        )
    if mode & 0o037:
        raise InsecureKeyStoreError(
            f"root-owned keyring {path} is writable by its group or accessible by others "
            f"(mode {mode:04o}); a read-only mount must be 0440 or stricter"
        )
    if mode & 0o040 and info.st_gid not in {os.getgid(), *os.getgroups()}:
        raise InsecureKeyStoreError(
            f"root-owned keyring {path} is readable by group {info.st_gid}, which is not "
            "this process's group; refusing to use it"
        )


class LocalKeyProvider:
    """KEKs in a JSON keyring file; wrap is AES-256-GCM (JOSE name ``A256GCM``)."""

    name = "local"
    wrap_algorithm = "A256GCM"

    def __init__(self, keyring: str | os.PathLike[str]) -> None:
        self.keyring = Path(keyring).expanduser()

    # -- public API -----------------------------------------------------------------

    def create_key(self, key_name: str) -> str:
        """Generate a random 256-bit KEK named ``key_name`` and store it in the keyring."""
        check_key_name(key_name)
        self._ensure_directory()
        with self._locked():
            document = self._read() or _empty_document()
            if any(entry["name"] == key_name for entry in document["keys"]):
                raise KeyProviderError(
                    f"a key named {key_name!r} already exists in keyring {self.keyring}"
                )
            material = bytearray(secrets.token_bytes(DATA_KEY_SIZE))
            key_id = f"local:{key_name}:{_fingerprint(material)}"
            document["keys"].append(
                {
                    "key_id": key_id,
                    "name": key_name,
                    "created": utc_now(),
                    "algorithm": "AES-256",
                    "material": base64.b64encode(material).decode("ascii"),
                }
            )
            _wipe(material)
            self._write(document)
        return key_id

    def wrap(self, key_id: str, data_key: bytes | bytearray) -> bytes:
        """AES-256-GCM of the data key, random 96-bit nonce, AAD = purpose + key id."""
        check_data_key(data_key)
        material = self._material(key_id)
        try:
            nonce = secrets.token_bytes(NONCE_SIZE)
            sealed = AESGCM(bytes(material)).encrypt(nonce, bytes(data_key), wrap_aad(key_id))
        finally:
            _wipe(material)
        return WRAP_VERSION + nonce + sealed

    def unwrap(self, key_id: str, wrapped: bytes) -> bytearray:
        """Recover the data key; KeyProviderError when the wrap does not authenticate."""
        check_wrapped(wrapped)
        material = self._material(key_id)
        try:
            nonce = bytes(wrapped[1 : 1 + NONCE_SIZE])
            sealed = bytes(wrapped[1 + NONCE_SIZE :])
            data_key = AESGCM(bytes(material)).decrypt(nonce, sealed, wrap_aad(key_id))
        except InvalidTag:
            raise KeyProviderError(
                f"cannot unwrap the data key with {key_id!r}: wrong key, or the wrapped "
                "key was tampered with"
            ) from None
        finally:
            _wipe(material)
        return bytearray(data_key)

    def list_keys(self) -> list[dict[str, str]]:
        """Key ids, names and creation times, oldest first; never key material."""
        document = self._read()
        if document is None:
            return []
        return [
            {"key_id": entry["key_id"], "name": entry["name"], "created": entry["created"]}
            for entry in document["keys"]
        ]

    # -- file handling --------------------------------------------------------------

    def _material(self, key_id: str) -> bytearray:
        document = self._read()
        if document is None:
            raise KeyProviderError(
                f"unknown key id {key_id!r}: keyring {self.keyring} does not exist"
            )
        for entry in document["keys"]:
            if entry["key_id"] == key_id:
                material: bytearray = entry["material_bytes"]
                return material
        raise KeyProviderError(f"unknown key id {key_id!r} in keyring {self.keyring}")

    def _ensure_directory(self) -> None:
        directory = self.keyring.parent
        if not directory.exists():
            try:
                directory.mkdir(parents=True, mode=0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise KeyProviderError(
                    f"cannot create keyring directory {directory}: {exc}"
                ) from None
            os.chmod(directory, 0o700)
        self._check_directory()

    def _check_directory(self) -> None:
        # Whoever can write the directory can swap the keyring for one they control.
        directory = self.keyring.parent
        try:
            info = os.stat(directory)
        except OSError as exc:
            raise KeyProviderError(f"cannot access keyring directory {directory}: {exc}") from None
        if info.st_mode & 0o022:
            raise InsecureKeyStoreError(
                f"keyring directory {directory} is writable by group or others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 700 {directory}"
            )
        if info.st_uid not in (os.getuid(), 0):
            raise InsecureKeyStoreError(
                f"keyring directory {directory} is owned by uid {info.st_uid}, "
                f"not by the current user (uid {os.getuid()})"
            )

    def _read(self) -> dict[str, Any] | None:
        """Parse the keyring, refusing it when anyone else could read or replace it."""
        try:
            fd = os.open(self.keyring, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyProviderError(f"cannot open keyring {self.keyring}: {exc}") from None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())  # checks the file we actually opened
            if not stat.S_ISREG(info.st_mode):
                raise InsecureKeyStoreError(f"keyring {self.keyring} is not a regular file")
            _check_keyring_mode(self.keyring, info)
            self._check_directory()
            raw = handle.read(_MAX_KEYRING_BYTES + 1)
        if len(raw) > _MAX_KEYRING_BYTES:
            raise KeyProviderError(f"keyring {self.keyring} is larger than 16 MiB")
        return _parse(raw, self.keyring)

    def _write(self, document: dict[str, Any]) -> None:
        """Temp file (0600) in the same directory, fsync, rename, fsync the directory."""
        write_atomic(self.keyring, _serialise(document), mode=0o600)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Serialises concurrent `keys create` so no update is lost between read and rename.
        lock_path = self.keyring.with_name(self.keyring.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise KeyProviderError(f"cannot lock keyring {self.keyring}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _empty_document() -> dict[str, Any]:
    return {"format": KEYRING_FORMAT, "version": KEYRING_VERSION, "keys": []}


def _serialise(document: dict[str, Any]) -> bytes:
    out = _empty_document()
    for entry in document["keys"]:
        material = entry.get("material")
        if material is None:
            material = base64.b64encode(entry["material_bytes"]).decode("ascii")
        out["keys"].append(
            {
                "key_id": entry["key_id"],
                "name": entry["name"],
                "created": entry["created"],
                "algorithm": entry["algorithm"],
                "material": material,
            }
        )
    return (json.dumps(out, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _parse(raw: bytes, path: Path) -> dict[str, Any]:
    """Validate the keyring strictly: a half-understood keyring is worse than none."""

    def bad(why: str) -> KeyProviderError:
        return KeyProviderError(f"keyring {path} is malformed: {why}")

    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise bad("not UTF-8 JSON") from None
    if not isinstance(document, dict) or document.get("format") != KEYRING_FORMAT:
        raise bad(f"'format' is not {KEYRING_FORMAT!r}")
    if document.get("version") != KEYRING_VERSION:
        raise bad(f"unsupported version {document.get('version')!r}")
    keys = document.get("keys")
    if not isinstance(keys, list):
        raise bad("'keys' must be a list")
    seen: set[str] = set()
    for index, entry in enumerate(keys):
        if not isinstance(entry, dict):
            raise bad(f"keys[{index}] is not an object")
        for field in ("key_id", "name", "created", "algorithm", "material"):
            if not isinstance(entry.get(field), str):
                raise bad(f"keys[{index}].{field} is missing or not a string")
        if entry["algorithm"] != "AES-256":
            raise bad(f"keys[{index}] has unsupported algorithm {entry['algorithm']!r}")
        if entry["key_id"] in seen:
            raise bad(f"duplicate key id {entry['key_id']!r}")
        seen.add(entry["key_id"])
        try:
            material = bytearray(base64.b64decode(entry["material"], validate=True))
        except (binascii.Error, ValueError):
            raise bad(f"keys[{index}].material is not base64") from None
        if len(material) != DATA_KEY_SIZE:
            raise bad(f"keys[{index}] is not a 256-bit key")
        entry["material_bytes"] = material
    return document
