"""What every atheris target shares: the self-test switch, the entry point, a mutator.

``FUZZ_SELF_TEST=1`` makes a target raise on its first input, so a test can prove that
the harness reports a failing target (see ``tests/fuzz/runner.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import atheris

SELF_TEST_MESSAGE = "self-test: the harness must report this"


def fuzz(one_input: Callable[[bytes], None]) -> None:
    """Run ``one_input`` under libFuzzer with the flags on the command line."""

    def checked(data: bytes) -> None:
        if os.environ.get("FUZZ_SELF_TEST") == "1":
            raise ValueError(SELF_TEST_MESSAGE)
        one_input(data)

    atheris.Setup(sys.argv, checked)
    atheris.Fuzz()


def mutate(fdp: atheris.FuzzedDataProvider, seed: bytes, *, flip: bool, tail: int) -> bytes:
    """``seed`` with up to four fuzzer-chosen bytes changed (XOR-ed when ``flip``, else
    replaced), cut at a fuzzer-chosen point, and up to ``tail`` fuzzer bytes appended."""
    data = bytearray(seed)
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        index = fdp.ConsumeIntInRange(0, len(data) - 1)
        value = fdp.ConsumeIntInRange(0, 255)
        data[index] = data[index] ^ value if flip else value
    cut = fdp.ConsumeIntInRange(0, len(data))
    return bytes(data[:cut]) + fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, tail))
