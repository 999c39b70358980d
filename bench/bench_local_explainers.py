"""Local explainer comparison (a script, not a test): every scorer's figures with CIs, and time per pair, for
each local model and explain template.

On the same explained pairs of one store (the pairs in its ``explanations`` table, strongest first by mean
attribution, at most ``--max-pairs`` per cohort), each local instruct model explains every pair with each
template and scores the explanations with the pipeline's functions (``explain_pairs``, ``Judge``,
``score_explanations``, ``significance.explanation_tests``) and the default settings: detection (E, calibrated
E, AUC), embedding (AUC, calibrated E) and simulation (correlation). Each run gets a fresh in-memory call ledger:
no answer is reused from the store's ``llm_calls`` or from another run, and nothing is written to the store.
Per run and measure it prints the next-token mean [95% CI], the random-neuron mean [CI], their difference [CI]
with its permutation p, the shuffled baseline, and seconds per pair (explain + score, the model's load
excluded). The no-LLM references (contrastive, look-up), scored by the first run's judge, are printed for scale.

Usage: python bench/bench_local_explainers.py [--database data/lookups.duckdb] [--max-pairs 8]
       [--models smollm2-135m-instruct qwen2.5-coder-1.5b-instruct] [--templates explain.v2 explain.v3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import pandas as pd


class MemoryCallLog:
    """The ``CallLog`` a ``CallLedger`` needs, in memory: nothing cached, nothing written to the store."""

    def __init__(self):
        self.calls: list[pd.DataFrame] = []

    def read(self, name: str, **params) -> pd.DataFrame:
        if name == "llm_run_usage":
            return pd.DataFrame({"calls": [0], "tokens": [0]})
        if name == "llm_cached_answers":
            return pd.DataFrame(columns=["cache_key", "status", "response", "answer", "p_yes", "rating", "prompt_tokens", "completion_tokens"])
        raise KeyError(name)

    def append(self, table: str, frame: pd.DataFrame) -> None:
        self.calls.append(frame)


def explained_pairs(store, keys: dict, max_pairs: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(pairs, stored LLM explanations): the pairs the store's explanations step explained, at most
    ``max_pairs`` per cohort by mean attribution, and what its LLM explainer said about them."""
    from lookups.pipeline.llm.pairs import PAIR_KEYS

    stored = store.query("SELECT * FROM explanations WHERE model_id = ? AND prompt_set_id = ?", [keys["model_id"], keys["prompt_set_id"]])
    pairs = stored[["cohort", *PAIR_KEYS, "token"]].drop_duplicates()
    strength = store.read("consistent_pairs_with_tokens", **keys)[["cohort", *PAIR_KEYS, "mean_score"]]
    pairs = pairs.merge(strength, on=["cohort", *PAIR_KEYS], how="left").sort_values("mean_score", ascending=False)
    if max_pairs is not None:
        pairs = pairs.groupby("cohort", sort=False).head(max_pairs)
    pairs = pairs.sort_values(["cohort", *PAIR_KEYS]).reset_index(drop=True)
    return pairs, stored[stored["llm_model"].notna()]  # not the contrastive reference nor other non-LLM explainers


def pairs_as_the_step_builds_them(store, keys: dict, chosen: pd.DataFrame) -> list:
    """The explanations step's own Pair objects: prompts of both splits and, where this version of the step
    reads them, the heads' look-ups (templates such as explain.v2 mark them in the active prompts)."""
    import inspect

    from lookups.pipeline.steps.explanations import _pairs_with_prompts

    if "with_lookups" in inspect.signature(_pairs_with_prompts).parameters:
        return _pairs_with_prompts(store, keys, chosen, with_lookups=True)
    return _pairs_with_prompts(store, keys, chosen)


