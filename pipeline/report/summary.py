"""The summary `lookups run` and `lookups summary` print: counts, the strongest neurons and pairs, where the
look-up heads lie, the ablation tests, E per explainer against the baselines, and where everything is."""

from __future__ import annotations

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.config import dagster_home_dir, data_dir, database_path
from lookups.pipeline.inputs.corpora import printable


def _num(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None or value != value else format(value, fmt)


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
            f"ablation     {t.metric}: active {t.mean_active:.4g} (n={t.n_active}) vs inactive {t.mean_inactive:.4g} (n={t.n_inactive}), "
            f"KS {t.ks:.3f}, p {t.p_value:.2g}"
        )
    findings = store.named_query("explanation_findings", **keys)
    for f in findings.itertuples():
        if f.n and f.baseline == "random_neurons":
            print(
                f"explanations {f.explainer}: mean E {f.mean_e:.3f} (n={f.n}) vs random neurons {_num(f.mean_baseline)} (n={f.n_baseline}), "
                f"Mann-Whitney p {_num(f.mw_p, '.2g')}"
            )
        elif f.n:
            print(f"             {f.explainer}: vs shuffled explanations {_num(f.mean_baseline)} (n={f.n_baseline}), Mann-Whitney p {_num(f.mw_p, '.2g')}")
    print(f"\nresults      {database_path()}")
    page = data_dir() / "atlas" / f"{row.model_id.replace('@', '-')}__{row.prompt_set_id}.html"
    if page.exists():
        print(f"atlas        {page}  (open in a browser; no server needed)")
    print(f"dagster      {dagster_home_dir()}  (browse with `lookups ui` or `make ui`)")
    print("query        lookups query --list   (named queries),  lookups query \"SELECT * FROM consistent_pairs LIMIT 5\"")
    print(f"             duckdb -readonly {database_path()} \"SELECT * FROM neurons WHERE selected LIMIT 5\"")
