"""The pipeline's steps as plain functions over the store, one per Dagster asset.

Each step derives a data version from its code version, its settings and its inputs' versions. When the
store already holds that version for the step's key, the step returns at once: no model load, no forward
pass. Otherwise it computes, and writes its rows and its version in one transaction.
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from . import ablation, atlas, attribution, corpora, exemplars, explainers, explanations, files, models, scores
from . import catalog as catalog_mod
from .config import (
    AblationSettings,
    AtlasSettings,
    AttributionSettings,
    CatalogSettings,
    CorpusSettings,
    ExemplarSettings,
    ExplanationSettings,
    HeadScoreSettings,
    ModelSettings,
    PromptSetSettings,
    ScoringSettings,
    data_dir,
)
from .store import AssetVersion, Store, stable_hash

#: Bump an entry when its step's algorithm changes: that step and everything after it recompute.
CODE_VERSIONS = {
    "model": "1",
    "neuron_catalog": "2",  # 2: random baseline neurons of the selected layers
    "corpus": "2",  # 2: paragraphs with markup the parser left as text are dropped
    "prompt_set": "1",
    "neuron_exemplars": "2",  # 2: documents whose max activation is not positive are not exemplars
    "head_attributions": "1",
    "head_neuron_scores": "2",  # 2: cohort column (next-token vs random baseline neurons)
    "head_ablations": "1",
    "atlas_report": "2",  # 2: each pair's explanations and scores
    "explanations": "1",
    "explanation_scores": "1",
}

PhaseProgress = Callable[[str, int, int], None]


def asset_code_version(asset: str, explanation_settings: ExplanationSettings | None = None) -> str:
    """The code version Dagster sees: ``CODE_VERSIONS[asset]``, and for the LLM steps also the version (name
    and content hash) of the prompt template they use, so editing a template makes them stale."""
    base = CODE_VERSIONS[asset]
    settings = explanation_settings or ExplanationSettings()
    template = {"explanations": settings.explain_template, "explanation_scores": settings.classify_template}.get(asset)
    return f"{base}+{explainers.load_template(template).version}" if template else base


def version_hash(*parts) -> str:
    return stable_hash(*parts, length=16)


@dataclass(frozen=True)
class ModelHandle:
    model_id: str
    name: str
    local_dir: str
    device: str
    facts: dict
    data_version: str


@dataclass(frozen=True)
class CatalogHandle:
    model_id: str
    neurons_per_layer: int
    last_layers: int
    n_selected: int
    data_version: str


@dataclass(frozen=True)
class CorpusHandle:
    source: str
    parquet_path: str
    corpus_hash: str
    counts: dict
    data_version: str


@dataclass(frozen=True)
class PromptSetHandle:
    prompt_set_id: str
    counts: dict
    data_version: str


@dataclass(frozen=True)
class ExemplarsHandle:
    model_id: str
    prompt_set_id: str
    act_ratio: float
    max_prompt_tokens: int
    stats: dict
    data_version: str


@dataclass(frozen=True)
class AttributionsHandle:
    model_id: str
    prompt_set_id: str
    identity_tolerance: float
    stats: dict
    data_version: str


@dataclass(frozen=True)
class HeadScoresHandle:
    model_id: str
    prompt_set_id: str
    stats: dict
    data_version: str


@dataclass(frozen=True)
class AblationsHandle:
    model_id: str
    prompt_set_id: str
    stats: dict
    data_version: str


@dataclass(frozen=True)
class AtlasHandle:
    model_id: str
    prompt_set_id: str
    path: str
    stats: dict
    data_version: str


@dataclass(frozen=True)
class ExplanationsHandle:
    model_id: str
    prompt_set_id: str
    settings: dict  # ExplanationSettings as run (no endpoint, no key: those live in the environment only)
    explainers: tuple
    stats: dict
    data_version: str


@dataclass(frozen=True)
class ExplanationScoresHandle:
    model_id: str
    prompt_set_id: str
    figure_path: str | None
    stats: dict
    data_version: str


@dataclass
class StepResult:
    handle: object
    skipped: bool
    stats: dict = field(default_factory=dict)
    seconds: float = 0.0


def _skip(store: Store, asset: str, scope: str, data_version: str) -> AssetVersion | None:
    """The stored version when it matches and its run finished (a run stopped by its budget did not)."""
    found = store.version(asset, scope)
    return found if found and found.data_version == data_version and found.stats.get("complete", True) else None


# ---------------------------------------------------------------- model


def run_model(settings: ModelSettings, store: Store) -> StepResult:
    started = time.perf_counter()
    source = models.resolve_model(settings.name)
    data_version = version_hash(CODE_VERSIONS["model"], source.model_id)
    done = _skip(store, "model", source.model_id, data_version)
    if done:
        facts = done.stats["facts"]
    else:
        bridge = models.load_bridge(source.local_dir, settings.device)
        facts = models.model_facts(bridge).as_dict()
        row = pd.DataFrame([{"name": source.name, "origin": source.origin, "fingerprint": source.fingerprint, **facts}])
        store.replace("models", {"model_id": source.model_id}, row, AssetVersion("model", source.model_id, data_version, CODE_VERSIONS["model"], {"facts": facts}))
    handle = ModelHandle(source.model_id, source.name, source.local_dir, settings.device, facts, data_version)
    return StepResult(handle, bool(done), {"facts": facts, "origin": source.origin}, time.perf_counter() - started)


# ---------------------------------------------------------------- catalog


def run_catalog(model: ModelHandle, settings: CatalogSettings, store: Store) -> StepResult:
    started = time.perf_counter()
    per_layer = settings.resolved_neurons_per_layer(model.facts["d_mlp"])
    last_layers = settings.resolved_last_layers(model.facts["n_layers"])
    data_version = version_hash(CODE_VERSIONS["neuron_catalog"], model.data_version, settings.model_dump(), per_layer, last_layers)
    done = _skip(store, "neuron_catalog", model.model_id, data_version)
    if done:
        stats = done.stats
    else:
        bridge = models.load_bridge(model.local_dir, model.device)
        frame = catalog_mod.build_catalog(
            bridge, per_layer, last_layers, settings.min_token_chars, settings.deny_tokens, settings.top_tokens, settings.random_per_layer, settings.random_seed
        )
        stats = {
            "neurons": len(frame),
            "selected": int(frame["selected"].sum()),
            "random_baseline": int(frame["random_baseline"].sum()),
            "qualifying": int(frame["qualifies"].sum()),
            "seconds": time.perf_counter() - started,
        }
        store.replace("neurons", {"model_id": model.model_id}, frame, AssetVersion("neuron_catalog", model.model_id, data_version, CODE_VERSIONS["neuron_catalog"], stats))
    handle = CatalogHandle(model.model_id, per_layer, last_layers, stats["selected"], data_version)
    return StepResult(handle, bool(done), stats, time.perf_counter() - started)


# ---------------------------------------------------------------- corpus and prompt set


def run_corpus(settings: CorpusSettings) -> StepResult:
    """Read the source into a Parquet file of source documents (cached by the source's fingerprint)."""
    started = time.perf_counter()
    key = version_hash(CODE_VERSIONS["corpus"], settings.model_dump(), corpora.source_fingerprint(settings))
    folder = data_dir() / "corpora"
    path = folder / f"{key}.parquet"
    meta_path = folder / f"{key}.json"
    skipped = path.exists() and meta_path.exists()
    if skipped:
        meta = json.loads(meta_path.read_text())
    else:
        counts = corpora.ReadCounts()
        docs = pd.DataFrame([d.__dict__ for d in corpora.read_source(settings, counts)], columns=["source_id", "title", "text"])
        folder.mkdir(parents=True, exist_ok=True)
        staged = files.staging_path(path)
        docs.to_parquet(staged)
        os.replace(staged, path)
        meta = {"corpus_hash": corpora.corpus_content_hash(docs), "counts": counts.as_dict()}
        files.write_atomically(meta_path, json.dumps(meta))
    handle = CorpusHandle(settings.source, str(path), meta["corpus_hash"], meta["counts"], version_hash(CODE_VERSIONS["corpus"], meta["corpus_hash"]))
    return StepResult(handle, skipped, {"corpus_hash": meta["corpus_hash"], **meta["counts"]}, time.perf_counter() - started)


def run_prompt_set(corpus: CorpusHandle, settings: PromptSetSettings, store: Store) -> StepResult:
    started = time.perf_counter()
    sources = pd.read_parquet(corpus.parquet_path)
    prompt_set = corpora.build_prompt_set(sources, settings)
    data_version = version_hash(CODE_VERSIONS["prompt_set"], prompt_set.prompt_set_id)
    done = _skip(store, "prompt_set", prompt_set.prompt_set_id, data_version)
    stats = {**prompt_set.counts, **{f"skipped_{k}": v for k, v in corpus.counts.items() if k != "read"}}
    if not done:
        row = pd.DataFrame(
            [
                {
                    "source": corpus.source,
                    "corpus_hash": corpus.corpus_hash,
                    "settings": json.dumps(settings.model_dump()),
                    "n_documents": prompt_set.counts["documents"],
                    "n_explain": prompt_set.counts["explain"],
                    "n_heldout": prompt_set.counts["heldout"],
                    "source_documents": prompt_set.counts["source_documents"],
                    "duplicates_dropped": prompt_set.counts["duplicates_dropped"],
                    "beyond_slice": prompt_set.counts["beyond_slice"],
                    "skipped_empty": corpus.counts.get("empty", 0),
                    "skipped_undecodable": corpus.counts.get("undecodable", 0),
                    "skipped_malformed": corpus.counts.get("malformed", 0),
                }
            ]
        )
        keys = {"prompt_set_id": prompt_set.prompt_set_id}
        store.replace_many(
            [("prompt_sets", keys, row), ("documents", keys, prompt_set.documents)],
            AssetVersion("prompt_set", prompt_set.prompt_set_id, data_version, CODE_VERSIONS["prompt_set"], stats),
        )
    handle = PromptSetHandle(prompt_set.prompt_set_id, prompt_set.counts, data_version)
    return StepResult(handle, bool(done), stats, time.perf_counter() - started)


# ---------------------------------------------------------------- exemplars


def run_exemplars(
    model: ModelHandle,
    catalog: CatalogHandle,
    prompt_set: PromptSetHandle,
    settings: ExemplarSettings,
    store: Store,
    progress: PhaseProgress | None = None,
) -> StepResult:
    started = time.perf_counter()
    scope = f"{model.model_id}/{prompt_set.prompt_set_id}"
    data_version = version_hash(CODE_VERSIONS["neuron_exemplars"], catalog.data_version, prompt_set.data_version, settings.model_dump())
    done = _skip(store, "neuron_exemplars", scope, data_version)
    if done:
        stats = done.stats
    else:
        selected = store.query(
            "SELECT layer, neuron, token_id, token FROM neurons WHERE model_id = ? AND (selected OR random_baseline) ORDER BY layer, neuron", [model.model_id], read_only=False
        )
        documents = store.query(
            "SELECT doc_index, doc_id, split, text FROM documents WHERE prompt_set_id = ? ORDER BY doc_index", [prompt_set.prompt_set_id], read_only=False
        )
        bridge = models.load_bridge(model.local_dir, model.device)
        activation_model = models.load_activation_model(model.local_dir, model.device)
        frame, stats = exemplars.find_exemplars(bridge, activation_model, selected, documents, settings, model.facts["bos_token_id"], progress)
        stats["seconds"] = time.perf_counter() - started
        store.replace(
            "neuron_exemplars",
            {"model_id": model.model_id, "prompt_set_id": prompt_set.prompt_set_id},
            frame,
            AssetVersion("neuron_exemplars", scope, data_version, CODE_VERSIONS["neuron_exemplars"], stats),
        )
    handle = ExemplarsHandle(model.model_id, prompt_set.prompt_set_id, settings.act_ratio, settings.max_prompt_tokens, stats, data_version)
    return StepResult(handle, bool(done), stats, time.perf_counter() - started)


# ---------------------------------------------------------------- head attribution, scores, ablation


def _run_keys(model_id: str, prompt_set_id: str) -> tuple[str, dict]:
    return f"{model_id}/{prompt_set_id}", {"model_id": model_id, "prompt_set_id": prompt_set_id}


def run_attributions(
    model: ModelHandle,
    exemplars_handle: ExemplarsHandle,
    settings: AttributionSettings,
    store: Store,
    progress: PhaseProgress | None = None,
) -> StepResult:
    started = time.perf_counter()
    scope, keys = _run_keys(model.model_id, exemplars_handle.prompt_set_id)
    # batch_tokens changes speed, not results; the tolerance only changes the check.
    relevant = settings.model_dump(exclude={"batch_tokens", "identity_tolerance"})
    data_version = version_hash(CODE_VERSIONS["head_attributions"], exemplars_handle.data_version, relevant)
    done = _skip(store, "head_attributions", scope, data_version)
    if done:
        stats = done.stats
    else:
        rows = store.query(
            "SELECT layer, neuron, doc_id, split, prompt_token_ids FROM neuron_exemplars WHERE model_id = ? AND prompt_set_id = ? "
            "ORDER BY layer, neuron, split, rank",
            [model.model_id, exemplars_handle.prompt_set_id],
            read_only=False,
        )
        bridge = models.load_bridge(model.local_dir, model.device)
        result = attribution.attribute_exemplars(bridge, rows, model.facts["bos_token_id"], settings, progress)
        stats = {**result.stats, "seconds": time.perf_counter() - started}
        store.replace_many(
            [("head_attributions", keys, result.heads), ("exemplar_decompositions", keys, result.totals)],
            AssetVersion("head_attributions", scope, data_version, CODE_VERSIONS["head_attributions"], stats),
        )
    handle = AttributionsHandle(model.model_id, exemplars_handle.prompt_set_id, settings.identity_tolerance, stats, data_version)
    return StepResult(handle, bool(done), stats, time.perf_counter() - started)


def run_head_scores(attributions: AttributionsHandle, settings: HeadScoreSettings, store: Store) -> StepResult:
    started = time.perf_counter()
    scope, keys = _run_keys(attributions.model_id, attributions.prompt_set_id)
    data_version = version_hash(CODE_VERSIONS["head_neuron_scores"], attributions.data_version, settings.model_dump())
    done = _skip(store, "head_neuron_scores", scope, data_version)
    if done:
        stats = done.stats
    else:
        heads = store.query(
            "SELECT layer, neuron, split, head_layer, head, gate_contribution, in_contribution, score, active FROM head_attributions "
            "WHERE model_id = ? AND prompt_set_id = ?",
            [attributions.model_id, attributions.prompt_set_id],
            read_only=False,
        )
        random_neurons = store.query(
            "SELECT layer, neuron FROM neurons WHERE model_id = ? AND random_baseline", [attributions.model_id], read_only=False
        )
        frame = scores.head_neuron_scores(heads, settings, set(map(tuple, random_neurons.values.tolist())))
        baseline = frame[frame["cohort"] == "random"]
        frame_next = frame[frame["cohort"] == "next_token"]
        consistent = frame_next[frame_next["consistent"]]
        stats = {
            "random_baseline_pairs": len(baseline),
            "random_baseline_consistent_pairs": int(baseline["consistent"].sum()),
            "pairs": len(frame_next),
            "consistent_pairs": len(consistent),
            "neurons": int(frame_next.groupby(["layer", "neuron"]).ngroups) if len(frame_next) else 0,
            "neurons_with_consistent_heads": int(consistent.groupby(["layer", "neuron"]).ngroups) if len(consistent) else 0,
            "consistent_heads": int(consistent.groupby(["head_layer", "head"]).ngroups) if len(consistent) else 0,
            "seconds": time.perf_counter() - started,
        }
        store.replace("head_neuron_scores", keys, frame, AssetVersion("head_neuron_scores", scope, data_version, CODE_VERSIONS["head_neuron_scores"], stats))
    handle = HeadScoresHandle(attributions.model_id, attributions.prompt_set_id, stats, data_version)
    return StepResult(handle, bool(done), stats, time.perf_counter() - started)


def run_ablations(
    model: ModelHandle,
    head_scores: HeadScoresHandle,
    settings: AblationSettings,
    store: Store,
    progress: PhaseProgress | None = None,
) -> StepResult:
    started = time.perf_counter()
    scope, keys = _run_keys(model.model_id, head_scores.prompt_set_id)
    relevant = settings.model_dump(exclude={"batch_tokens"})
    data_version = version_hash(CODE_VERSIONS["head_ablations"], head_scores.data_version, relevant)
    done = _skip(store, "head_ablations", scope, data_version)
    if done:
        stats = done.stats
    else:
        rows = store.query(
            "SELECT a.layer, a.neuron, a.doc_id, a.split, a.head_layer, a.head, a.active, e.prompt_token_ids, e.next_token_id "
            "FROM head_neuron_scores s "
            "JOIN head_attributions a USING (model_id, prompt_set_id, layer, neuron, head_layer, head) "
            "JOIN neuron_exemplars e USING (model_id, prompt_set_id, layer, neuron, doc_id) "
            "WHERE s.model_id = ? AND s.prompt_set_id = ? AND s.consistent AND s.cohort = 'next_token' AND list_contains(?, a.split) "
            "ORDER BY a.layer, a.neuron, a.head_layer, a.head, a.doc_id",
            [model.model_id, head_scores.prompt_set_id, settings.splits],
            read_only=False,
        )
        frame = pd.DataFrame(columns=ablation.ABLATION_COLUMNS)
        if len(rows):
            bridge = models.load_bridge(model.local_dir, model.device)
            hf_model = models.load_activation_model(model.local_dir, model.device)
            ablator = ablation.HeadAblator(hf_model, models.attention_output_paths(bridge), models.mlp_output_paths(bridge), bridge.cfg.n_heads, bridge.cfg.d_head)
            pad_id = models.pad_token_id(bridge.tokenizer, model.facts["bos_token_id"])
            frame = ablation.ablate_pairs(ablator, rows, model.facts["bos_token_id"], pad_id, settings.batch_tokens, progress)
        tests = ablation.ks_summary(frame)
        stats = {
            "rows": len(frame),
            "pairs": int(frame.groupby(["layer", "neuron", "head_layer", "head"]).ngroups) if len(frame) else 0,
            "forward_rows": len(frame) + (int(frame.groupby(["layer", "neuron", "doc_id"]).ngroups) if len(frame) else 0),
            **{f"{r.metric}_ks": r.ks_statistic for r in tests.itertuples()},
            **{f"{r.metric}_p": r.p_value for r in tests.itertuples()},
            "seconds": time.perf_counter() - started,
        }
        store.replace_many(
            [("head_ablations", keys, frame), ("ablation_tests", keys, tests)],
            AssetVersion("head_ablations", scope, data_version, CODE_VERSIONS["head_ablations"], stats),
        )
    handle = AblationsHandle(model.model_id, head_scores.prompt_set_id, stats, data_version)
    return StepResult(handle, bool(done), stats, time.perf_counter() - started)


# ---------------------------------------------------------------- atlas


def run_atlas(
    model: ModelHandle, ablations: AblationsHandle, settings: AtlasSettings, store: Store, explained: ExplanationScoresHandle | None = None
) -> StepResult:
    """Write the static HTML atlas of this model and prompt set under ``<data>/atlas/``."""
    started = time.perf_counter()
    scope, _ = _run_keys(model.model_id, ablations.prompt_set_id)
    inputs = (ablations.data_version, explained.data_version if explained else None)
    data_version = version_hash(CODE_VERSIONS["atlas_report"], inputs, settings.model_dump(exclude={"batch_tokens"}))
    path = data_dir() / "atlas" / f"{model.model_id.replace('@', '-')}__{ablations.prompt_set_id}.html"
    done = _skip(store, "atlas_report", scope, data_version)
    if done and path.exists():
        stats = done.stats
    else:
        done = None
        data = atlas.load_atlas_data(store, model.model_id, ablations.prompt_set_id)
        bridge = models.load_bridge(model.local_dir, model.device)
        page, figs, stats = atlas.build_atlas(bridge, data, settings, model.facts["bos_token_id"])
        files.write_atomically(path, page)
        for name, png in figs.items():
            files.write_atomically(path.parent / f"{path.stem}__{name}.png", base64.b64decode(png))
        stats = {**stats, "seconds": time.perf_counter() - started}
        store.replace_many([], AssetVersion("atlas_report", scope, data_version, CODE_VERSIONS["atlas_report"], stats))
    handle = AtlasHandle(model.model_id, ablations.prompt_set_id, str(path), stats, data_version)
    return StepResult(handle, bool(done), stats, time.perf_counter() - started)


# ---------------------------------------------------------------- explanations and their scores


def _explanation_pairs(store: Store, model_id: str, prompt_set_id: str, settings: ExplanationSettings) -> list:
    consistent = store.query(
        "SELECT s.cohort, s.layer, s.neuron, s.head_layer, s.head, s.mean_score, n.token FROM head_neuron_scores s "
        "JOIN neurons n USING (model_id, layer, neuron) WHERE s.model_id = ? AND s.prompt_set_id = ? AND s.consistent",
        [model_id, prompt_set_id],
        read_only=False,
    )
    chosen = explanations.choose_pairs(consistent, settings)
    prompts = store.query(
        "SELECT a.layer, a.neuron, a.head_layer, a.head, a.split, a.active, e.rank, e.prompt_text FROM head_attributions a "
        "JOIN neuron_exemplars e USING (model_id, prompt_set_id, layer, neuron, doc_id) "
        "WHERE a.model_id = ? AND a.prompt_set_id = ? AND list_contains(?, concat_ws(':', a.layer, a.neuron, a.head_layer, a.head))",
        [model_id, prompt_set_id, [":".join(str(int(v)) for v in r) for r in chosen[explanations.PAIR_KEYS].itertuples(index=False)]],
        read_only=False,
    ) if len(chosen) else pd.DataFrame(columns=["layer", "neuron", "head_layer", "head", "split", "active", "rank", "prompt_text"])
    return explanations.build_pairs(chosen, prompts)


def _status_counts(frame: pd.DataFrame, column: str = "status") -> dict:
    return {f"{column}_{k}": int(v) for k, v in frame[column].value_counts().items()} if len(frame) else {}


def run_explanations(
    model: ModelHandle,
    head_scores: HeadScoresHandle,
    settings: ExplanationSettings,
    store: Store,
    run_id: str | None = None,
    progress: PhaseProgress | None = None,
) -> StepResult:
    """Explain each chosen consistent pair with the contrastive reference and the primary LLM backend."""
    started = time.perf_counter()
    scope, keys = _run_keys(model.model_id, head_scores.prompt_set_id)
    template = explainers.load_template(settings.explain_template)
    classify_template = explainers.load_template(settings.classify_template)  # fail early on a bad name
    backend = explainers.make_llm_backend(settings, model.device)
    names = (explanations.CONTRASTIVE,) + ((backend.explainer,) if backend else ())
    # Speed, budget and transport settings change no result; the templates' content does.
    relevant = settings.model_dump(exclude={"concurrency", "timeout_s", "max_retries", "batch_size", "max_calls", "max_tokens"})
    data_version = version_hash(CODE_VERSIONS["explanations"], head_scores.data_version, relevant, template.version, names)
    done = _skip(store, "explanations", scope, data_version)
    if done:
        stats = done.stats
    else:
        pairs = _explanation_pairs(store, model.model_id, head_scores.prompt_set_id, settings)
        ledger = explanations.CallLedger(store, run_id or explanations.new_run_id(), settings.max_calls, settings.max_tokens)
        frame = explanations.explain_pairs(pairs, model.model_id, head_scores.prompt_set_id, settings, template, backend, ledger, progress)
        stats = {
            "pairs": len(pairs),
            "next_token_pairs": sum(p.cohort == "next_token" for p in pairs),
            "random_pairs": sum(p.cohort == "random" for p in pairs),
            "explainers": list(names),
            "llm_calls": ledger.new_calls,
            "cache_hits": int(frame["cached"].sum()),
            "tokens": int(frame["prompt_tokens"].sum() + frame["completion_tokens"].sum()),
            "budget_reached": ledger.budget_hit,
            # A run with failed or budget-stopped calls is redone next time (answers so far come from the cache).
            "complete": not ledger.budget_hit and not frame["status"].isin(["error", "budget_exhausted"]).any(),
            "template": template.version,
            "classify_template": classify_template.version,
            **_status_counts(frame[frame["explainer"] != explanations.CONTRASTIVE]),
            "seconds": time.perf_counter() - started,
        }
        writes = [("explanations", {**keys, "explainer": name}, frame[frame["explainer"] == name]) for name in names]
        store.replace_many(writes, AssetVersion("explanations", scope, data_version, CODE_VERSIONS["explanations"], stats))
    handle = ExplanationsHandle(model.model_id, head_scores.prompt_set_id, settings.model_dump(), names, stats, data_version)
    return StepResult(handle, bool(done), stats, time.perf_counter() - started)


def run_explanation_scores(
    model: ModelHandle,
    explained: ExplanationsHandle,
    settings: ScoringSettings,
    store: Store,
    run_id: str | None = None,
    progress: PhaseProgress | None = None,
) -> StepResult:
    """Score every explanation on held-out prompts (and the shuffled baseline); test E against the baselines;
    draw the E histogram."""
    started = time.perf_counter()
    scope, keys = _run_keys(model.model_id, explained.prompt_set_id)
    explain_settings = ExplanationSettings(**explained.settings)
    template = explainers.load_template(explain_settings.classify_template)
    data_version = version_hash(CODE_VERSIONS["explanation_scores"], explained.data_version, settings.model_dump(), template.version)
    figure = data_dir() / "figures" / f"{model.model_id.replace('@', '-')}__{explained.prompt_set_id}__explanation_scores.png"
    done = _skip(store, "explanation_scores", scope, data_version)
    if done:
        stats = done.stats
    else:
        rows = store.query(
            "SELECT * FROM explanations WHERE model_id = ? AND prompt_set_id = ? AND list_contains(?, explainer)",
            [model.model_id, explained.prompt_set_id, list(explained.explainers)],
            read_only=False,
        )
        pairs = {p.key: p for p in _explanation_pairs(store, model.model_id, explained.prompt_set_id, explain_settings)}
        backend = explainers.make_llm_backend(explain_settings, model.device) if len(explained.explainers) > 1 else None
        if backend is not None and backend.explainer not in explained.explainers:
            raise explainers.ExplainerError(
                f"The explanations were made by {explained.explainers[-1]} but the backend is now {backend.explainer} "
                f"(did {explainers.LLM_MODEL_ENV} or {explainers.LLM_BASE_URL_ENV} change?): materialize explanations again, or restore the setting."
            )
        ledger = explanations.CallLedger(store, run_id or explanations.new_run_id(), explain_settings.max_calls, explain_settings.max_tokens)
        frame = explanations.score_explanations(rows, pairs, model.model_id, explain_settings, settings, template, backend, ledger, progress)
        tests = explanations.explanation_tests(frame)
        png = explanations.e_histogram(frame, f"{model.model_id} / {explained.prompt_set_id}")
        if png:
            figure.parent.mkdir(parents=True, exist_ok=True)
            figure.write_bytes(png)
        scored = frame[frame["status"] == "scored"]
        stats = {
            "scores": len(frame),
            "scored": len(scored),
            "not_scored": int((frame["status"] != "scored").sum()),
            "llm_calls": ledger.new_calls,
            "malformed_answers": int(frame["n_malformed"].sum()),
            "failed_calls": int(frame["n_errors"].sum()),
            "budget_reached": ledger.budget_hit,
            "complete": not ledger.budget_hit and int(frame["n_errors"].sum()) == 0,
            "template": template.version,
            **{f"mean_e[{r.explainer}]": r.mean_e for r in tests[tests["baseline"] == "random_neurons"].itertuples()},
            **{f"mean_e_random[{r.explainer}]": r.mean_baseline for r in tests[tests["baseline"] == "random_neurons"].itertuples()},
            **{f"mean_e_shuffled[{r.explainer}]": r.mean_baseline for r in tests[tests["baseline"] == "shuffled"].itertuples()},
            "seconds": time.perf_counter() - started,
        }
        names = list(explained.explainers)
        writes = [("explanation_scores", {**keys, "explainer": name}, frame[frame["explainer"] == name]) for name in names]
        writes += [("explanation_tests", {**keys, "explainer": name}, tests[tests["explainer"] == name]) for name in names]
        store.replace_many(writes, AssetVersion("explanation_scores", scope, data_version, CODE_VERSIONS["explanation_scores"], stats))
    handle = ExplanationScoresHandle(model.model_id, explained.prompt_set_id, str(figure) if figure.exists() else None, stats, data_version)
    return StepResult(handle, bool(done), stats, time.perf_counter() - started)
