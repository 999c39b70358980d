"""The summary `lookups run` and `lookups summary` print: counts, the strongest neurons and pairs, where the
look-up heads lie, the ablation tests, E per explainer against the baselines, the models side by side when the
store holds several, and where everything is."""

from __future__ import annotations

import shlex

import pandas as pd

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import dagster_home_dir
from lookups.pipeline.inputs.corpora import printable


def _missing(value) -> bool:
    """None, NaN, NaT or pd.NA (a NULL from DuckDB, whatever the column's type); a list is not missing."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _num(value, fmt: str = ".3f") -> str:
    return "n/a" if _missing(value) else format(value, fmt)


def _tokens(value, limit: int) -> str:
    """A list of tokens from a query (a NULL list when nothing was read), shown quoted."""
    return ", ".join(repr(t) for t in ([] if _missing(value) else list(value))[:limit]) or "none"


def print_summary(store, model_id: str | None = None, prompt_set_id: str | None = None) -> None:
    """Print the summary of a model and prompt set (default: the latest) from ``store``'s named queries."""
    summary = store.named_query("summary_counts", model_id=model_id, prompt_set_id=prompt_set_id)
    if summary.empty:
        raise LookupsError("No model in the store yet: run `make demo` or `lookups run` first.")
    row = summary.iloc[0]
    print()
    print(f"model        {row.model_id}  ({row.n_layers} layers x {row.d_mlp} neurons, {row.mlp_kind} MLP)")
    print(f"prompt set   {row.prompt_set_id}  ({row.n_explain} explain + {row.n_heldout} held-out documents)")
    # Each corpus that built it, with its own counts (docs/data.md); a path is shown with its control characters escaped.
    for read in store.named_query("corpus_reads", prompt_set_id=row.prompt_set_id).itertuples():
        print(
            f"corpus       {printable(str(read.source))}  ({read.n_read} read, skipped {read.skipped_empty} empty, {read.skipped_undecodable} "
            f"undecodable, {read.skipped_malformed} malformed; {read.duplicates_dropped} duplicates dropped)"
        )
    tables = ("models", "neurons", "selected", "prompt_sets", "documents", "neuron_exemplars", "head_attributions", "consistent_pairs", "head_ablations")
    print("rows         " + ", ".join(f"{t}: {int(row[t]):,}" for t in tables))
    keys = {"model_id": row.model_id, "prompt_set_id": row.prompt_set_id}
    top = store.named_query("strongest_neurons", **keys, limit=5)
    print("\nstrongest next-token neurons")
    print(top.to_string(index=False))
    pairs = store.named_query("consistent_pairs", **keys, limit=8)
    if len(pairs):
        print("\nstrongest consistent (neuron, head) pairs")
        print(pairs.to_string(index=False))
        layers = store.named_query("heads_by_layer", **keys)
        layers = layers[layers["consistent_pairs"] > 0]
        print("\nconsistent pairs by head layer: " + ", ".join(f"L{r.head_layer}: {r.consistent_pairs}" for r in layers.itertuples()))
    else:
        print(
            "\nwarning      no consistent (neuron, head) pair: nothing to ablate or explain. Loosen head_neuron_scores' consistent_min/"
            "consistent_max, or give the neurons more exemplars (more documents, neuron_exemplars' act_ratio)."
        )
    tests = store.named_query("ablation", **keys)
    for t in tests.itertuples():
        print(
            f"ablation     {t.metric}: active {_num(t.mean_active, '.4g')} (n={_count(t.n_active)}) vs inactive {_num(t.mean_inactive, '.4g')} "
            f"(n={_count(t.n_inactive)}), KS {_num(t.ks)}, p {_p(t.p_value)}"
        )
    for r in store.named_query("lookup_summary", **keys).itertuples():
        cohort = "next-token pairs" if r.cohort == "next_token" else "random-baseline pairs"
        confirmed = (
            f"{_count(r.pairs_confirmed)}/{_count(r.pairs_tested)} confirmed ({_num(r.share_confirmed, '.0%')}, 5% FDR)"
            if not _missing(r.pairs_tested) else "not tested"
        )
        print(
            f"look-ups     {cohort}: {confirmed}; median concentration {_num(r.median_concentration, '.2f')}, reads BOS "
            f"{_num(r.bos_share, '.0%')}, previous token {_num(r.previous_token_share, '.0%')}, copying {_num(r.copying_share, '.0%')}; "
            f"read most: {_tokens(r.most_read_tokens, 6)}"
        )
    for r in store.named_query("why_summary", **keys).itertuples():
        cohort = "next-token pairs" if r.cohort == "next_token" else "random-baseline pairs"
        knockout = (
            f"knockout {_count(r.knockout_pairs_confirmed)}/{_count(r.knockout_pairs_tested)} confirmed ({_num(r.knockout_share_confirmed, '.0%')}; "
            f"untruncated {_num(r.untruncated_share_confirmed, '.0%')}; substitution {_num(r.substitution_share_confirmed, '.0%')})"
            if not _missing(r.knockout_pairs_tested) else "knockout not run"
        )
        why = (
            f"{_num(r.lexical_edges_share, '.0%')} of {_count(r.qk_edges)} looked-up edges lexical, query side mostly "
            f"{r.most_frequent_query_component}, key side mostly {r.most_frequent_key_component}"
            if not _missing(r.qk_edges) else "QK attribution not run"
        )
        print(f"why          {cohort}: {knockout}; {why}")
    print_explanation_findings(store.named_query("explanation_findings", **keys))
    print_comparison(store)
    print(f"\nresults      {store.path}")
    page = store.folder / "atlas" / f"{row.model_id.replace('@', '-')}__{row.prompt_set_id}.html"
    if page.exists():
        print(f"atlas        {page}  (open in a browser; no server needed)")
    print(f"dagster      {dagster_home_dir()}  (browse with `lookups ui` or `make ui`)")
    print("query        lookups query --list   (named queries),  lookups query \"SELECT * FROM consistent_pairs LIMIT 5\"")
    print(f"             duckdb -readonly {shlex.quote(str(store.path))} \"SELECT * FROM neurons WHERE selected LIMIT 5\"")


