"""Write examples/tiny/model.safetensors: the tiny classifier's weights, made here (seeded)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

TINY = Path(__file__).resolve().parent / "tiny"


def main() -> None:
    spec = importlib.util.spec_from_file_location("tiny_model", TINY / "model.py")
    assert spec and spec.loader
    module_code = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module_code)
    torch.manual_seed(20261125)
    config = json.loads((TINY / "config.json").read_text())
    state = {k: v.contiguous() for k, v in module_code.build_model(config).state_dict().items()}
    save_file(state, str(TINY / "model.safetensors"), metadata={"format": "pt"})


if __name__ == "__main__":
    main()