def progress(phase: str, done: int, total: int, detail: str = "") -> None:
    """Progress to stderr, about every tenth of a phase: a long model's run says where it is."""
    import sys

    if done == total or done % max(1, total // 10) == 0:
        print(f"{time.strftime('%H:%M:%S')} {phase}: {done}/{total} {detail}", file=sys.stderr, flush=True)


def run_model(name: str, template: str, pairs: list, keys: dict, torch_threads: int, shuffled: bool = True) -> dict:
    """Explain ``pairs`` with local model ``name`` and ``template``, then score every explanation by every scorer;
    the timings, the calls and the score and test rows."""
    import torch

    from lookups.pipeline.config import ExplanationSettings, ScoringSettings
    from lookups.pipeline.llm.backends import LocalBackend
    from lookups.pipeline.llm.embeddings import embedder
    from lookups.pipeline.llm.explain import explain_pairs
    from lookups.pipeline.llm.ledger import CallLedger
    from lookups.pipeline.llm.score import Judge, score_explanations
    from lookups.pipeline.llm.significance import explanation_tests
    from lookups.pipeline.llm.templates import load_template

    torch.set_num_threads(torch_threads)
    settings = ExplanationSettings(backend="local", local_model=name, explain_template=template)
    scoring = ScoringSettings(shuffled_baseline=shuffled)
    started = time.perf_counter()
    backend = LocalBackend(settings)  # resolves the model: dequantizes it the first time
    backend._load()
    setup = time.perf_counter() - started
    ledger = CallLedger(MemoryCallLog(), f"bench-{name}-{template}", None, None)

    started = time.perf_counter()
    explained = explain_pairs(pairs, keys["model_id"], keys["prompt_set_id"], settings, load_template(settings.explain_template), backend, ledger, progress)
    t_explain = time.perf_counter() - started
    started = time.perf_counter()
    judge = Judge(backend, load_template(settings.classify_template), load_template(settings.simulate_template), ledger, settings, keys["model_id"], progress)
    encoder = embedder()
    scores = score_explanations(explained, {p.key: p for p in pairs}, scoring, judge, lambda texts: dict(zip(texts, encoder.encode(texts))))
    t_score = time.perf_counter() - started
    del backend
    calls = pd.concat(ledger.store.calls, ignore_index=True) if ledger.store.calls else pd.DataFrame(columns=["purpose", "p_yes", "answer"])
    return {
        "name": name, "template": template, "explainer": judge_explainer(explained), "setup_s": setup, "explain_s": t_explain,
        "score_s": t_score, "calls": calls, "explanations": explained, "scores": scores, "tests": explanation_tests(scores),
    }


def judge_explainer(explained: pd.DataFrame) -> str | None:
    """The LLM explainer's name among the explanations (the others are the no-LLM references)."""
    names = explained.loc[explained["llm_model"].notna(), "explainer"].unique()
    return names[0] if len(names) else None


def _ci(mean, low, high) -> str:
    if mean is None or pd.isna(mean):
        return "-"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]" if pd.notna(low) else f"{mean:.3f}"


