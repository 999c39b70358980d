"""The steps of the two sources: the model (resolved, fingerprinted, its facts), its neuron catalog, the
corpus (parsed once into Parquet) and the prompt set (passages, splits, content hash)."""

from __future__ import annotations

import io
import json
import time

import pandas as pd

from lookups.pipeline.config import (
    CatalogSettings,
    CorpusReadSettings,
    CorpusSettings,
    ModelRunSettings,
    ModelSettings,
    PromptSetSettings,
    result_settings,
)
from lookups.pipeline.inputs import checkpoints, corpora, sources
from lookups.pipeline.inputs.models import ModelFacts
from lookups.pipeline.inputs.runtime import load_runtime
from lookups.pipeline.science import catalog
from lookups.pipeline.steps import checks
from lookups.pipeline.steps.base import (
    CatalogHandle,
    Computed,
    CorpusHandle,
    ModelHandle,
    PromptSetHandle,
    StepResult,
    run_step,
    version_hash,
)
from lookups.pipeline.steps.registry import PartitionKey, Preview, Step, register
from lookups.pipeline.store.store import Store


def run_model(settings: ModelSettings, store: Store) -> StepResult:
    source = checkpoints.resolve_model(settings.name)

    def compute() -> Computed:
        # Describing the model refuses, in one line, one whose MLP inputs the steps cannot decompose exactly.
        runtime = load_runtime(source.local_dir, settings.device)
        facts = runtime.facts.as_dict()
        row = pd.DataFrame([{"name": source.name, "origin": source.origin, "fingerprint": source.fingerprint, **facts}])
        return Computed([("models", {"model_id": source.model_id}, row)], {"facts": facts, "origin": source.origin, "architecture": runtime.arch.summary()})

    def handle(data_version: str, stats: dict) -> ModelHandle:
        return ModelHandle(
            data_version=data_version, stats={**stats, "origin": source.origin}, model_id=source.model_id, name=source.name,
            local_dir=source.local_dir, device=settings.device, facts=ModelFacts(**stats["facts"]),
        )

    return run_step(store, "model", source.model_id, (source.model_id,), compute, handle)


def run_catalog(model: ModelHandle, settings: CatalogSettings, store: Store) -> StepResult:
    per_layer = settings.resolved_neurons_per_layer(model.facts.d_mlp)
    last_layers = settings.resolved_last_layers(model.facts.n_layers)

    def compute() -> Computed:
        runtime = model.runtime()
        frame = catalog.build_catalog(runtime.arch, runtime.tokenizer, settings)
        chosen = frame[frame["selected"]]
        stats = {
            "neurons": len(frame),
            "selected": int(frame["selected"].sum()),
            "random_baseline": int(frame["random_baseline"].sum()),
            "qualifying": int(frame["qualifies"].sum()),
            "prediction": int((frame["role"] == "prediction").sum()),
            "suppression": int((frame["role"] == "suppression").sum()),
            "selected_prediction": int((chosen["role"] == "prediction").sum()),
            "selected_suppression": int((chosen["role"] == "suppression").sum()),
        }
        return Computed([("neurons", {"model_id": model.model_id}, frame)], stats)

    def handle(data_version: str, stats: dict) -> CatalogHandle:
        return CatalogHandle(
            data_version=data_version, stats=stats, model_id=model.model_id, neurons_per_layer=per_layer, last_layers=last_layers,
            n_selected=stats["selected"],
        )

    fingerprint = (model.data_version, result_settings(settings), per_layer, last_layers)
    return run_step(store, "neuron_catalog", model.model_id, fingerprint, compute, handle)


def run_corpus(settings: CorpusSettings, store: Store) -> StepResult:
    """Read the source into a Parquet file of source documents, under the store's folder (an object-store
    warehouse's ``_files/``, so that the next step finds it on any machine). The one step with no table: a parsed
    corpus is an input cache keyed by the source's fingerprint (its files' content)."""
    started = time.perf_counter()
    key = version_hash(CORPUS.code_version, settings.model_dump(), corpora.source_fingerprint(settings))
    name, meta_name = f"corpora/{key}.parquet", f"corpora/{key}.json"
    found = store.get_file(meta_name) if store.has_file(name) else None
    skipped = found is not None
    if skipped:
        meta = json.loads(found)
    else:
        counts = corpora.ReadCounts()
        docs = pd.DataFrame([d.__dict__ for d in corpora.read_source(settings, counts)], columns=["source_id", "title", "text"])
        buffer = io.BytesIO()
        docs.to_parquet(buffer)
        store.put_file(name, buffer.getvalue())
        meta = {"corpus_hash": corpora.corpus_content_hash(docs), "counts": counts.as_dict()}
        store.put_file(meta_name, json.dumps(meta))
    handle = CorpusHandle(
        data_version=version_hash(CORPUS.code_version, meta["corpus_hash"]), stats={"corpus_hash": meta["corpus_hash"], **meta["counts"]},
        source=settings.source, parquet_path=store.file_url(name), corpus_hash=meta["corpus_hash"], counts=meta["counts"],
    )
    return StepResult(handle, skipped, time.perf_counter() - started)


