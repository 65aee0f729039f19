"""A tiny two-layer classifier: 16 features in, 4 class scores out.

Small enough to seal, sign, load and serve in well under a second, so tests and
the demo exercise the whole pipeline on a real ``torch.nn.Module`` with real
weights (``model.safetensors``, made by ``examples/make_tiny_weights.py``).
"""

from __future__ import annotations

import torch
from torch import nn


class TinyClassifier(nn.Module):
    """Linear -> ReLU -> Linear; the output is a softmax over ``classes``."""

    def __init__(self, features: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - OIP input name
        return torch.softmax(self.fc2(torch.relu(self.fc1(input))), dim=-1)


def build_model(config: dict) -> nn.Module:
    """Factory named in pipeline.yaml: the runtime calls it, then loads the sealed weights."""
    return TinyClassifier(config["features"], config["hidden"], config["classes"])
