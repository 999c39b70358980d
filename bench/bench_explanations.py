"""Local explainer benchmark (a script, not a test): prints ratios measured in one run.

Scoring asks the local instruct model one Yes/No question per (explanation, held-out prompt). The questions
about one explanation share everything up to the snippet, so the backend runs that prefix once and reuses
its KV cache for every snippet. This compares, on the same requests and the same model:

- full: every question as one full left-padded forward pass (batches of ``--batch``), the plain way;
- prefix-cached: the backend's ``run`` (what the pipeline does).

It prints both times, their ratio (target > 1), and the largest difference in P(Yes) (should be ~1e-6).
Explanations and prompts: the stored ones of the latest run when the DuckDB file has any, else synthetic
explanations and prompts cut from the embedded corpus.

Usage: python bench/bench_explanations.py [--explanations 6] [--prompts 10] [--database data/lookups.duckdb]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def load_questions(database: Path, n_explanations: int, n_prompts: int) -> list[tuple[str, str, str]]:
    """(token, explanation, prompt) triples."""
    from lookups.pipeline.store.store import Store

    if database.exists():
        rows = Store(database).query(
            "SELECT x.token, x.explanation, e.prompt_text FROM explanations x "
            "JOIN neuron_exemplars e ON e.model_id = x.model_id AND e.prompt_set_id = x.prompt_set_id AND e.layer = x.layer AND e.neuron = x.neuron "
            "WHERE x.backend = 'local' AND x.status = 'ok' AND e.split = 'heldout' "
            "AND x.explanation_id IN (SELECT explanation_id FROM explanations WHERE backend = 'local' AND status = 'ok' ORDER BY explanation_id LIMIT ?) "
            "QUALIFY row_number() OVER (PARTITION BY x.explanation_id ORDER BY e.rank) <= ?",
            [n_explanations, n_prompts],
        )
        if len(rows):
            return list(rows.itertuples(index=False, name=None))
    words = ("The river town grew around the old mill, and the railway brought traders from the coast who sold "
             "cloth, salt and iron tools to farmers of the valley").split()
    return [
        (" town", f"The head is active when the context names a place or building {i} sentences earlier, such as a mill or a station.",
         " ".join(words[j % 7 : j % 7 + 8 + j % 9]))
        for i in range(n_explanations) for j in range(n_prompts)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--explanations", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--database", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from lookups.pipeline.config import ExplanationSettings, database_path
    from lookups.pipeline.llm.backends import LlmRequest, LocalBackend
    from lookups.pipeline.llm.templates import load_template, snippet

    torch.set_num_threads(2)
    questions = load_questions(args.database or database_path(), args.explanations, args.prompts)
    template = load_template("classify.v1")
    requests = [
        LlmRequest(str(i), "classify", template.messages(token=repr(tok), explanation=exp, prompt=snippet(prompt, tok, 300)), 3)
        for i, (tok, exp, prompt) in enumerate(questions)
    ]
    backend = LocalBackend(ExplanationSettings(batch_size=args.batch))
    backend._load()
    list(backend.run(requests[:2], lambda: True))  # warm-up

    started = time.perf_counter()
    cached = {r.key: resp.p_yes for r, resp in backend.run(requests, lambda: True)}
    t_cached = time.perf_counter() - started

    started = time.perf_counter()
    full = {}
    ordered = sorted(requests, key=lambda r: sum(len(m["content"]) for m in r.messages))
    for start in range(0, len(ordered), args.batch):
        batch = ordered[start : start + args.batch]
        enc = backend._encode(batch)
        with torch.no_grad():
            probs = backend.lm(**enc).logits[:, -1].float().softmax(-1)  # [batch, vocab], left-padded
        yes, no = probs[:, backend.yes_ids].sum(-1), probs[:, backend.no_ids].sum(-1)
        full.update({r.key: p for r, p in zip(batch, (yes / (yes + no)).tolist())})
    t_full = time.perf_counter() - started

    diff = max(abs(cached[k] - full[k]) for k in full)
    n = len(requests)
    print(f"questions: {n} ({len({q[1] for q in questions})} explanations)")
    print(f"full forward per question: {t_full:.2f} s ({t_full / n * 1000:.0f} ms per question)")
    print(f"prefix-cached (pipeline):  {t_cached:.2f} s ({t_cached / n * 1000:.0f} ms per question)")
    print(f"ratio full / prefix-cached: {t_full / t_cached:.2f}x   max |P(Yes) difference|: {diff:.1e}")


if __name__ == "__main__":
    main()
