"""Look-up benchmark (a script, not a test): prints ratios measured in one run.

1. The look-up step's time over the attribution step's time on the same pairs' prompts: attribution decomposes
   every candidate head of each exemplar; the look-up pass splits the consistent pairs' heads by source
   position (eager attention, values at every position). Both on the same model and prompts, timed here.
2. The counterfactual step's cost per pair: the looked-up and control positions replaced by ``--substitutes``
   tokens on each pair's active prompts, one forward per variant (batched).

Pairs: the consistent pairs of the latest run in the DuckDB file (after `make demo` or `lookups run`), at most
``--pairs`` of them, both cohorts.

Usage: python bench/bench_lookups.py [--pairs 20] [--substitutes 4] [--database data/lookups.duckdb]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--substitutes", type=int, default=4)
    parser.add_argument("--database", type=Path, default=Path("data/lookups.duckdb"))
    args = parser.parse_args()

    from latest_run import open_latest

    from lookups.pipeline.config import AttributionSettings, InterventionSettings, LookupSettings
    from lookups.pipeline.inputs import architecture, models
    from lookups.pipeline.science import attribution, counterfactual, head_reads

    store, keys, local_dir = open_latest(args.database)
    rows = store.read("lookup_prompts", **keys)
    pairs = rows[["cohort", "layer", "neuron", "head_layer", "head"]].drop_duplicates().head(args.pairs)
    rows = rows.merge(pairs, on=list(pairs.columns))
    exemplars = rows[["layer", "neuron", "doc_id", "split", "prompt_token_ids"]].drop_duplicates(["layer", "neuron", "doc_id"])
    bos = int(store.query("SELECT bos_token_id FROM models WHERE model_id = ?", [keys["model_id"]]).iloc[0, 0])
    arch = architecture.load_architecture(local_dir, "cpu")
    tokenizer = models.load_bridge(local_dir, "cpu").tokenizer
    pad = models.pad_token_id(tokenizer, bos)
    print(f"{keys['model_id']} / {keys['prompt_set_id']}: {len(pairs)} pairs, {len(rows)} (pair, prompt) rows, {len(exemplars)} exemplars")

    attribution.attribute_exemplars(arch, exemplars.head(4), bos, AttributionSettings())  # warm-up
    started = time.perf_counter()
    attributed = attribution.attribute_exemplars(arch, exemplars, bos, AttributionSettings(), pad_id=pad)
    attribution_s = time.perf_counter() - started
    started = time.perf_counter()
    looked_up = head_reads.head_lookups(arch, rows, LookupSettings(), bos, pad)
    lookup_s = time.perf_counter() - started
    print(f"attribution of the pairs' exemplars (every candidate head): {attribution_s:.2f} s ({len(attributed.heads):,} head rows)")
    print(f"look-ups of the pairs (every source position):              {lookup_s:.2f} s ({len(looked_up.rows):,} position rows)")
    print(f"look-up / attribution time: {lookup_s / attribution_s:.2f}  (largest identity error {looked_up.stats['identity_max_rel_error']:.2g})")

    frame = looked_up.rows
    top = frame[frame["active"] & (frame["position"] > 0)].sort_values("contribution", ascending=False)
    top = top.groupby(["layer", "neuron", "head_layer", "head", "doc_id"]).head(1).rename(columns={"position": "lookup_position"})
    prompts = top.merge(
        store.query("SELECT layer, neuron, doc_id, prompt_token_ids, next_token_id FROM neuron_exemplars WHERE model_id = ? AND prompt_set_id = ?",
                    [keys["model_id"], keys["prompt_set_id"]]),
        on=["layer", "neuron", "doc_id"],
    )
    special = {bos, *map(int, tokenizer.all_special_ids)}
    substitutes = counterfactual.Substitutes.unigram(store.read("prompt_token_counts", **keys), special)
    variants = counterfactual.plan_variants(prompts, substitutes, args.substitutes, 0)
    started = time.perf_counter()
    interventions = counterfactual.run_interventions(arch, variants, InterventionSettings(), bos, pad)
    counterfactual_s = time.perf_counter() - started
    tests = counterfactual.pair_tests(interventions, 0.05)
    print(f"counterfactual: {len(variants):,} variants of {len(prompts)} active prompts in {counterfactual_s:.2f} s: "
          f"{counterfactual_s / max(1, len(tests)):.2f} s per pair ({len(tests)} pairs, {args.substitutes} substitutes per position)")


if __name__ == "__main__":
    main()
