"""atheris target: image references and manifests from untrusted text only raise InputError.

A reference comes from a user, a policy file or an admission request; a manifest
from a registry we do not control. Whatever the bytes, ``Reference.parse`` and
``parse_manifest`` must either succeed or raise InputError (exit 4): never another
exception (a traceback, exit 1). What they accept must also be self-consistent: a
parsed reference prints to text that parses back to the same reference, and an
accepted manifest's descriptors all carry valid digests and sizes.

Run by hand:  .venv/bin/python tests/fuzz/fuzz_oci.py -runs=100000
Run by tests: tests/unit/oci/test_fuzz_oci.py (bounded number of runs).
"""

from __future__ import annotations

import json

import atheris

from tests.fuzz.harness import fuzz, mutate

with atheris.instrument_imports(include=["pipeline"]):
    from pipeline.errors import InputError
    from pipeline.oci import media_types as mt
    from pipeline.oci.digest import parse_digest
    from pipeline.oci.manifest import parse_manifest
    from pipeline.oci.reference import Reference

_DIGEST = "sha256:" + "ab" * 32
#: A valid manifest whose bytes the fuzzer mutates (structure-aware start point).
SEED_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": _DIGEST, "size": 2},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": _DIGEST, "size": 10}],
        "subject": {"mediaType": mt.OCI_MANIFEST, "digest": _DIGEST, "size": 3},
    }
).encode()
SEED_REFERENCES = ("127.0.0.1:5000/a/b:v1", "ubuntu", f"ghcr.io/x/y@{_DIGEST}")
MEDIA_TYPES = (None, *mt.ALL_MANIFEST_TYPES, "text/plain")


def _check_reference(text: str) -> None:
    try:
        ref = Reference.parse(text)
    except InputError:
        return
    again = Reference.parse(str(ref))
    if again != ref:
        raise AssertionError(f"{text!r} -> {ref} re-parses as {again}")


def _check_manifest(body: bytes, media_type: str | None) -> None:
    try:
        manifest = parse_manifest(body, media_type)
    except InputError:
        return
    for descriptor in (*manifest.blobs, *manifest.manifests):
        parse_digest(descriptor["digest"])  # InputError here would be a parser bug
        if not isinstance(descriptor["size"], int) or descriptor["size"] < 0:
            raise AssertionError(f"accepted a bad size: {descriptor!r}")


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    if mode == 0:
        _check_reference(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 300)))
    elif mode == 1:
        seed = SEED_REFERENCES[fdp.ConsumeIntInRange(0, len(SEED_REFERENCES) - 1)].encode()
        _check_reference(mutate(fdp, seed, flip=False, tail=32).decode("utf-8", "replace"))
    else:
        media_type = MEDIA_TYPES[fdp.ConsumeIntInRange(0, len(MEDIA_TYPES) - 1)]
        if mode == 2:
            body = mutate(fdp, SEED_MANIFEST, flip=False, tail=32)
        else:
            body = fdp.ConsumeBytes(512)
        _check_manifest(body, media_type)


if __name__ == "__main__":
    fuzz(test_one_input)
