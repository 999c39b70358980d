"""Run part of the SmolLM2 chain in this process, under whatever CPU kernels its environment selects
(``ATEN_CPU_CAPABILITY``, ``MKL_ENABLE_INSTRUCTIONS``, ``OMP_NUM_THREADS``, read when torch loads), for
tests/acceptance/test_kernel_paths.py. Steps of one store may run on different machines (a shared store, a
cluster), so the checks must pass whichever kernels computed each step.

    python kernel_chain.py attribute DATA_DIR   model to head scores; the handles pickled into DATA_DIR
    python kernel_chain.py lookup DATA_DIR      the look-ups of those pairs, then the two identity checks;
                                                prints one JSON line: each check's outcome and metadata
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path


def main(stage: str, data: Path) -> None:
    os.environ["LOOKUPS_DATA_DIR"] = str(data)
    import torch

    from lookups.pipeline import steps
    from lookups.pipeline.config import (
        EMBEDDED_MODEL,
        AttributionSettings,
        CatalogSettings,
        CorpusSettings,
        ExemplarSettings,
        HeadScoreSettings,
        LookupSettings,
        ModelSettings,
        PromptSetSettings,
    )
    from lookups.pipeline.steps import checks
    from lookups.pipeline.store.store import Store

    store, saved = Store(), data / "handles.pkl"
    if stage == "attribute":
        model = steps.run_model(ModelSettings(name=EMBEDDED_MODEL), store).handle
        catalog = steps.run_catalog(model, CatalogSettings(neurons_per_layer=3, last_layers=2, random_per_layer=1), store).handle
        corpus = steps.run_corpus(CorpusSettings(source="gensim-wiki"), store).handle
        prompt_set = steps.run_prompt_set(corpus, PromptSetSettings(max_documents=16), store).handle
        exemplars = steps.run_exemplars(model, catalog, prompt_set, ExemplarSettings(top_k=12, keep=10, keep_heldout=4), store).handle
        attributions = steps.run_attributions(model, exemplars, AttributionSettings(), store).handle
        scores = steps.run_head_scores(attributions, HeadScoreSettings(min_prompts=4), store).handle
        saved.write_bytes(pickle.dumps({"model": model, "attributions": attributions, "scores": scores}))
        print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}))
        return
    handles = pickle.loads(saved.read_bytes())
    looked_up = steps.run_lookups(handles["model"], handles["scores"], LookupSettings(), store).handle
    report = {"capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(), "lookup_rows": looked_up.stats["lookup_rows"]}
    evaluated = {checks.ATTRIBUTION_IDENTITY: handles["attributions"], checks.LOOKUPS_IDENTITY: looked_up}
    for check, handle in evaluated.items():
        name, outcome = check.name, check.evaluate(handle, store, "kernel-paths")
        report[name] = {
            "passed": outcome.result.success, "lines": outcome.result.lines(),
            "metadata": {k: v for k, v in outcome.metadata.items() if isinstance(v, float | int | str)},
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
