"""Intervention benchmark (a script, not a test): prints ratios measured in one run, on the same pairs.

1. Zero-ablation resumed at the head's layer from the clean pass's cached stream (what the ablation step does)
   against every ablated row run from the embedding (what it did before): time, and the largest difference.
2. The attention knockout's cost per pair (the looked-up edge and its two controls, on the truncated prompts and,
   by default, the untruncated windows) over the look-up step's on the same pairs.
3. The QK attribution of the same pairs' looked-up edges, over the look-up step's time.

Pairs: the consistent pairs of the latest run in the data folder (after `make demo` or `lookups run`), at most
``--pairs`` of them, both cohorts.

Usage: python bench/bench_interventions.py [--pairs 30] [--database data/lookups.duckdb]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def ablation_resumed_against_full(store, keys: dict, pairs, arch, bos: int, pad: int) -> None:
    from lookups.pipeline.config import AblationSettings
    from lookups.pipeline.science import ablation

    settings = AblationSettings()
    rows = store.read("ablation_prompts", **keys, splits=settings.splits).merge(pairs[["layer", "neuron", "head_layer", "head"]])
    ablation.ablate_pairs(ablation.Intervener(arch), rows.head(8), settings, bos, pad)  # warm-up
    resumed, resumed_s = _timed(ablation.ablate_pairs, ablation.Intervener(arch), rows, settings, bos, pad)
    full, full_s = _timed(ablation.ablate_pairs, ablation.Intervener(arch, resume=False), rows, settings, bos, pad)
    difference = float(np.max(np.abs(resumed["ablated_act"].to_numpy() - full["ablated_act"].to_numpy()))) if len(rows) else 0.0
    layers = rows["head_layer"].to_numpy()
    print(f"ablation: {len(rows):,} (pair, prompt) rows, head layers {layers.min()}-{layers.max()} (median {np.median(layers):g}) of {len(arch.layers)}")
    print(f"  from the embedding: {full_s:.2f} s; resumed at the head's layer: {resumed_s:.2f} s; resumed / full: {resumed_s / full_s:.2f}"
          f"  (largest activation difference {difference:.2g})")


def knockout_and_qk_against_lookups(store, keys: dict, pairs, runtime) -> None:
    """The look-up step, the knockout (truncated, then untruncated windows) and the QK attribution on the same pairs."""
    from lookups.pipeline.config import KnockoutSettings, LookupSettings, QKSettings
    from lookups.pipeline.science import exemplars, head_reads, knockout, qk_attribution

    arch, bos, pad = runtime.arch, runtime.bos_id, runtime.pad_id
    pair_keys = ["layer", "neuron", "head_layer", "head"]
    rows = store.read("lookup_prompts", **keys).merge(pairs[pair_keys])
    ids = [":".join(str(v) for v in p) for p in pairs[pair_keys].itertuples(index=False)]
    prompts = store.read("intervention_prompts", **keys, pairs=ids, all_pairs=False)
    documents = store.read("prompt_set_documents", prompt_set_id=keys["prompt_set_id"])
    documents = documents[documents["doc_id"].isin(set(prompts["doc_id"]))]
    tokens = dict(zip(documents["doc_id"], exemplars.tokenize_documents(runtime.tokenizer, documents["text"].tolist())))
    windows = knockout.with_untruncated(prompts, tokens, KnockoutSettings().max_window_tokens)
    edges = store.read("qk_edges", **keys, pairs=ids, all_pairs=False, positions=QKSettings().positions)
    looked_up, lookup_s = _timed(head_reads.head_lookups, arch, rows, LookupSettings(), bos, pad)
    truncated, truncated_s = _timed(knockout.knock_out, arch, windows[windows["prompt_kind"] == "truncated"], KnockoutSettings(), bos, pad)
    untruncated, untruncated_s = _timed(knockout.knock_out, arch, windows[windows["prompt_kind"] == "untruncated"], KnockoutSettings(), bos, pad)
    qk, qk_s = _timed(qk_attribution.qk_attributions, arch, edges, QKSettings(), bos, pad)
    n = len(pairs)
    print(f"look-ups: {lookup_s:.2f} s for {n} pairs ({len(looked_up.rows):,} position rows): {lookup_s / n:.2f} s per pair")
    for name, frame, seconds in (("truncated", truncated, truncated_s), ("untruncated", untruncated, untruncated_s)):
        print(f"knockout, {name}: {seconds:.2f} s ({len(frame):,} knockouts): {seconds / n:.2f} s per pair, {seconds / lookup_s:.2f} x the look-ups")
    print(f"QK attribution: {qk_s:.2f} s for {qk.stats['edges']:,} edges: {qk_s / lookup_s:.2f} x the look-ups "
          f"(identity {qk.stats['identity_max_rel_error']:.2g})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--database", type=Path, default=Path("data/lookups.duckdb"))
    args = parser.parse_args()

    from latest_run import open_latest

    from lookups.pipeline.inputs.runtime import load_runtime

    store, keys, local_dir = open_latest(args.database)
    pairs = store.read("lookup_prompts", **keys)[["cohort", "layer", "neuron", "head_layer", "head"]].drop_duplicates()
    pairs = pairs.sample(n=min(args.pairs, len(pairs)), random_state=0)
    runtime = load_runtime(local_dir, "cpu")
    print(f"{keys['model_id']} / {keys['prompt_set_id']}: {len(pairs)} pairs")
    ablation_resumed_against_full(store, keys, pairs, runtime.arch, runtime.bos_id, runtime.pad_id)
    knockout_and_qk_against_lookups(store, keys, pairs, runtime)


if __name__ == "__main__":
    main()
