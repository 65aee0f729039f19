"""The real MiniLM, sealed and served: text in (friendly JSON or OIP BYTES), embeddings out.

The reference is examples/minilm's own module and tokenizer run in this process on
the plaintext weights; the runtime's answer must match it.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.support.runtime import (
    MINILM,
    free_port,
    make_workspace,
    runtime_args,
    runtime_env,
    seal,
    start_runtime,
)

pytestmark = pytest.mark.integration
TEXTS = ["Sealed weights are decrypted only in memory.", "The cat sat on the mat."]


def _reference(texts: list[str]) -> np.ndarray:
    code = types.ModuleType("minilm_reference")
    exec(compile((MINILM / "model.py").read_text(), str(MINILM / "model.py"), "exec"),
         code.__dict__)
    module = code.build_model(json.loads((MINILM / "config.json").read_text()))
    module.load_weights(load_file(str(MINILM / "model.safetensors")))
    module.eval()
    inputs = code.preprocess(texts, {"tokenizer.json": (MINILM / "tokenizer.json").read_bytes()})
    with torch.inference_mode():
        return module(**inputs).numpy()


def test_minilm_serves_text(tmp_path: Path) -> None:
    assert (MINILM / "model.safetensors").is_file(), "run: python -m examples.prepare_minilm"
    ws = make_workspace(tmp_path / "ws")
    sealed = seal(ws, MINILM, tmp_path / "minilm.sealed")
    port = free_port()
    rt = start_runtime(runtime_args(ws, sealed, port, "--allow-root"), tmp_path / "runtime.log",
                       port, env=runtime_env(HF_HUB_OFFLINE="1"))
    try:
        expected = _reference(TEXTS)
        rt.wait_ready()
        meta = rt.get("/v2/models/minilm").json()
        assert meta["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]

        friendly = rt.post("/v2/models/minilm/infer", json={"text": TEXTS})
        assert friendly.status_code == 200, friendly.text
        (out,) = friendly.json()["outputs"]
        assert (out["name"], out["datatype"], out["shape"]) == ("embedding", "FP32", [2, 384])
        got = np.asarray(out["data"], dtype=np.float32).reshape(2, 384)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

        tensor_form = rt.post("/v2/models/minilm/infer", json={"inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": [TEXTS[1]]}]})
        assert tensor_form.status_code == 200, tensor_form.text
        one = np.asarray(tensor_form.json()["outputs"][0]["data"], dtype=np.float32)
        np.testing.assert_allclose(one, expected[1], rtol=1e-4, atol=1e-5)

        empty = rt.post("/v2/models/minilm/infer", json={"text": []})
        assert empty.status_code == 400 and "non-empty list" in empty.json()["error"]
        assert rt.stop() == 0
    finally:
        rt.close()
