"""The atlas step: read the frames the page shows (what each consistent head reads on its prompts is stored by
the look-up step: no forward pass here), draw the figures, render the page (a pure function of all that)."""

from __future__ import annotations

from lookups.pipeline.common import files
from lookups.pipeline.config import AtlasSettings, result_settings
from lookups.pipeline.report import figures
from lookups.pipeline.report.atlas import AtlasData, render_atlas
from lookups.pipeline.steps.base import (
    AblationsHandle,
    AtlasHandle,
    Computed,
    ExplanationScoresHandle,
    InterventionsHandle,
    KnockoutsHandle,
    ModelHandle,
    QKHandle,
    StepResult,
    figure_name,
    report_name,
    run_step,
)
from lookups.pipeline.steps.registry import Step, register
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
        explanation_scores=store.read("atlas_explanation_scores", **keys),
        explanation_tests=store.read("atlas_explanation_tests", **keys),
        heads_by_layer=store.read("atlas_heads_by_layer", **keys),
        lookups=store.read("atlas_lookups", **keys),
        pair_lookups=store.read("atlas_pair_lookups", **keys),
    )


def run_atlas(
    model: ModelHandle, head_ablations: AblationsHandle, settings: AtlasSettings, store: Store,
    explanation_scores: ExplanationScoresHandle | None = None, lookup_interventions: InterventionsHandle | None = None,
    lookup_knockouts: KnockoutsHandle | None = None, qk_attributions: QKHandle | None = None,
) -> StepResult:
    """Write the static HTML atlas of this model and prompt set under the store's ``atlas/`` folder, its figures
    under ``figures/``."""
    ablations, explained, tested = head_ablations, explanation_scores, lookup_interventions
    keys = ablations.keys
    page_name = report_name(model.model_id, ablations.prompt_set_id)
    figure_names = {name: figure_name(model.model_id, ablations.prompt_set_id, name) for name in ("heads_by_layer", "ablation")}
    path, figure_files = store.folder / page_name, {name: store.folder / file for name, file in figure_names.items()}

    def compute() -> Computed:
        data = load_atlas_data(store, model.model_id, ablations.prompt_set_id)
        runtime = model.runtime()  # only its tokenizer is loaded: what each head reads is stored (head_lookups)
        pngs = {
            "heads_by_layer": figures.heads_by_layer(data.heads_by_layer, int(data.model["n_layers"])),
            "ablation": figures.ablation(data.ablations),
            # drawn here from the stored scores, not read from explanation_scores' file: the page matches its own data
            "score_histograms": figures.score_histograms(data.explanation_scores, f"{model.model_id} / {ablations.prompt_set_id}"),
        }
        pngs = {name: png for name, png in pngs.items() if png}
        page = render_atlas(data, runtime.decode_each, settings, pngs)
        store.put_file(page_name, page, local_copy=True)  # the page a person opens is local; a shared store's is in it too
        for name, png in pngs.items():
            if name in figure_names:  # the score histograms' file is explanation_scores' own
                store.put_file(figure_names[name], png, local_copy=True)
        n_consistent = int(data.scores["consistent"].sum()) if len(data.scores) else 0
        stats = {
            "neurons": len(data.neurons), "pairs_shown": int(min(n_consistent, settings.pairs_per_neuron * len(data.neurons))),
            "prompt_positions_shaded": len(data.lookups), "bytes": len(page.encode()),
        }
        return Computed([], stats)

    def handle(data_version: str, stats: dict) -> AtlasHandle:
        shown = {name.replace("_", " "): str(p) for name, p in figure_files.items() if p.exists()}
        return AtlasHandle(data_version=data_version, stats=stats, **keys, path=str(path), figures=shown)

    upstream = tuple(h.data_version if h else None for h in (ablations, explained, tested, lookup_knockouts, qk_attributions))
    fingerprint = (upstream, result_settings(settings))
    present = lambda: _present(store, [page_name, *figure_names.values()])  # noqa: E731
    return run_step(store, "atlas_report", ablations.scope, fingerprint, compute, handle, outputs_present=present, is_report=True)


def _present(store: Store, names: list[str]) -> bool:
    """Whether the page (the first name) is in the store; if so, its files are copied to the store's folder where
    missing (an object-store warehouse's page, built on another machine)."""
    if not store.has_file(names[0]):
        return False
    for name in names:
        if not (store.folder / name).exists():
            data = store.get_file(name)
            if data is not None:
                files.write_atomically(store.folder / name, data)
    return True


# ---------------------------------------------------------------- registry row


def _atlas_metadata(result: StepResult) -> dict:
    return {"html_path": result.handle.path}


ATLAS_REPORT = register(Step(
    name="atlas_report", run=run_atlas, settings=AtlasSettings, needs_model=False,  # only the tokenizer: no GPU queue
    inputs=("model", "head_ablations", "explanation_scores", "lookup_interventions", "lookup_knockouts", "qk_attributions"),
    code_version="5",  # 2: each pair's explanations and scores; 3: E histogram, look-ups; 4: every scorer's figures; 5: knockout, why
    kinds=frozenset({"html"}), metadata=_atlas_metadata,
    description="One static HTML page per model and prompt set: neurons and tokens, head x layer heatmaps, each consistent pair's "
    "look-up summary, counterfactual test, attention knockout and why its head looks there (QK attribution), explanations and scores "
    "E, prompts shaded by the head's signed contribution per token (attention on a toggle, the token it reads most boxed), the "
    "findings' figures with the score histograms. Opens from disk, no server, no internet.",
))
