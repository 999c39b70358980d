"""The embedding scorer (docs/method.md, "Scoring explanations"): no judge LLM. An explanation and each held-out
prompt are embedded with all-MiniLM-L6-v2 (mean pooling over the attention mask, L2-normalised, as
sentence-transformers does); the score of a prompt is the cosine with the explanation, and the explanation's
score is the AUROC of those cosines, prompts where the head is active against the others (delphi's embedding
scorer). Cheap: a batch of 64 short sentences takes a fraction of a second on a CPU."""

from __future__ import annotations

import functools

import numpy as np

from lookups.pipeline.inputs import sentence_encoder
from lookups.pipeline.inputs.models import quiet_loading

#: Longest input, in tokens (the encoder was trained on 256; longer text is cut).
MAX_TOKENS = 256


class Embedder:
    """all-MiniLM-L6-v2 on the CPU (``encode``: texts -> unit vectors ``[n, 384]``), loaded once per process."""

    def __init__(self, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = sentence_encoder.encoder_folder()
        quiet_loading()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size], padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            )
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state  # [n, pos, 384]
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)

    def cosines(self, explanation: str, prompts: list[str]) -> np.ndarray:
        """``[len(prompts)]``: cos(explanation, prompt), each embedded once (the same text twice is embedded once)."""
        unique = list(dict.fromkeys([explanation, *prompts]))
        vectors = dict(zip(unique, self.encode(unique)))
        return np.asarray([float(vectors[explanation] @ vectors[p]) for p in prompts])


@functools.lru_cache(maxsize=1)
def embedder() -> Embedder:
    """The process's encoder, loaded on first use."""
    return Embedder()
