"""Step 8 of docs/method.md: the causal check. Zero-ablate a consistent pair's head and measure the neuron's activation
and its token's probability, on prompts where the head was active and where it was not.

Zero-ablating the input-dependent part of a head's value vectors at all positions leaves its output
``z = pattern · v`` equal to its value bias everywhere (attention weights sum to 1; without value biases,
zero), as zeroing ``hook_z`` in TransformerLens with value biases folded does. We set the head's slice of
``z`` where the model concatenates heads, the input of the attention output projection. With grouped-query
attention (SmolLM2: 9 query heads share 3 key/value heads) this removes exactly the one head's use of its
values and leaves the other heads that share them untouched.

A head of layer l changes nothing below l, so each prompt runs once clean, caching the stream entering every
layer that holds an ablated head, and each ablated row *resumes* there (``capture.Resume``): the layers below are
never recomputed (tested equal to the full forward pass on every family: tests/integration/science/test_resume.py;
``bench/bench_interventions.py`` prints the saving). Rows of one layer and any (prompt, head, neuron) mix run in
the same batch: per-row masks on the layer's output projection, right padding (causal: real positions never see
it), the neuron read at each row's last real position and the token's probability from the final logits there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import AblationSettings
from lookups.pipeline.inputs.architecture import Architecture
from lookups.pipeline.inputs.capture import Resume, block_input, capture
from lookups.pipeline.science.batching import pack_batches, pad_right

ABLATION_COLUMNS = [
    "layer", "neuron", "doc_id", "split", "head_layer", "head", "active",
    "clean_act", "ablated_act", "act_drop", "clean_prob", "ablated_prob", "prob_drop",
]


@dataclass
class Pass:
    """One forward pass's reads at each row's last real position: the neuron's activation and, when asked, the
    probability of the row's token ``[rows]``; and the stream cached entering the layers asked for
    (``{layer: [rows, pos, d_model]}``), where interventions on those rows resume."""

    acts: np.ndarray
    probs: np.ndarray
    streams: dict[int, torch.Tensor]


class Intervener:
    """Runs prompts through a plain Hugging Face model, clean or with one layer's attention output edited per row,
    reading each row's neuron (and token probability) at its last position. Edited passes resume at the edited
    layer from the clean pass's cached stream (``resume``; without it they run from the embedding: the
    reference the benchmark and the tests compare with)."""

    def __init__(self, arch: Architecture, resume: bool = True):
        self.arch = arch
        self.device = arch.device
        self.blocks = Resume.blocks_of(arch.first_block)
        self.resume = resume
        self.n_heads, self.d_head = arch.n_heads, arch.d_head

    @torch.no_grad()
    def run(
        self, tokens: torch.Tensor, lengths: torch.Tensor, read: np.ndarray, token_ids: np.ndarray | None,
        cache: tuple[int, ...] = (), start: tuple[int, torch.Tensor] | None = None, edit=None,
    ) -> Pass:
        """tokens ``[batch, pos]`` right-padded, lengths ``[batch]``; read ``[batch, 2]`` (layer, neuron);
        token_ids ``[batch]`` (None: the pass stops at the deepest neuron's layer, no probability). ``cache``:
        the layers whose input stream to keep; ``start``: (layer, cached stream ``[batch, pos, d_model]``) to
        resume at; ``edit``: a function of that layer's concatenated head outputs ``z`` ``[batch, pos,
        n_heads * d_head]`` (applied with or without resuming)."""
        arch, batch = self.arch, tokens.shape[0]
        at = torch.arange(batch, device=self.device)
        last = (lengths - 1).to(self.device)
        layers = sorted(set(read[:, 0].tolist()))
        wanted = {f"act{layer}": (arch.layers[layer].mlp_out, "input") for layer in layers}
        picks = {}
        for layer in cache:
            wanted[f"stream{layer}"] = block_input(self.blocks, layer)
            picks[f"stream{layer}"] = lambda value: value
        if token_ids is not None:
            wanted["final"] = (arch.final_norm.path, "output")
        edits = {arch.layers[start[0]].attn_out: edit} if edit is not None else None
        resume = Resume(self.blocks, start[0], start[1]) if start is not None and self.resume else None
        stop = None if token_ids is not None else f"act{max(layers)}"
        got = capture(arch.model, tokens, wanted, stop_after=stop, pick=lambda value: value[at, last], picks=picks, resume=resume, edits=edits)
        acts = torch.empty(batch, dtype=torch.float64)
        for layer in layers:
            rows = np.nonzero(read[:, 0] == layer)[0]
            acts[rows] = got[f"act{layer}"][torch.as_tensor(rows, device=self.device), torch.as_tensor(read[rows, 1], device=self.device)].double().cpu()
        probs = np.full(batch, np.nan)
        if token_ids is not None:
            logits = arch.logits(got["final"])  # soft-capped where the model caps them
            probs = torch.softmax(logits, dim=-1)[at, torch.as_tensor(token_ids, device=self.device)].double().cpu().numpy()
        return Pass(acts.numpy(), probs, {layer: got[f"stream{layer}"] for layer in cache})

    def zero_heads(self, layer: int, heads: np.ndarray):
        """The edit that zero-ablates head ``heads[r]`` on row r at every position: its z -> its value bias alone
        (see architecture.Layer.value_bias)."""
        mask = torch.ones(len(heads), self.n_heads, self.d_head)  # built on the host, moved once
        mask[torch.arange(len(heads)), torch.as_tensor(heads)] = 0.0
        mask = mask.reshape(len(heads), 1, -1).to(self.device)
        value_bias = self.arch.layers[layer].value_bias.to(self.device)
        return lambda z: z * mask + value_bias.to(z) * (1 - mask)


def ablate_pairs(
    intervener: Intervener, rows: pd.DataFrame, settings: AblationSettings, bos_id: int, pad_id: int, progress: Progress | None = None,
) -> pd.DataFrame:
    """rows: one per (pair, prompt): layer, neuron, doc_id, split, head_layer, head, active, prompt_token_ids,
    next_token_id. Each distinct (neuron, prompt) runs once clean, in batches of ``settings.batch_tokens``, and
    its rows' ablations resume from that pass, layer by layer. Returns ABLATION_COLUMNS."""
    rows = rows.reset_index(drop=True)
    keys = ["layer", "neuron", "doc_id"]
    clean_keys = rows.drop_duplicates(keys)[[*keys, "prompt_token_ids", "next_token_id"]].reset_index(drop=True)
    key_of_row = rows[keys].merge(clean_keys[keys].reset_index(), on=keys, how="left")["index"].to_numpy()
    prompts = [np.concatenate([[bos_id], np.asarray(ids, dtype=np.int64)]) for ids in clean_keys["prompt_token_ids"]]
    read = clean_keys[["layer", "neuron"]].to_numpy().astype(np.int64)
    token_ids = clean_keys["next_token_id"].to_numpy().astype(np.int64)
    clean_act, clean_prob = np.empty(len(prompts)), np.empty(len(prompts))
    ablated_act, ablated_prob = np.empty(len(rows)), np.empty(len(rows))
    done, total = 0, len(prompts) + len(rows)
    head_layers = rows["head_layer"].to_numpy()
    for batch in pack_batches([len(p) for p in prompts], settings.batch_tokens):
        batch = np.asarray(batch)
        tokens, lengths = pad_right([prompts[i] for i in batch], pad_id)
        members = np.nonzero(np.isin(key_of_row, batch))[0]
        local = {int(k): b for b, k in enumerate(batch)}
        clean = intervener.run(tokens, lengths, read[batch], token_ids[batch], cache=tuple(sorted(set(head_layers[members].tolist()))))
        clean_act[batch], clean_prob[batch] = clean.acts, clean.probs
        for layer, stream in clean.streams.items():
            of_layer = members[head_layers[members] == layer]
            for chunk in np.array_split(of_layer, -(-len(of_layer) * tokens.shape[1] // settings.batch_tokens)):
                b = np.array([local[int(k)] for k in key_of_row[chunk]])
                edit = intervener.zero_heads(layer, rows["head"].to_numpy()[chunk])
                out = intervener.run(tokens[b], lengths[b], read[batch][b], token_ids[batch][b], start=(layer, stream[b]), edit=edit)
                ablated_act[chunk], ablated_prob[chunk] = out.acts, out.probs
        done += len(batch) + len(members)
        if progress:
            progress("ablate", done, total)
    out = rows[["layer", "neuron", "doc_id", "split", "head_layer", "head", "active"]].assign(
        ablated_act=ablated_act, ablated_prob=ablated_prob, clean_act=clean_act[key_of_row], clean_prob=clean_prob[key_of_row],
    )
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
