"""Step 8 of docs/method.md: the causal check. Zero-ablate a consistent pair's head and measure the neuron's activation
and its token's probability, on prompts where the head was active and where it was not.

Zero-ablating the input-dependent part of a head's value vectors at all positions leaves its output
``z = pattern · v`` equal to its value bias everywhere (attention weights sum to 1; without value biases,
zero), as zeroing ``hook_z`` in TransformerLens with value biases folded does. We set the head's slice of
``z`` where the model concatenates heads, the input of the attention output projection. With grouped-query
attention (SmolLM2: 9 query heads share 3 key/value heads) this removes exactly the one head's use of its
values and leaves the other heads that share them untouched.

Rows of any (prompt, head, neuron) mix run in the same batch: per-row masks on each layer's output
projection, right padding (causal: real positions never see it), the neuron read at each row's last real
position and the token's probability from the final logits there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import AblationSettings
from lookups.pipeline.inputs.architecture import Architecture
from lookups.pipeline.inputs.capture import batch_positions
from lookups.pipeline.science.batching import pack_batches, pad_right

ABLATION_COLUMNS = [
    "layer", "neuron", "doc_id", "split", "head_layer", "head", "active",
    "clean_act", "ablated_act", "act_drop", "clean_prob", "ablated_prob", "prob_drop",
]


class HeadAblator:
    """Runs prompts through a plain Hugging Face model with at most one head zero-ablated per row."""

    def __init__(self, arch: Architecture):
        self.arch = arch
        self.model = arch.model
        self.device = arch.device
        self.attention = [arch.module(layer.attn_out) for layer in arch.layers]
        self.mlp_out = [arch.module(layer.mlp_out) for layer in arch.layers]
        self.n_heads, self.d_head = arch.n_heads, arch.d_head

    @torch.no_grad()
    def run_batch(self, tokens: torch.Tensor, lengths: torch.Tensor, ablate: np.ndarray, read: np.ndarray, token_ids: np.ndarray):
        """tokens ``[batch, pos]`` right-padded, lengths ``[batch]``; ablate ``[batch, 2]`` (head layer, head; -1
        for a clean row); read ``[batch, 2]`` (layer, neuron); token_ids ``[batch]``.
        Returns (activation, token probability), each ``[batch]``, at each row's last real position."""
        batch = tokens.shape[0]
        last = (lengths - 1).to(self.device)
        acts = torch.full((batch,), float("nan"), device=self.device)  # copied to the host once, at the end
        handles = []

        def ablation_hook(mask, value_bias):
            def hook(module, args):  # the head's z -> its value bias alone (see architecture.Layer.value_bias)
                return (args[0] * mask + value_bias * (1 - mask),) + tuple(args[1:])

            return hook

        for layer in np.unique(ablate[ablate[:, 0] >= 0, 0]):
            mask = torch.ones(batch, self.n_heads, self.d_head)  # built on the host, moved once
            rows = np.nonzero(ablate[:, 0] == layer)[0]
            mask[torch.as_tensor(rows), torch.as_tensor(ablate[rows, 1])] = 0.0
            mask = mask.reshape(batch, 1, -1).to(self.device)
            value_bias = self.arch.layers[int(layer)].value_bias.to(self.device)
            handles.append(self.attention[int(layer)].register_forward_pre_hook(ablation_hook(mask, value_bias)))

        def read_hook(rows, neurons):
            def hook(module, args):  # args[0]: the MLP post-activation [batch, pos, d_mlp]
                acts[rows] = batch_positions(args[0], tokens.shape)[rows, last[rows], neurons].float()

            return hook

        for layer in np.unique(read[:, 0]):
            rows = np.nonzero(read[:, 0] == layer)[0]
            handles.append(
                self.mlp_out[int(layer)].register_forward_pre_hook(
                    read_hook(torch.as_tensor(rows, device=self.device), torch.as_tensor(read[rows, 1], device=self.device))
                )
            )
        try:
            hidden = self.model.base_model(tokens.to(self.device), use_cache=False).last_hidden_state  # final norm applied
        finally:
            for handle in handles:
                handle.remove()
        final = hidden[torch.arange(batch, device=self.device), last]  # [batch, d_model]
        logits = self.arch.logits(final)  # soft-capped where the model caps them
        probs = torch.softmax(logits, dim=-1)[torch.arange(batch, device=self.device), torch.as_tensor(token_ids, device=self.device)]
        return acts.cpu().numpy(), probs.cpu().numpy()


