"""Local explainer comparison (a script, not a test): prints E, AUC and time per pair for each local model.

On the same explained pairs of one store (the pairs in its ``explanations`` table, strongest first by mean
attribution, at most ``--max-pairs`` per cohort), each local instruct model explains every pair and scores
its own explanations on the held-out prompts, with the pipeline's functions (``explain_pairs``,
``score_explanations``, ``explanation_tests``), the default templates and settings. Each model gets a fresh
in-memory call ledger: no answer is reused from the store's ``llm_calls`` or from another model, and nothing
is written to the store. Per model it prints mean E of the next-token cohort, of the random-neuron cohort and
of the shuffled baseline, the mean AUC, the number of pairs, and seconds per pair (explain + score, the
model's load excluded). The contrastive reference (no LLM) is printed once for scale.

Usage: python bench/bench_local_explainers.py [--database data/lookups.duckdb] [--max-pairs 20]
       [--models smollm2-135m-instruct qwen2.5-coder-0.5b-instruct]
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
            return pd.DataFrame(columns=["cache_key", "status", "response", "answer", "p_yes", "prompt_tokens", "completion_tokens"])
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


def run_model(name: str, pairs: list, keys: dict, torch_threads: int) -> dict:
    """Explain and score ``pairs`` with local model ``name``; the timings and the test rows."""
    import torch

    from lookups.pipeline.config import ExplanationSettings, ScoringSettings
    from lookups.pipeline.llm.backends import LocalBackend
    from lookups.pipeline.llm.explain import CONTRASTIVE, explain_pairs
    from lookups.pipeline.llm.ledger import CallLedger
    from lookups.pipeline.llm.score import explanation_tests, score_explanations
    from lookups.pipeline.llm.templates import load_template

    torch.set_num_threads(torch_threads)
    settings = ExplanationSettings(backend="local", local_model=name)
    scoring = ScoringSettings()
    started = time.perf_counter()
    backend = LocalBackend(settings)  # resolves the model: dequantizes it the first time
    backend._load()
    setup = time.perf_counter() - started
    ledger = CallLedger(MemoryCallLog(), f"bench-{name}", None, None)

    started = time.perf_counter()
    explained = explain_pairs(pairs, keys["model_id"], keys["prompt_set_id"], settings, load_template(settings.explain_template), backend, ledger)
    t_explain = time.perf_counter() - started
    explainer = backend.explainer
    explained = explained[explained["explainer"].isin([CONTRASTIVE, explainer])]  # this model and the reference only
    started = time.perf_counter()
    by_key = {p.key: p for p in pairs}
    scores = score_explanations(
        explained, by_key, keys["model_id"], settings, scoring, load_template(settings.classify_template), backend, ledger
    )
    t_score = time.perf_counter() - started
    del backend
    calls = pd.concat(ledger.store.calls, ignore_index=True) if ledger.store.calls else pd.DataFrame(columns=["purpose", "p_yes", "answer"])
    return {
        "name": name, "explainer": explainer, "setup_s": setup, "explain_s": t_explain, "score_s": t_score, "calls": calls,
        "explanations": explained, "scores": scores, "tests": explanation_tests(scores),
    }


def _mean_auc(scores: pd.DataFrame, cohort: str, baseline: str) -> float | None:
    auc = scores[(scores["cohort"] == cohort) & (scores["baseline"] == baseline) & (scores["status"] == "scored")]["auc"].dropna()
    return float(auc.mean()) if len(auc) else None


def summary_row(tests: pd.DataFrame, scores: pd.DataFrame, explainer: str) -> dict:
    own = tests[tests["explainer"] == explainer].set_index("baseline")
    mine = scores[scores["explainer"] == explainer]

    def get(baseline: str, column: str):
        return own.at[baseline, column] if baseline in own.index else None

    return {
        "E next-token": get("random_neurons", "mean_e"),
        "E random": get("random_neurons", "mean_baseline"),
        "E shuffled": get("shuffled", "mean_baseline"),
        "AUC next-token": get("random_neurons", "mean_auc"),
        "AUC random": _mean_auc(mine, "random", "none"),
        "AUC shuffled": _mean_auc(mine, "next_token", "shuffled"),
        "p vs random": get("random_neurons", "mw_p"),
        "p vs shuffled": get("shuffled", "mw_p"),
        "scored nt/rnd": f"{get('random_neurons', 'n') or 0}/{get('random_neurons', 'n_baseline') or 0}",
        "not scored": int(((mine["status"] != "scored") & (mine["baseline"] == "none")).sum()),
    }


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", type=Path, default=None, help="the views file (default: data/lookups.duckdb)")
    parser.add_argument("--max-pairs", type=int, default=20, help="at most this many pairs per cohort (0: all)")
    parser.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
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
    results = [run_model(name, pairs, keys, args.threads) for name in args.models]
    load_after = os.getloadavg()[0]

    rows = {}
    for result in results:
        explainer = result["explainer"]
        made = result["explanations"][result["explanations"]["explainer"] == explainer]
        per_pair = (result["explain_s"] + result["score_s"]) / len(pairs)
        classify = result["calls"][result["calls"]["purpose"] == "classify"]
        rows[result["name"]] = {
            **summary_row(result["tests"], result["scores"], explainer),
            "pairs": len(pairs), "explained ok": int((made["status"] == "ok").sum()), "LLM calls": len(result["calls"]),
            "P(Yes) mean": float(classify["p_yes"].mean()), "P(Yes) sd": float(classify["p_yes"].std()),
            "Yes share": float(classify["answer"].astype(float).mean()),
            "s/pair": per_pair, "explain s": result["explain_s"], "score s": result["score_s"], "load s": result["setup_s"],
        }
        again = stored.merge(made, on=["cohort", "layer", "neuron", "head_layer", "head"], suffixes=("_stored", ""))
        again = again[again["llm_model"] == again["llm_model_stored"]]
        if len(again):  # the store's own explainer: greedy decoding should give its stored explanations back
            same = int((again["explanation"] == again["explanation_stored"]).sum())
            print(f"{result['name']}: {same}/{len(again)} explanations identical to the ones in the store")
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            result["explanations"].to_csv(args.save / f"{result['name']}.explanations.csv", index=False)
            result["scores"].to_csv(args.save / f"{result['name']}.scores.csv", index=False)
    first = results[0]
    rows["contrastive (reference)"] = {**summary_row(first["tests"], first["scores"], CONTRASTIVE), "pairs": len(pairs)}
    table = pd.DataFrame(rows).T
    print()
    print(table.to_string(formatters={c: _fmt for c in table.columns}))
    print(f"\nload average (1 min) at start {load_before:.2f}, at end {load_after:.2f}, on {os.cpu_count()} CPUs; torch threads {args.threads}")
    print("E: balanced accuracy on the held-out prompts (0.5 is chance). E random: the random-neuron cohort; E shuffled: "
          "next-token explanations scored on another pair's prompts; AUC: over P(Yes), each cohort's mean; p: two-sided Mann-Whitney U\n"
          "of next-token E against each baseline. P(Yes) and Yes share: over every classify call of the model.")


if __name__ == "__main__":
    main()