def summary_rows(tests: pd.DataFrame, explainer: str, label: str) -> list[dict]:
    """One row per scorer and measure: next-token mean [CI], random-neuron mean [CI], the difference [CI] and
    its permutation p, and the shuffled baseline's mean."""
    rows = []
    own = tests[tests["explainer"] == explainer]
    for (scorer, measure), group in own.groupby(["scorer", "measure"], sort=False):
        by = group.set_index("baseline")
        r = by.loc["random_neurons"] if "random_neurons" in by.index else None
        s = by.loc["shuffled"] if "shuffled" in by.index else None
        first = r if r is not None else s
        rows.append({
            "explainer": label, "scorer": scorer, "measure": measure,
            "next-token": _ci(first["mean"], first["ci_low"], first["ci_high"]) + f" n{first['n']}",
            "random": "-" if r is None else _ci(r["mean_baseline"], r["baseline_ci_low"], r["baseline_ci_high"]) + f" n{r['n_baseline']}",
            "nt - random": "-" if r is None else _ci(r["difference"], r["difference_ci_low"], r["difference_ci_high"]),
            "p (perm.)": "-" if r is None or pd.isna(r["permutation_p"]) else f"{r['permutation_p']:.3g}",
            "shuffled": "-" if s is None else _ci(s["mean_baseline"], s["baseline_ci_low"], s["baseline_ci_high"]),
            "p vs shuffled": "-" if s is None or pd.isna(s["permutation_p"]) else f"{s['permutation_p']:.3g}",
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", type=Path, default=None, help="the views file (default: data/lookups.duckdb)")
    parser.add_argument("--max-pairs", type=int, default=8, help="at most this many pairs per cohort (0: all)")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct"])
    parser.add_argument("--templates", nargs="+", default=["explain.v3"], help="explain templates, each run with every model")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--no-shuffled", action="store_true", help="skip the shuffled baseline (fewer LLM calls for a slow model)")
    parser.add_argument("--save", type=Path, default=None, help="also write each model's explanations and scores as CSV here")
    args = parser.parse_args()

    from lookups.pipeline.config import database_path
    from lookups.pipeline.llm.explain import CONTRASTIVE
    from lookups.pipeline.store.store import Store

    database = args.database or database_path()
    store = Store(database)
    latest = store.read("latest_keys").iloc[0]
    keys = {"model_id": latest["model_id"], "prompt_set_id": latest["prompt_set_id"]}
    chosen, stored = explained_pairs(store, keys, args.max_pairs or None)
    if not len(chosen):
        raise SystemExit(f"{database} has no explanations for {keys['model_id']} / {keys['prompt_set_id']}: materialize explanations first.")
    pairs = pairs_as_the_step_builds_them(store, keys, chosen)
    cohorts = chosen["cohort"].value_counts().to_dict()
    print(f"store: {database}  model: {keys['model_id']}  prompt set: {keys['prompt_set_id']}")
    shown = stored.merge(chosen, on=["cohort", "layer", "neuron", "head_layer", "head"])
    print(f"stored LLM explanations of these pairs: {len(shown)} ({', '.join(sorted(shown['explainer'].unique())) or 'none'})")
    print(f"pairs: {len(pairs)} ({cohorts.get('next_token', 0)} next-token, {cohorts.get('random', 0)} random; at most {args.max_pairs or 'all'} per cohort)")

    # The machine may be shared: the load average says whether the seconds per pair were measured alone.
    load_before = os.getloadavg()[0]
    results = [run_model(name, template, pairs, keys, args.threads, not args.no_shuffled) for name in args.models for template in args.templates]
    load_after = os.getloadavg()[0]

    rows, timing = [], {}
    for result in results:
        explainer, label = result["explainer"], f"{result['name']} {result['template']}"
        made = result["explanations"][result["explanations"]["explainer"] == explainer]
        rows += summary_rows(result["tests"], explainer, label)
        timing[label] = {
            "pairs": len(pairs), "explained ok": int((made["status"] == "ok").sum()), "flagged": int(made["status"].isin(["comparison"]).sum()),
            "LLM calls": len(result["calls"]), "s/pair": (result["explain_s"] + result["score_s"]) / len(pairs),
            "explain s": round(result["explain_s"], 1), "score s": round(result["score_s"], 1), "load s": round(result["setup_s"], 1),
        }
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            stem = f"{result['name']}.{result['template']}"
            result["explanations"].to_csv(args.save / f"{stem}.explanations.csv", index=False)
            result["scores"].to_csv(args.save / f"{stem}.scores.csv", index=False)
            result["tests"].to_csv(args.save / f"{stem}.tests.csv", index=False)
    for name in (CONTRASTIVE, "lookup"):
        rows += summary_rows(results[0]["tests"], name, f"{name} (reference)")
    pd.set_option("display.width", 250)
    print()
    print(pd.DataFrame(rows).to_string(index=False))
    print()
    print(pd.DataFrame(timing).T.to_string(formatters={"s/pair": "{:.1f}".format}))
    print(f"\nload average (1 min) at start {load_before:.2f}, at end {load_after:.2f}, on {os.cpu_count()} CPUs; torch threads {args.threads}")
    print("Means with bootstrap 95% CIs; nt - random: next-token minus random-neuron pairs, permutation p two-sided; shuffled: the\n"
          "next-token explanations scored on another pair's prompts (paired permutation p). Chance: 0.5 for E and AUC, 0 for correlation.")


if __name__ == "__main__":
    main()