def ablate_pairs(
    ablator: HeadAblator, rows: pd.DataFrame, settings: AblationSettings, bos_id: int, pad_id: int, progress: Progress | None = None,
) -> pd.DataFrame:
    """rows: one per (pair, prompt): layer, neuron, doc_id, split, head_layer, head, active, prompt_token_ids,
    next_token_id. Each distinct (neuron, prompt) also runs once clean, in batches of ``settings.batch_tokens``.
    Returns ABLATION_COLUMNS."""
    batch_tokens = settings.batch_tokens
    rows = rows.reset_index(drop=True)
    clean_keys = rows.drop_duplicates(["layer", "neuron", "doc_id"])[["layer", "neuron", "doc_id", "prompt_token_ids", "next_token_id"]].reset_index(drop=True)
    n_clean = len(clean_keys)
    prompts = [np.concatenate([[bos_id], np.asarray(ids, dtype=np.int64)]) for ids in list(clean_keys["prompt_token_ids"]) + list(rows["prompt_token_ids"])]
    ablate = np.concatenate([np.full((n_clean, 2), -1), rows[["head_layer", "head"]].to_numpy()]).astype(np.int64)
    read = np.concatenate([clean_keys[["layer", "neuron"]].to_numpy(), rows[["layer", "neuron"]].to_numpy()]).astype(np.int64)
    token_ids = np.concatenate([clean_keys["next_token_id"].to_numpy(), rows["next_token_id"].to_numpy()]).astype(np.int64)
    acts = np.empty(len(prompts), dtype=np.float64)
    probs = np.empty(len(prompts), dtype=np.float64)
    done = 0
    for batch in pack_batches([len(p) for p in prompts], batch_tokens):
        batch = np.asarray(batch)
        tokens, lengths = pad_right([prompts[i] for i in batch], pad_id)
        acts[batch], probs[batch] = ablator.run_batch(tokens, lengths, ablate[batch], read[batch], token_ids[batch])
        done += len(batch)
        if progress:
            progress("ablate", done, len(prompts))
    clean = clean_keys[["layer", "neuron", "doc_id"]].assign(clean_act=acts[:n_clean], clean_prob=probs[:n_clean])
    out = rows[["layer", "neuron", "doc_id", "split", "head_layer", "head", "active"]].assign(ablated_act=acts[n_clean:], ablated_prob=probs[n_clean:])
    out = out.merge(clean, on=["layer", "neuron", "doc_id"], how="left")
    out["act_drop"] = out["clean_act"] - out["ablated_act"]
    out["prob_drop"] = out["clean_prob"] - out["ablated_prob"]
    return out[ABLATION_COLUMNS]


def ks_summary(ablations: pd.DataFrame) -> pd.DataFrame:
    """Per metric (activation drop, token-probability drop): active vs inactive prompts, two-sample KS test."""
    from scipy.stats import ks_2samp

    out = []
    for metric in ("act_drop", "prob_drop"):
        active = ablations.loc[ablations["active"], metric].to_numpy(dtype=float)
        inactive = ablations.loc[~ablations["active"].astype(bool), metric].to_numpy(dtype=float)
        if len(active) and len(inactive):
            test = ks_2samp(active, inactive)
            statistic, p_value = float(test.statistic), float(test.pvalue)
        else:
            statistic = p_value = float("nan")
        out.append(
            {
                "metric": metric,
                "n_active": len(active),
                "n_inactive": len(inactive),
                "mean_active": float(active.mean()) if len(active) else float("nan"),
                "mean_inactive": float(inactive.mean()) if len(inactive) else float("nan"),
                "median_active": float(np.median(active)) if len(active) else float("nan"),
                "median_inactive": float(np.median(inactive)) if len(inactive) else float("nan"),
                "ks_statistic": statistic,
                "p_value": p_value,
            }
        )
    return pd.DataFrame(out)


def summary(frame: pd.DataFrame, tests: pd.DataFrame) -> dict:
    """Counts of the ablations (rows, pairs, forward rows: one clean pass per prompt, one per ablated head)
    and each metric's KS statistic and p-value."""
    return {
        "rows": len(frame),
        "pairs": int(frame.groupby(["layer", "neuron", "head_layer", "head"]).ngroups) if len(frame) else 0,
        "forward_rows": len(frame) + (int(frame.groupby(["layer", "neuron", "doc_id"]).ngroups) if len(frame) else 0),
        **{f"{r.metric}_ks": r.ks_statistic for r in tests.itertuples()},
        **{f"{r.metric}_p": r.p_value for r in tests.itertuples()},
    }