def run_prompt_set(corpus: CorpusHandle, settings: PromptSetSettings, store: Store) -> StepResult:
    # The prompt set's id is a hash of its content, so it is built (cheaply, from the parsed corpus) first.
    prompt_set = corpora.build_prompt_set(pd.read_parquet(io.BytesIO(store.read_url(corpus.parquet_path))), settings)
    stats = {**prompt_set.counts, **{f"skipped_{k}": v for k, v in corpus.counts.items() if k != "read"}}
    read_keys, read = corpus_read(corpus, settings, prompt_set)

    def compute() -> Computed:
        counts = prompt_set.counts
        row = pd.DataFrame([{
            "source": corpus.source, "corpus_hash": corpus.corpus_hash, "settings": json.dumps(settings.model_dump()),
            "n_documents": counts["documents"], "n_explain": counts["explain"], "n_heldout": counts["heldout"],
            "source_documents": counts["source_documents"], "duplicates_dropped": counts["duplicates_dropped"],
            "beyond_slice": counts["beyond_slice"], "skipped_empty": corpus.counts.get("empty", 0),
            "skipped_undecodable": corpus.counts.get("undecodable", 0), "skipped_malformed": corpus.counts.get("malformed", 0),
        }])
        keys = {"prompt_set_id": prompt_set.prompt_set_id}
        return Computed([("prompt_sets", keys, row), ("documents", keys, prompt_set.documents), ("corpus_reads", read_keys, read)], stats)

    def handle(data_version: str, _stored: dict) -> PromptSetHandle:
        return PromptSetHandle(data_version=data_version, stats=stats, prompt_set_id=prompt_set.prompt_set_id, counts=prompt_set.counts)

    result = run_step(store, "prompt_set", prompt_set.prompt_set_id, (prompt_set.prompt_set_id,), compute, handle)
    # Another corpus with the same passages may have built this prompt set: it is not built again, but this
    # corpus's counts are its own (docs/data.md).
    if store.rows("corpus_reads", **read_keys).empty:
        store.replace("corpus_reads", read_keys, read)
    return result


def corpus_read(corpus: CorpusHandle, settings: PromptSetSettings, prompt_set: corpora.PromptSet) -> tuple[dict, pd.DataFrame]:
    """The ``corpus_reads`` row of this corpus version and prompt set: its keys and the row."""
    counts = prompt_set.counts
    row = {
        "source": corpus.source, "corpus_hash": corpus.corpus_hash, "settings": json.dumps(settings.model_dump()),
        "n_read": corpus.counts.get("read", counts["source_documents"]), "skipped_empty": corpus.counts.get("empty", 0),
        "skipped_undecodable": corpus.counts.get("undecodable", 0), "skipped_malformed": corpus.counts.get("malformed", 0),
        "duplicates_dropped": counts["duplicates_dropped"], "beyond_slice": counts["beyond_slice"], "control_stripped": counts.get("control_stripped", 0),
    }
    keys = {"prompt_set_id": prompt_set.prompt_set_id, "corpus_read_id": version_hash(prompt_set.prompt_set_id, row)}
    return keys, pd.DataFrame([row])


# ---------------------------------------------------------------- registry rows


def _model_metadata(result: StepResult) -> dict:
    return {"model_id": result.handle.model_id, **result.handle.facts.as_dict()}


MODEL = register(Step(
    name="model", run=run_model, settings=ModelSettings, run_config=ModelRunSettings, key=PartitionKey("model", "name"),
    code_version="2",  # 2: the architecture is described and verified (unsupported families refused)
    source="model_weights", tables=("models",), checks=(checks.MODELS_VALID,), kinds=frozenset({"pytorch", "duckdb"}), metadata=_model_metadata,
    description="The partition's model (its `model` key) as an fp32 checkpoint, fingerprinted, booted with LayerNorm folded; a row in `models`.",
))


def _catalog_metadata(result: StepResult) -> dict:
    return {"neurons_per_layer": result.handle.neurons_per_layer, "last_layers": result.handle.last_layers}


NEURON_CATALOG = register(Step(
    name="neuron_catalog", run=run_catalog, settings=CatalogSettings, inputs=("model",),
    code_version="4",  # 2: random baseline neurons of the selected layers; 3: post-MLP norms in W_out; 4: neuron roles
    tables=("neurons",), checks=(checks.NEURONS_VALID,), kinds=frozenset({"pytorch", "duckdb"}),
    previews=(Preview("strongest selected", "preview_strongest_selected", 10),), metadata=_catalog_metadata,
    description="Every MLP neuron's next token (argmax of W_out·W_U), score, z-score and top tokens; the selected set.",
))


def _corpus_metadata(result: StepResult) -> dict:
    return {"source": result.handle.source, "parquet_path": result.handle.parquet_path}


CORPUS = register(Step(
    name="corpus", run=run_corpus, settings=CorpusSettings, run_config=CorpusReadSettings,
    key=PartitionKey("corpus", "source", sources.corpus_source),
    code_version="4",  # 2: paragraphs with markup the parser left as text are dropped; 3: NUL bytes undecodable, names escaped; 4: a UTF-8 BOM is not text
    source="corpus_files", kinds=frozenset({"parquet"}), metadata=_corpus_metadata,
    description="The partition's corpus (its `corpus` key) as read (Wikipedia stripped of markup, files, records), cached as Parquet.",
))


def _prompt_set_metadata(result: StepResult) -> dict:
    return {"prompt_set_id": result.handle.prompt_set_id}


PROMPT_SET = register(Step(
    name="prompt_set", run=run_prompt_set, settings=PromptSetSettings, inputs=("corpus",), code_version="1",
    tables=("prompt_sets", "documents", "corpus_reads"), checks=(checks.DOCUMENTS_VALID,), kinds=frozenset({"duckdb"}),
    previews=(Preview("documents", "preview_documents", 5),), metadata=_prompt_set_metadata,
    description="Deduplicated passages with deterministic explain/held-out splits, keyed by a content hash.",
))