#: How the summary names each scorer's measure.
MEASURE_LABELS = {"auc": "AUC", "calibrated_e": "calibrated E", "e_score": "E", "correlation": "r"}


def print_explanation_findings(findings: pd.DataFrame) -> None:
    """Per explainer, one line per scorer and measure: the next-token pairs' mean and CI against the random
    neurons (the difference, its CI and permutation p) and against their own shuffled explanations; the ones that
    carry signal first (the query's order), marked."""
    by = {(f.explainer, f.scorer, f.measure, f.baseline): f for f in findings.itertuples()}
    current = None
    for f in findings.itertuples():
        if f.baseline != "random_neurons" or _missing(f.n) or not f.n:
            continue
        label = f"{f.scorer} {MEASURE_LABELS.get(f.measure, f.measure)}"
        line = (
            f"{label}: {_num(f.mean)} {_ci(f.ci_low, f.ci_high)} (n={f.n}) vs random neurons {_num(f.mean_baseline)} "
            f"(n={_count(f.n_baseline)}): {_difference(f)}"
        )
        shuffled = by.get((f.explainer, f.scorer, f.measure, "shuffled"))
        if shuffled is not None and not _missing(shuffled.n_baseline) and shuffled.n_baseline:
            line += f"; vs shuffled {_num(shuffled.mean_baseline)}: {_difference(shuffled)}"
        line += _signal_mark(bool(f.signal), shuffled is not None and bool(shuffled.signal))
        if f.explainer != current:
            print(f"explanations {f.explainer}:")
            current = f.explainer
        print(f"             {line}")


def _signal_mark(random: bool, shuffled: bool) -> str:
    """Which baselines the measure beats. Beating the random neurons alone can come from the prompts (a judge that
    ranks any next-token pair's active prompts higher, whatever the explanation says); beating the shuffled
    explanations too says the explanation itself carries it (docs/method.md, "Scoring explanations")."""
    if random and shuffled:
        return "  [signal: beats both baselines]"
    if random:
        return "  [beats random neurons, not shuffled explanations: not specific to the explanation]"
    if shuffled:
        return "  [beats shuffled explanations, not random neurons]"
    return ""


def _difference(f) -> str:
    """The difference of the means with its bootstrap CI and permutation p."""
    if _missing(f.difference):
        return "difference n/a"
    ci = "" if _missing(f.difference_ci_low) else f" [{f.difference_ci_low:+.3f}, {f.difference_ci_high:+.3f}]"
    return f"difference {f.difference:+.3f}{ci}, p {_p(f.permutation_p)}"


