"""atheris target: every parser of untrusted JSON raises only InputError.

seal.json (from disk or a registry, parsed before its signature is checked), the
AdmissionReview body (from the network) with the image extraction that follows it, and
the safetensors header (whatever decrypted). Any other exception is a crash: a bare
ValueError, a RecursionError, a KeyError in the image extraction.

Run by hand:  .venv/bin/python tests/fuzz/fuzz_untrusted_json.py -runs=100000
Run by tests: tests/unit/test_json_fuzz.py (bounded number of runs).
"""

from __future__ import annotations

import json
import struct

import atheris

from tests.fuzz.harness import fuzz

with atheris.instrument_imports(include=["pipeline._json", "pipeline.sealing.manifest",
                                         "pipeline.admission.review",
                                         "pipeline.sealing.safetensors_buffer",
                                         "pipeline.policy.workloads"]):
    from pipeline.admission.review import parse_review
    from pipeline.errors import InputError
    from pipeline.policy.workloads import find_images
    from pipeline.sealing.manifest import parse_manifest
    from pipeline.sealing.safetensors_buffer import parse_header

SEEDS = [
    json.dumps({"format": "secure-model-pipeline/sealed-model", "version": 1, "name": "t",
                "aead": {"scheme": "tink-streaming-aead/AES256_GCM_HKDF",
                         "segment_size": 4096, "hkdf": "SHA256"},
                "key": {"provider": "local", "key_id": "k", "wrap_algorithm": "w",
                        "wrapped_key": "AAAA"},
                "files": [{"path": "a", "size": 1, "sha256": "0" * 64}]}),
    json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {"uid": "u", "operation": "CREATE", "object": {
                    "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                    "spec": {"predictor": {"model": {"storageUri": "oci://r/m:1",
                                                     "image": "r/i:1"},
                                           "containers": [{"name": "c", "image": "x"}]}}}}}),
    json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}),
]


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    seed = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
    if fdp.ConsumeBool():
        text = list(seed)
        for _ in range(fdp.ConsumeIntInRange(0, 8)):
            text[fdp.ConsumeIntInRange(0, len(text) - 1)] = chr(fdp.ConsumeIntInRange(32, 126))
        body = ("".join(text) + fdp.ConsumeUnicodeNoSurrogates(32)).encode()
    else:
        body = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512))
    try:
        parse_manifest(body)
    except InputError:
        pass
    try:
        review = parse_review(body)
        find_images(review.object)
    except InputError:
        pass
    try:
        parse_header(struct.pack("<Q", len(body)) + body + fdp.ConsumeBytes(16))
    except InputError:
        pass


if __name__ == "__main__":
    fuzz(test_one_input)
