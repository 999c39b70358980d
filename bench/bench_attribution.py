"""Head-attribution benchmark (a script, not a test): prints ratios measured in one run.

1. Speed: batched attribution time per neuron divided into one-prompt-at-a-time loops' time per neuron, on
   the same model (SmolLM2-135M) and the same prompts (target >= 5x). Two loops:
   - the notebook way (the paper's): per prompt, ``run_with_cache`` with the full cache, then
     ``get_full_resid_decomposition(pos_slice=-1)`` projected on the neuron's input weights;
   - the pipeline's own code given one prompt per batch (filtered cache, last position only): the stricter
     baseline, which isolates what batching alone buys.
2. Share: the attribution step's time as a share of the whole materialization, read from the run statistics
   the pipeline stores (after `make demo` or `lookups run`).

Prompts: the stored exemplars of the latest run in the DuckDB file when there are any, else prompts cut from
the embedded corpus with the same length spread (3-40 tokens).

Usage: python bench/bench_attribution.py [--neurons 6] [--database data/lookups.duckdb]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def load_prompts(database: Path, n_neurons: int, bridge):
    import numpy as np
    import pandas as pd

    from lookups.pipeline import steps
    from lookups.pipeline.config import CorpusSettings, PromptSetSettings
    from lookups.pipeline.inputs import corpora
    from lookups.pipeline.store.store import Store

    if database.exists():
        store = Store(database)
        rows = store.query(
            "WITH picked AS (SELECT DISTINCT model_id, prompt_set_id, layer, neuron FROM neuron_exemplars ORDER BY layer, neuron LIMIT ?) "
            "SELECT e.layer, e.neuron, e.doc_id, e.split, e.prompt_token_ids FROM neuron_exemplars e "
            "JOIN picked USING (model_id, prompt_set_id, layer, neuron)",
            [n_neurons],
        )
        if len(rows):
            return rows, f"stored exemplars of {rows.groupby(['layer', 'neuron']).ngroups} neurons in {database}"
    sources = pd.read_parquet(steps.run_corpus(CorpusSettings(), Store(database)).handle.parquet_path)
    docs = corpora.build_prompt_set(sources, PromptSetSettings(max_documents=200)).documents
    rng = np.random.default_rng(0)
    out = []
    for j in range(n_neurons):
        layer, neuron = 26 + j % 4, 100 * j
        for i in rng.choice(len(docs), 30, replace=False):
            ids = bridge.tokenizer(docs["text"].iloc[i], add_special_tokens=False)["input_ids"]
            n = int(rng.integers(3, 41))
            end = int(rng.integers(n, max(n + 1, len(ids))))
            out.append({"layer": layer, "neuron": neuron, "doc_id": f"{i}", "split": "explain", "prompt_token_ids": ids[end - n : end]})
    return pd.DataFrame(out), f"corpus prompts for {n_neurons} neurons (no stored exemplars at {database})"


def notebook_attribution(bridge, rows, bos: int) -> dict:
    """One prompt at a time, as a notebook does it: full cache, full decomposition at the last position.
    Returns each head's contribution to the up pre-activation, ``{(row, head_layer, head): value}``, to check
    the pipeline's (Hugging Face, architecture description) numbers against TransformerLens's."""
    import torch

    up_by_head = {}
    for i, row in enumerate(rows.itertuples()):
        tokens = torch.tensor([[bos] + list(row.prompt_token_ids)])
        with torch.no_grad():
            _, cache = bridge.run_with_cache(tokens)
            mlp = bridge.blocks[row.layer].mlp
            stack, labels = cache.get_full_resid_decomposition(
                layer=row.layer, mlp_input=True, apply_ln=True, expand_neurons=False, pos_slice=-1, return_labels=True
            )
            gate = stack[:, 0] @ mlp.W_gate[:, row.neuron]
            up = stack[:, 0] @ mlp.W_in[:, row.neuron]
            for label, value in zip(labels, up[:, 0].tolist() if up.dim() > 1 else up.tolist(), strict=True):
                if label.startswith("L") and "H" in label:
                    head_layer, head = label[1:].split("H")
                    up_by_head[(i, int(head_layer), int(head))] = value
            g = cache[f"blocks.{row.layer}.mlp.hook_pre"][0, -1, row.neuron]
            u = cache[f"blocks.{row.layer}.mlp.hook_pre_linear"][0, -1, row.neuron]
            slope = torch.sigmoid(g) * (1 + g * (1 - torch.sigmoid(g)))
            _ = slope * u * gate + torch.nn.functional.silu(g) * up
    return up_by_head


def attribution_share(database: Path) -> dict | None:
    from lookups.pipeline.store.store import Store

    if not database.exists():
        return None
    stats = Store(database).query("SELECT asset, scope, stats FROM asset_versions")
    attr = stats[stats["asset"] == "head_attributions"]
    if not len(attr):
        return None
    model_id, prompt_set_id = attr["scope"].iloc[0].split("/")
    seconds = {}
    for row in stats.itertuples():
        if row.scope in (model_id, prompt_set_id, f"{model_id}/{prompt_set_id}"):
            seconds[row.asset] = float(json.loads(row.stats or "{}").get("seconds") or 0.0)
    return {"attribution_seconds": seconds["head_attributions"], "run_seconds": sum(seconds.values()), "per_asset": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--neurons", type=int, default=6)
    parser.add_argument("--database", type=Path, default=None)
    parser.add_argument("--batch-tokens", type=int, default=None, help="attribution batch size in tokens (default: the pipeline's)")
    args = parser.parse_args()

    from lookups.pipeline.config import EMBEDDED_MODEL, AttributionSettings, database_path
    from lookups.pipeline.inputs import architecture, checkpoints, models
    from lookups.pipeline.science import attribution

    database = args.database or database_path()
    source = checkpoints.resolve_model(EMBEDDED_MODEL)
    bridge = models.load_bridge(source.local_dir)
    arch = architecture.load_architecture(source.local_dir)
    bos = models.model_facts(bridge).bos_token_id
    rows, origin = load_prompts(database, args.neurons, bridge)
    n_neurons = rows.groupby(["layer", "neuron"]).ngroups
    tokens = int(sum(len(ids) + 1 for ids in rows["prompt_token_ids"]))
    print(f"prompts: {len(rows)} ({tokens} tokens with BOS) from {origin}")

    settings = AttributionSettings(**({"batch_tokens": args.batch_tokens} if args.batch_tokens else {}))
    attribution.attribute_exemplars(arch, rows.head(8), bos, settings)  # warm-up

    started = time.perf_counter()
    batched = attribution.attribute_exemplars(arch, rows, bos, settings)
    batched_seconds = time.perf_counter() - started

    started = time.perf_counter()
    notebook = notebook_attribution(bridge, rows, bos)
    notebook_seconds = time.perf_counter() - started
    row_of = {(r.layer, r.neuron, r.doc_id): i for i, r in enumerate(rows.reset_index(drop=True).itertuples())}
    agreement = max(
        abs(h.in_contribution - notebook[(row_of[(h.layer, h.neuron, h.doc_id)], h.head_layer, h.head)]) for h in batched.heads.itertuples()
    )

    started = time.perf_counter()
    for i in range(len(rows)):
        attribution.attribute_exemplars(arch, rows.iloc[[i]], bos, settings)
    loop_seconds = time.perf_counter() - started

    def per_neuron(seconds):
        return f"{seconds:.1f} s = {seconds / n_neurons:.2f} s per neuron"

    print(f"batched ({settings.batch_tokens} tokens per batch): {per_neuron(batched_seconds)} "
          f"({batched.stats['forward_batches']} forward passes, {tokens / batched_seconds:.0f} tok/s)")
    print(f"one prompt at a time, the notebook way (full cache): {per_neuron(notebook_seconds)} ({len(rows)} forward passes)")
    print(f"one prompt at a time, the pipeline's code: {per_neuron(loop_seconds)} ({len(rows)} forward passes)")
    print(f"speed-up per neuron, notebook loop / batched: {notebook_seconds / batched_seconds:.2f}x (target >= 5x)")
    print(f"speed-up per neuron, pipeline code one at a time / batched: {loop_seconds / batched_seconds:.2f}x (batching alone)")
    print(f"identity: max relative error {batched.stats['identity_max_rel_error']:.2e}")
    print(f"agreement with TransformerLens's decomposition: max |difference| of a head's up contribution {agreement:.2e}")
    share = attribution_share(database)
    if share:
        print(
            f"attribution share of the stored run: {share['attribution_seconds']:.0f} s of {share['run_seconds']:.0f} s = "
            f"{share['attribution_seconds'] / max(share['run_seconds'], 1e-9):.1%} (per asset: "
            + ", ".join(f"{k} {v:.0f} s" for k, v in share["per_asset"].items())
            + ")"
        )
    else:
        print("attribution share: no stored run with head_attributions yet (run `make demo` first)")


if __name__ == "__main__":
    main()
