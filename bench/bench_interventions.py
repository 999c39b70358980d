"""Intervention benchmark (a script, not a test): prints ratios measured in one run, on the same pairs.

1. Zero-ablation resumed at the head's layer from the clean pass's cached stream (what the ablation step does)
   against every ablated row run from the embedding (what it did before): time, and the largest difference.
2. The attention knockout's cost per pair (the looked-up edge and its two controls, on the truncated prompts and,
   by default, the untruncated windows) over the look-up step's on the same pairs.
3. The QK attribution of the same pairs' looked-up edges, over the look-up step's time.
4. The substitution test's variants run the cached way (each from its substituted position on, the earlier keys and
   values from the clean prompt's pass) against the full-sequence way: both times, the largest differences, the
   verdicts that change; and both against the rows the run stored, where it stored the pairs'.

Pairs: the consistent pairs of the latest run in the data folder (after `make demo` or `lookups run`), at most
``--pairs`` of them, both cohorts. ``--substitution`` runs part 4 only, on every pair the run's substitution test
stored (the default run's pairs).

Usage: python bench/bench_interventions.py [--pairs 30] [--substitution] [--database data/lookups.duckdb]
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


def substitution_cached_against_full(store, keys: dict, pairs, runtime) -> None:
    """The substitution test's variants of ``pairs`` (the step's substitutes, seed and settings) run cached and full."""
    from lookups.pipeline.config import InterventionSettings
    from lookups.pipeline.science import counterfactual

    settings = InterventionSettings()
    pair_keys = ["layer", "neuron", "head_layer", "head"]
    ids = [":".join(str(v) for v in p) for p in pairs[pair_keys].itertuples(index=False)]
    prompts = store.read("intervention_prompts", **keys, pairs=ids, all_pairs=False)
    substitutes = counterfactual.Substitutes.unigram(store.read("prompt_token_counts", **keys), runtime.special_ids())  # the default strategy
    variants = counterfactual.plan_variants(prompts, substitutes, settings.substitutes, settings.seed)
    arch, bos, pad = runtime.arch, runtime.bos_id, runtime.pad_id

    def run(path: str, part=variants):
        return counterfactual.run_interventions(arch, part, settings.model_copy(update={"path": path}), bos, pad)

    run("cached", variants.head(9)), run("full", variants.head(9))  # warm-up
    started = time.process_time()
    cached, cached_s = _timed(run, "cached")
    middle = time.process_time()
    full, full_s = _timed(run, "full")
    cached_cpu, full_cpu = middle - started, time.process_time() - middle
    sequences = variants["prompt_token_ids"].map(len) + 1
    changed = variants["site"] != "clean"
    print(f"substitution test: {len(variants):,} variants ({changed.sum():,} substituted) of {len(prompts):,} (pair, prompt) rows, "
          f"{len(pairs)} pairs; {sequences.sum():,} positions full, {(sequences - variants['position'])[changed].sum() + sequences[~changed].sum():,} cached")
    print(f"  full: {full_s:.2f} s; cached: {cached_s:.2f} s; cached / full: {cached_s / full_s:.2f} (saved {full_s - cached_s:.1f} s)")
    print(f"  CPU time (all threads; steadier than wall time on a shared machine): full {full_cpu:.1f} s, cached {cached_cpu:.1f} s, "
          f"cached / full {cached_cpu / full_cpu:.2f}")
    row_keys = [*counterfactual.PAIR, "doc_id", "site"]
    tests = {name: counterfactual.pair_tests(frame, settings.fdr).set_index(pair_keys) for name, frame in (("cached", cached), ("full", full))}
    for name, frame, reference in (("cached against full", cached, full), *_stored_pairs(store, keys, pairs, settings, cached, full, tests)):
        _differences(name, frame.merge(reference, on=row_keys, suffixes=("", "_ref")))


def _stored_pairs(store, keys: dict, pairs, settings, cached, full, tests) -> list:
    """(name, frame, stored rows) for the comparisons against the run's stored rows, on the pairs it stored; the
    verdicts of the stored tests against both ways' printed."""
    from lookups.pipeline.science import counterfactual

    pair_keys = ["layer", "neuron", "head_layer", "head"]
    stored = store.query("SELECT * FROM lookup_interventions WHERE model_id = ? AND prompt_set_id = ?", [keys["model_id"], keys["prompt_set_id"]],
                         require_results=False)
    stored = stored.merge(pairs[pair_keys].drop_duplicates())
    if not len(stored):
        print("  (the run stored none of these pairs' substitutions)")
        return []
    verdicts = counterfactual.pair_tests(stored, settings.fdr).set_index(pair_keys)["confirmed"]
    for name in ("cached", "full"):
        mine = tests[name]["confirmed"].reindex(verdicts.index)
        print(f"  stored verdicts against {name}: {int((mine != verdicts).sum())} of {len(verdicts)} pairs change "
              f"({int(verdicts.sum())} confirmed stored, {int(mine.sum())} {name})")
    changed = int((tests["cached"]["confirmed"] != tests["full"]["confirmed"]).sum())
    print(f"  cached against full verdicts: {changed} of {len(tests['full'])} pairs change")
    return [("cached against stored", cached, stored), ("full against stored", full, stored)]


def _differences(name: str, both) -> None:
    """The largest absolute difference of each compared value, and relative to max(1, |the clean value|) (absolute
    for the probabilities)."""
    parts = []
    for column, clean in (("substituted_act", "clean_act"), ("clean_act", "clean_act"), ("substituted_score", "clean_score"),
                          ("clean_score", "clean_score"), ("substituted_prob", None), ("clean_prob", None)):
        apart = (both[column] - both[f"{column}_ref"]).abs()
        scale = np.maximum(1.0, both[f"{clean}_ref"].abs()) if clean else 1.0
        parts.append(f"{column} {apart.max():.2g} (rel {(apart / scale).max():.2g})")
    print(f"  {name}, {len(both):,} rows, largest differences: " + "; ".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--substitution", action="store_true", help="only the substitution test, cached against full, on the run's stored pairs")
    parser.add_argument("--database", type=Path, default=Path("data/lookups.duckdb"))
    args = parser.parse_args()

    from latest_run import open_latest

    from lookups.pipeline.inputs.runtime import load_runtime

    store, keys, local_dir = open_latest(args.database)
    pair_columns = ["cohort", "layer", "neuron", "head_layer", "head"]
    runtime = load_runtime(local_dir, "cpu")
    if args.substitution:
        pairs = store.query(f"SELECT DISTINCT {', '.join(pair_columns)} FROM lookup_interventions WHERE model_id = ? AND prompt_set_id = ?",
                            [keys["model_id"], keys["prompt_set_id"]])
        print(f"{keys['model_id']} / {keys['prompt_set_id']}: the {len(pairs)} pairs of the run's substitution test")
        substitution_cached_against_full(store, keys, pairs, runtime)
        return
    pairs = store.read("lookup_prompts", **keys)[pair_columns].drop_duplicates()
    pairs = pairs.sample(n=min(args.pairs, len(pairs)), random_state=0)
    print(f"{keys['model_id']} / {keys['prompt_set_id']}: {len(pairs)} pairs")
    ablation_resumed_against_full(store, keys, pairs, runtime.arch, runtime.bos_id, runtime.pad_id)
    knockout_and_qk_against_lookups(store, keys, pairs, runtime)
    substitution_cached_against_full(store, keys, pairs, runtime)


if __name__ == "__main__":
    main()
