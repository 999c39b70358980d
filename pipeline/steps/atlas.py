"""The atlas step: read the frames the page shows, read the consistent heads' attention on the prompts it
shades (a forward pass), draw the figures, render the page (a pure function of all that)."""

from __future__ import annotations

import numpy as np

from lookups.pipeline.common import files
from lookups.pipeline.config import AtlasSettings, result_settings
from lookups.pipeline.inputs import models
from lookups.pipeline.report import figures
from lookups.pipeline.report.atlas import AtlasData, head_layers_of, prompts_to_show, render_atlas
from lookups.pipeline.science.attention import last_position_attention
from lookups.pipeline.steps.base import (
    AblationsHandle,
    AtlasHandle,
    Computed,
    ExplanationScoresHandle,
    ModelHandle,
    StepResult,
    figure_path,
    report_path,
    run_step,
)
from lookups.pipeline.store.store import Store


def load_atlas_data(store: Store, model_id: str, prompt_set_id: str) -> AtlasData:
    keys = {"model_id": model_id, "prompt_set_id": prompt_set_id}
    return AtlasData(
        model=store.read("atlas_model", model_id=model_id).iloc[0].to_dict(),
        prompt_set_id=prompt_set_id,
        neurons=store.read("atlas_neurons", model_id=model_id),
        scores=store.read("atlas_scores", **keys),
        exemplars=store.read("atlas_exemplars", **keys),
        active=store.read("atlas_active", **keys),
        ablations=store.rows("head_ablations", **keys),
        tests=store.rows("ablation_tests", **keys),
        explanations=store.read("atlas_explanations", **keys),
        heads_by_layer=store.read("atlas_heads_by_layer", **keys),
    )


def run_atlas(
    model: ModelHandle, ablations: AblationsHandle, settings: AtlasSettings, store: Store, explained: ExplanationScoresHandle | None = None
) -> StepResult:
    """Write the static HTML atlas of this model and prompt set under ``<data>/atlas/``, its figures under
    ``<data>/figures/``."""
    keys = ablations.keys
    path = report_path(model.model_id, ablations.prompt_set_id)
    figure_files = {name: figure_path(model.model_id, ablations.prompt_set_id, name) for name in ("heads_by_layer", "ablation")}

    def compute() -> Computed:
        data = load_atlas_data(store, model.model_id, ablations.prompt_set_id)
        bridge = models.load_bridge(model.local_dir, model.device)
        tokenizer, bos_id = bridge.tokenizer, model.facts["bos_token_id"]
        shown = prompts_to_show(data, settings)
        layers_of = head_layers_of(data)
        prompts = [np.concatenate([[bos_id], np.asarray(row.prompt_token_ids, dtype=np.int64)]) for _, row in shown]
        layers = sorted({layer for key, _ in shown for layer in layers_of[key]})
        patterns = last_position_attention(bridge, prompts, layers, settings.batch_tokens, models.pad_token_id(tokenizer, bos_id))
        attention = {(key[0], key[1], row.doc_id): pattern for (key, row), pattern in zip(shown, patterns)}
        pngs = {"heads_by_layer": figures.heads_by_layer(data.heads_by_layer, int(data.model["n_layers"])), "ablation": figures.ablation(data.ablations)}
        pngs = {name: png for name, png in pngs.items() if png}
        page = render_atlas(data, lambda ids: [tokenizer.decode([i]) for i in ids], attention, settings, pngs)
        files.write_atomically(path, page)
        for name, png in pngs.items():
            files.write_atomically(figure_files[name], png)
        n_consistent = int(data.scores["consistent"].sum()) if len(data.scores) else 0
        stats = {
            "neurons": len(data.neurons), "pairs_shown": int(min(n_consistent, settings.pairs_per_neuron * len(data.neurons))),
            "prompts_with_attention": len(prompts), "bytes": len(page.encode()),
        }
        return Computed([], stats)

    def handle(data_version: str, stats: dict) -> AtlasHandle:
        shown = {name.replace("_", " "): str(p) for name, p in figure_files.items() if p.exists()}
        return AtlasHandle(data_version=data_version, stats=stats, **keys, path=str(path), figures=shown)

    fingerprint = ((ablations.data_version, explained.data_version if explained else None), result_settings(settings))
    return run_step(store, "atlas_report", ablations.scope, fingerprint, compute, handle, outputs_present=path.exists, is_report=True)
