"""Adversarial checks of the sealed-weights read path (verify -> decrypt -> use).

Each test names the attack it models. They complement test_streaming_aead.py (the
stream format) and test_sealing_flow.py (the whole seal/open flow).
"""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pipeline.errors import IntegrityError
from pipeline.sealing import _streaming as sa

SEGMENT = sa.SEGMENT_SIZE_4KB


class _DoubleReadAead:
    """AES-GCM that reads its input twice, as OpenSSL's generic GCM path does.

    ``CRYPTO_gcm128_decrypt_ctr32`` GHASHes a chunk of ciphertext, then runs CTR over
    the same input bytes: two reads of memory the caller owns. ``between`` runs after
    the tag was checked and before the plaintext is produced, which is where a writer
    racing on a shared mapping of the sealed file gets in.
    """

    def __init__(self, key: bytes, between) -> None:
        self._key = key
        self._between = between

    def decrypt_into(self, nonce: bytes, data, associated_data, out) -> None:
        AESGCM(self._key).decrypt(nonce, bytes(data), associated_data)  # read 1: tag (raises)
        self._between()
        body = bytes(data)[: -sa.TAG_SIZE]  # read 2: CTR over the (now changed?) input
        counter = nonce + b"\x00\x00\x00\x02"  # GCM: J0 = nonce || 1, data starts at J0 + 1
        decryptor = Cipher(algorithms.AES(self._key), modes.CTR(counter)).decryptor()
        memoryview(out)[:] = decryptor.update(body) + decryptor.finalize()


def test_ciphertext_changed_during_decryption_never_yields_unauthenticated_plaintext(
    monkeypatch,
) -> None:
    """A concurrent writer to the (memory-mapped) sealed file must not steer the plaintext.

    The AEAD may read the ciphertext twice; if it reads the caller's shared buffer
    (a MAP_SHARED mapping of a file someone else can write), bytes flipped between
    the tag check and the decryption come out as flipped plaintext, with a valid tag.
    Decryption must work on bytes nobody else can change.
    """
    key = os.urandom(32)
    aad = b"secure-model-pipeline/sealed-file/v1\x00model.safetensors"
    plaintext = os.urandom(3 * SEGMENT)
    shared = bytearray(sa.encrypt_bytes(key, plaintext, aad, segment_size=SEGMENT))
    flipped: list[int] = []

    def attacker() -> None:
        if not flipped:  # once, inside segment 0's ciphertext, after its tag passed
            shared[sa.HEADER_SIZE + 7] ^= 0x01
            flipped.append(sa.HEADER_SIZE + 7)

    def segment_aead(data_key, salt, associated_data):
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=associated_data)
        return _DoubleReadAead(hkdf.derive(bytes(data_key)), attacker)

    monkeypatch.setattr(sa, "_segment_aead", segment_aead)
    out = bytearray(len(plaintext))
    try:
        sa.decrypt_into(key, memoryview(shared), memoryview(out), aad,
                        segment_size=SEGMENT, threads=1)
    except IntegrityError:
        assert out == bytearray(len(plaintext))  # refused, and nothing left behind
        return
    assert flipped, "the simulated writer never ran"
    assert bytes(out) == plaintext, "plaintext differs from what was authenticated"


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("size", [0, 1, SEGMENT - 56, SEGMENT - 55, 5 * SEGMENT + 17])
def test_private_copy_keeps_every_size_and_thread_count_working(size: int, threads: int) -> None:
    key = os.urandom(32)
    plaintext = os.urandom(size)
    sealed = sa.encrypt_bytes(key, plaintext, b"ad", segment_size=SEGMENT)
    out = bytearray(size)
    sa.decrypt_into(key, memoryview(sealed), memoryview(out), b"ad",
                    segment_size=SEGMENT, threads=threads)
    assert bytes(out) == plaintext


# ------------------------------------------------------------ files of the sealed directory


def _plain_model(root, content: bytes = b'{"a": 1}\n'):
    """A minimal unsigned sealed directory: seal.json and one plain file."""
    import hashlib

    from pipeline.sealing.manifest import FileEntry, KeyInfo, SealManifest

    root.mkdir()
    manifest = SealManifest(
        name="m",
        segment_size=SEGMENT,
        key=KeyInfo("local", "local:k:0", "A256GCM", b"\0" * 61),
        files=(FileEntry("config.json", len(content), hashlib.sha256(content).hexdigest()),),
    )
    (root / "seal.json").write_bytes(manifest.to_bytes())
    return content


def _open(root):
    from pipeline.config import Settings
    from pipeline.sealing.open import open_sealed

    return open_sealed(root, allow_unsigned=True, settings=Settings())


def test_plain_file_as_symlink_is_refused(tmp_path) -> None:
    """Symlinks are refused when verifying (docs): the fast path must not follow one."""
    root = tmp_path / "m.sealed"
    content = _plain_model(root)
    outside = tmp_path / "outside.json"
    outside.write_bytes(content)
    (root / "config.json").symlink_to(outside)
    with pytest.raises(IntegrityError):
        _open(root)


def test_symlinked_directory_in_sealed_dir_is_refused(tmp_path) -> None:
    root = tmp_path / "m.sealed"
    content = _plain_model(root)
    (root / "config.json").write_bytes(content)
    (tmp_path / "elsewhere").mkdir()
    (root / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(IntegrityError):
        _open(root)


def test_plain_file_as_fifo_is_refused_without_blocking(tmp_path) -> None:
    """A FIFO (or a device) in place of a plain file must not hang or exhaust the loader."""
    root = tmp_path / "m.sealed"
    _plain_model(root)
    os.mkfifo(root / "config.json")
    with pytest.raises(IntegrityError):
        _open(root)


def test_oversized_plain_file_is_refused_before_it_is_read(tmp_path) -> None:
    root = tmp_path / "m.sealed"
    _plain_model(root)
    # A sparse 1 TiB file: reading it whole would fail with MemoryError (a regression that
    # slurps before comparing sizes fails this test at once, it does not hang or pass).
    with open(root / "config.json", "wb") as handle:
        handle.truncate(1 << 40)
    with pytest.raises(IntegrityError):
        _open(root)


def test_seal_json_as_fifo_is_refused_without_blocking(tmp_path) -> None:
    root = tmp_path / "m.sealed"
    _plain_model(root)
    (root / "seal.json").unlink()
    os.mkfifo(root / "seal.json")
    with pytest.raises(IntegrityError):
        _open(root)


def test_plain_file_still_opens(tmp_path) -> None:
    root = tmp_path / "m.sealed"
    content = _plain_model(root)
    (root / "config.json").write_bytes(content)
    assert _open(root).files == {"config.json": content}
