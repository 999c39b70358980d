"""Attention patterns from the last position: what the atlas shades each prompt's tokens by."""

from __future__ import annotations

import numpy as np

from lookups.pipeline.science.batching import capture_last_positions, pack_batches, pad_right


def last_position_attention(bridge, prompts: list[np.ndarray], head_layers: list[int], batch_tokens: int, pad_id: int) -> list[dict[int, np.ndarray]]:
    """For each prompt (BOS included), each layer's attention pattern from the last position:
    ``{layer: [n_heads, n_tokens]}``. The forward stops after the deepest layer asked for."""
    out: list[dict[int, np.ndarray]] = [dict() for _ in prompts]
    if not prompts or not head_layers:
        return out
    names = {layer: f"blocks.{layer}.attn.hook_pattern" for layer in sorted(set(head_layers))}
    for batch in pack_batches([len(p) for p in prompts], batch_tokens):
        tokens, lengths = pad_right([prompts[i] for i in batch], pad_id)
        captured = capture_last_positions(
            bridge, tokens.to(bridge.cfg.device), lengths, names.values(), names[max(names)],
            pick=lambda pattern, rows, last: pattern[rows, :, last, :],  # [batch, head, query, key] -> [batch, head, key]
        )
        for layer, name in names.items():
            picked = captured[name].float().cpu().numpy()
            for j, i in enumerate(batch):
                out[i][layer] = picked[j, :, : int(lengths[j])]
    return out