def _p(value) -> str:
    return _num(value, ".2g")


def _ci(low, high) -> str:
    """A bootstrap 95% CI, or n/a where it is undefined (fewer than two values)."""
    if _missing(low) or _missing(high):
        return "[95% CI n/a]"
    return f"[95% CI {low:.3f}, {high:.3f}]"


def _count(value) -> str:
    return "n/a" if _missing(value) else str(int(value))


def comparison_table(runs: pd.DataFrame, depths: pd.DataFrame) -> pd.DataFrame:
    """Models side by side: one column per (model, prompt set) of ``compare_models``, one row per measure
    (E once per explainer); ``depths`` are the ``heads_by_relative_depth`` rows."""
    columns, order = {}, []
    several = runs.groupby("model_id")["prompt_set_id"].nunique() > 1
    for (model_id, prompt_set_id), group in runs.groupby(["model_id", "prompt_set_id"], dropna=False, sort=True):
        r = group.iloc[0]
        depth = depths[(depths["model_id"] == model_id) & (depths["prompt_set_id"] == prompt_set_id)]
        cells = {
            "prompt set": "none yet" if pd.isna(prompt_set_id) else prompt_set_id,
            "layers": str(r.n_layers),
            "selected neurons": str(r.selected),
            "  predicting / suppressing": f"{r.predicting} / {r.suppressing}",
            "  tokens shared with another model": str(r.shared_tokens),
            "consistent pairs / heads": f"{r.consistent_pairs} / {r.consistent_heads}",
            "  mean head depth (layer / layers)": _num(r.mean_head_depth, ".2f"),
            "  pairs by head depth": ", ".join(f"{d.depth_from:.1f}: {d.consistent_pairs}" for d in depth.itertuples()) or "none",
        }
        for e in group.dropna(subset=["explainer"]).itertuples():
            cells[f"E {e.explainer}"] = f"{_num(e.mean_e)} (n={_count(e.n_scored)})"
            cells[f"  vs random neurons: E, p [{e.explainer}]"] = f"{_num(e.mean_e_random)}, {_p(e.p_random)}"
            cells[f"  vs shuffled: E, p [{e.explainer}]"] = f"{_num(e.mean_e_shuffled)}, {_p(e.p_shuffled)}"
            cells[f"  detection AUC [{e.explainer}]"] = _num(e.mean_auc)
            cells[f"  embedding AUC vs random, p [{e.explainer}]"] = f"{_num(e.embedding_auc)} vs {_num(e.embedding_auc_random)}, {_p(e.embedding_p_random)}"
            cells[f"  simulation r vs random, p [{e.explainer}]"] = f"{_num(e.simulation_r)} vs {_num(e.simulation_r_random)}, {_p(e.simulation_p_random)}"
        for metric in ("act_drop", "prob_drop"):
            ks, p = getattr(r, f"{metric}_ks"), getattr(r, f"{metric}_p")
            cells[f"ablation {metric}: KS, p"] = "n/a" if pd.isna(ks) else f"{ks:.3f}, {_p(p)}"
        columns[f"{model_id} / {prompt_set_id}" if several.get(model_id, False) else model_id] = cells
        order += [k for k in cells if k not in order]
    return pd.DataFrame(columns).reindex(order).fillna("n/a")


def print_comparison(store) -> None:
    """When the store holds more than one model: them side by side (``compare_models`` and
    ``heads_by_relative_depth``) and the next tokens their selected neurons share; nothing for one model."""
    runs = store.named_query("compare_models")
    if runs["model_id"].nunique() < 2:
        return
    table = comparison_table(runs, store.named_query("heads_by_relative_depth"))
    print(f"\nmodels side by side ({runs['model_id'].nunique()} models; lookups query compare_models)")
    with pd.option_context("display.max_colwidth", 60, "display.width", 250):
        print(table.to_string())
    examples = [[] if _missing(tokens) else list(tokens) for tokens in runs["shared_token_examples"]]
    shared = sorted({t for tokens in examples for t in tokens})
    if shared:
        more = any(not _missing(n) and n > len(tokens) for n, tokens in zip(runs["shared_tokens"], examples)) or len(shared) > 12
        print("shared next tokens " + ", ".join(repr(t) for t in shared[:12]) + ("  (all: FROM shared_next_tokens)" if more else ""))
    else:
        print("shared next tokens none: no token has selected next-token neurons in two models")
