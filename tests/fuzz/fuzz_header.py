"""atheris target: the parsers of an untrusted sealed stream only ever raise IntegrityError.

A sealed file comes from a registry or a volume we do not control. Whatever its bytes,
parse_header, plaintext_size and decrypt must either succeed (only for an untouched
stream) or raise IntegrityError, which the CLI turns into exit code 5: never another
exception (a traceback, exit 1) and never a forged plaintext.

Run by hand:  .venv/bin/python tests/fuzz/fuzz_header.py -runs=100000
Run by tests: tests/unit/sealing/test_fuzz_header.py (bounded number of runs).
"""

from __future__ import annotations

import atheris

from tests.fuzz.harness import fuzz, mutate

with atheris.instrument_imports(include=["pipeline"]):
    from pipeline.errors import IntegrityError
    from pipeline.sealing import _streaming as sa

KEY = bytes(range(32))
AD = b"fuzz/weights.safetensors"
SEGMENT = sa.SEGMENT_SIZE_4KB
PLAINTEXT = bytes(range(256)) * 40  # 10 KiB: three 4 KiB segments, short last one
STREAM = sa.encrypt_bytes(KEY, PLAINTEXT, AD, segment_size=SEGMENT)
SEGMENT_SIZES = (SEGMENT, sa.SEGMENT_SIZE_1MB, sa.MIN_SEGMENT_SIZE, 100, 65536)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    try:
        if mode == 0:
            sa.parse_header(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64)))
        elif mode == 1:
            size = fdp.ConsumeIntInRange(-(1 << 20), 1 << 50)
            segment_size = SEGMENT_SIZES[fdp.ConsumeIntInRange(0, len(SEGMENT_SIZES) - 1)]
            n = sa.plaintext_size(size, segment_size)
            if sa.ciphertext_size(n, segment_size) != size:
                raise AssertionError(f"size {size} is not canonical but was accepted")
        elif mode == 2:
            short = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200))
            sa.decrypt_bytes(KEY, short, AD, segment_size=SEGMENT)
            raise AssertionError("random bytes decrypted: forgery")
        else:
            stream = mutate(fdp, STREAM, flip=True, tail=64)
            out = sa.decrypt_bytes(KEY, stream, AD, segment_size=SEGMENT)
            if stream != STREAM or out != PLAINTEXT:
                raise AssertionError("a modified stream decrypted: forgery")
    except IntegrityError:
        pass


if __name__ == "__main__":
    fuzz(test_one_input)
