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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--database", type=Path, default=Path("data/lookups.duckdb"))
    args = parser.parse_args()

    from lookups.pipeline.inputs import architecture, checkpoints, models
    from lookups.pipeline.store.store import Store

    if not args.database.exists():
        raise SystemExit(f"No results at {args.database}: run `make demo` first.")
    store = Store(args.database)
    latest = store.query("SELECT model_id, prompt_set_id FROM head_lookups LIMIT 1")
    if not len(latest):
        raise SystemExit(f"No look-ups in {args.database}: run `make demo` first.")
    keys = latest.iloc[0].to_dict()
    pairs = store.read("lookup_prompts", **keys)[["cohort", "layer", "neuron", "head_layer", "head"]].drop_duplicates()
    pairs = pairs.sample(n=min(args.pairs, len(pairs)), random_state=0)
    recorded = store.query("SELECT name, bos_token_id FROM models WHERE model_id = ?", [keys["model_id"]]).iloc[0]
    local_dir = str(checkpoints.resolve_model(recorded["name"]).local_dir)
    bos = int(recorded["bos_token_id"])
    arch = architecture.load_architecture(local_dir, "cpu")
    pad = models.pad_token_id(models.load_bridge(local_dir, "cpu").tokenizer, bos)
    print(f"{keys['model_id']} / {keys['prompt_set_id']}: {len(pairs)} pairs")
    ablation_resumed_against_full(store, keys, pairs, arch, bos, pad)


if __name__ == "__main__":
    main()
