"""all-MiniLM-L6-v2 sentence embeddings: BERT encoder, mean pooling, L2 normalisation.

The architecture comes from ``transformers`` (BertModel built from config.json, no
hub access); the weights come only from the sealed ``model.safetensors``. Text is
tokenised with the project's own ``tokenizer.json`` bytes, handed to ``preprocess``
by the runtime from the verified sealed directory.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_TOKENS = 256


class MiniLMEmbedder(nn.Module):
    """Sentence-transformers' all-MiniLM-L6-v2 pipeline as one module."""

    def __init__(self, config: dict) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        self.bert = BertModel(BertConfig(**config))  # the checkpoint carries the pooler too

    def load_weights(self, tensors: dict[str, torch.Tensor]) -> None:
        """The checkpoint has no ``bert.`` prefix and may carry the position_ids buffer."""
        state = {k: v for k, v in tensors.items() if k != "embeddings.position_ids"}
        self.bert.load_state_dict(state, strict=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def build_model(config: dict) -> nn.Module:
    """Factory named in pipeline.yaml."""
    return MiniLMEmbedder(config)


def preprocess(texts: list[str], files: dict[str, bytes]) -> dict[str, torch.Tensor]:
    """Tokenise with the sealed model's own tokenizer.json (bytes, verified by signature)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    batch = tokenizer.encode_batch(texts)
    return {
        "input_ids": torch.tensor([e.ids for e in batch], dtype=torch.long),
        "attention_mask": torch.tensor([e.attention_mask for e in batch], dtype=torch.long),
    }
