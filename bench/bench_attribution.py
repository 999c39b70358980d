"""Head-attribution benchmark (a script, not a test): prints ratios measured in one run.

1. Speed: batched attribution time per neuron divided into a one-prompt-at-a-time loop's time per neuron, on
   the same model (SmolLM2-135M) and the same prompts (target >= 5x). Both use the same code and the same
   filtered, last-position cache; the loop runs every prompt as its own forward pass.
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

    from lookups.pipeline import corpora, steps
    from lookups.pipeline.config import CorpusSettings, PromptSetSettings
    from lookups.pipeline.store import Store

    if database.exists():
        store = Store(database)
        rows = store.query(
            "WITH picked AS (SELECT DISTINCT model_id, prompt_set_id, layer, neuron FROM neuron_exemplars ORDER BY layer, neuron LIMIT ?) "
            "SELECT e.layer, e.neuron, e.doc_id, e.split, e.prompt_token_ids FROM neuron_exemplars e JOIN picked USING (model_id, prompt_set_id, layer, neuron)",
            [n_neurons],
        )
        if len(rows):
            return rows, f"stored exemplars of {rows.groupby(['layer', 'neuron']).ngroups} neurons in {database}"
    sources = pd.read_parquet(steps.run_corpus(CorpusSettings()).handle.parquet_path)
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


def attribution_share(database: Path) -> dict | None:
    from lookups.pipeline.store import Store

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
    args = parser.parse_args()

    from lookups.pipeline import attribution, models
    from lookups.pipeline.config import EMBEDDED_MODEL, AttributionSettings, database_path

    database = args.database or database_path()
    source = models.resolve_model(EMBEDDED_MODEL)
    bridge = models.load_bridge(source.local_dir)
    bos = models.model_facts(bridge).bos_token_id
    rows, origin = load_prompts(database, args.neurons, bridge)
    n_neurons = rows.groupby(["layer", "neuron"]).ngroups
    tokens = int(sum(len(ids) + 1 for ids in rows["prompt_token_ids"]))
    print(f"prompts: {len(rows)} ({tokens} tokens with BOS) from {origin}")

    attribution.attribute_exemplars(bridge, rows.head(8), bos, AttributionSettings())  # warm-up

    started = time.perf_counter()
    batched = attribution.attribute_exemplars(bridge, rows, bos, AttributionSettings())
    batched_seconds = time.perf_counter() - started

    started = time.perf_counter()
    for i in range(len(rows)):
        attribution.attribute_exemplars(bridge, rows.iloc[[i]], bos, AttributionSettings())
    loop_seconds = time.perf_counter() - started

    print(f"batched: {batched_seconds:.1f} s = {batched_seconds / n_neurons:.2f} s per neuron ({batched.stats['forward_batches']} forward passes, {tokens / batched_seconds:.0f} tok/s)")
    print(f"one prompt at a time: {loop_seconds:.1f} s = {loop_seconds / n_neurons:.2f} s per neuron ({len(rows)} forward passes)")
    print(f"speed-up, loop / batched per neuron: {loop_seconds / batched_seconds:.2f}x (target >= 5x)")
    print(f"identity: max relative error {batched.stats['identity_max_rel_error']:.2e}")
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
