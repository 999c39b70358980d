"""Steps 2-3 of docs/method.md end to end: max-activating documents per selected neuron and split, truncated.

Ranking: a neuron's documents are ranked by their original max activation; truncation runs in rounds
over the best ``keep`` documents not yet tried, so documents beyond the first ``keep`` are truncated
only when an earlier one had no qualifying suffix under ``max_prompt_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pandas as pd

from lookups.pipeline.common.progress import Progress
from lookups.pipeline.config import SPLITS, ExemplarSettings
from lookups.pipeline.inputs.runtime import ModelRuntime
from lookups.pipeline.science.harvest import NeuronReader, harvest_top_k, make_windows
from lookups.pipeline.science.truncation import TruncationStats, TruncationTask, truncate

EXEMPLAR_COLUMNS = [
    "layer", "neuron", "split", "doc_id", "rank", "doc_max_act", "doc_max_pos", "window_start",
    "prompt_start", "prompt_n_tokens", "prompt_token_ids", "prompt_text", "prompt_act", "act_ratio",
    "next_token_id", "next_token",
]


#: Characters per tokenizer call. A fast tokenizer holds several hundred bytes per character while it works
#: (offsets, alignments, token strings: +518 MB for one 4 MB text with SmolLM2's), so documents are tokenized
#: in calls of this size and kept as int64 ids only: the step's memory no longer grows with the longest
#: document. At the largest passage_chars a passage is still tokenized whole.
TOKENIZE_CHARS = 100_000


def tokenize_documents(tokenizer, texts: list[str], max_chars: int = TOKENIZE_CHARS) -> list[np.ndarray]:
    """Document tokens without special tokens (BOS is prepended where a prompt is run), tokenized in calls of
    at most ``max_chars`` characters. A longer text is cut before a space between two words, where a
    byte-level BPE pre-tokenizer (GPT-2's, SmolLM2's) splits anyway, so its tokens are those of the whole
    text; only a run of ``max_chars`` with no such space is hard-cut."""
    parts: list[list[np.ndarray]] = [[] for _ in texts]
    batch: list[str] = []
    owners: list[int] = []
    size = 0

    def flush() -> None:
        if batch:
            for owner, ids in zip(owners, tokenizer(batch, add_special_tokens=False)["input_ids"]):
                parts[owner].append(np.asarray(ids, dtype=np.int64))
            batch.clear()
            owners.clear()

    for index, text in enumerate(texts):
        for piece in _word_pieces(text, max_chars):
            if batch and size + len(piece) > max_chars:
                flush()
                size = 0
            batch.append(piece)
            owners.append(index)
            size += len(piece)
    flush()
    return [p[0] if len(p) == 1 else np.concatenate(p) for p in parts]


def _word_pieces(text: str, max_chars: int) -> Iterator[str]:
    """``text`` in consecutive pieces of at most ``max_chars``, each after the first starting with the single
    space before a word (the pieces concatenate to ``text``); made one at a time, never a copy of the whole."""
    start = 0
    while len(text) - start > max_chars:
        cut = text.rfind(" ", start + 1, start + max_chars)
        while cut > start and (text[cut - 1].isspace() or text[cut + 1].isspace()):
            cut = text.rfind(" ", start + 1, cut)
        if cut <= start:
            cut = start + max_chars
        yield text[start:cut]
        start = cut
    yield text[start:]


def find_exemplars(
    runtime: ModelRuntime, neurons: pd.DataFrame, documents: pd.DataFrame, settings: ExemplarSettings, progress: Progress | None = None,
) -> tuple[pd.DataFrame, dict]:
    """neurons: rows with layer, neuron, token_id, token (the selected ones). documents: doc_index, doc_id, split,
    text. Harvests each neuron's top documents per split, truncates them in rounds, and returns the
    ``neuron_exemplars`` rows (without model/prompt-set keys) and run statistics."""
    neurons = neurons.reset_index(drop=True)
    documents = documents.sort_values("doc_index").reset_index(drop=True)
    arch = runtime.arch
    reader = NeuronReader(arch.model, [layer.mlp_out for layer in arch.layers], neurons["layer"].to_numpy(), neurons["neuron"].to_numpy())
    doc_tokens = tokenize_documents(runtime.tokenizer, documents["text"].tolist())
    stats: dict = {"documents": len(documents), "document_tokens": int(sum(len(t) for t in doc_tokens)), "neurons": len(neurons)}
    # Windows never exceed the model's context (BOS takes one position).
    window_tokens = min(settings.window_tokens, runtime.facts.n_ctx - 1)
    tops = _harvest(reader, doc_tokens, documents["split"].to_numpy(), window_tokens, len(neurons), settings, runtime, progress, stats)

    def row_acts(rows, queries):
        return reader.at_positions(rows, queries, runtime.bos_id, settings.batch_tokens, runtime.pad_id)

    kept = _truncate_in_rounds(tops, len(neurons), doc_tokens, row_acts, settings, progress, stats)
    frame = _exemplar_rows(kept, neurons, documents["doc_id"].to_numpy(), doc_tokens, runtime.tokenizer)
    stats["neurons_with_exemplars"] = int(frame.groupby(["layer", "neuron"]).ngroups) if len(frame) else 0
    if len(frame):
        stats["mean_prompt_tokens"] = float(frame["prompt_n_tokens"].mean())
    return frame, stats


def _harvest(
    reader: NeuronReader, doc_tokens: list[np.ndarray], splits: np.ndarray, window_tokens: int, n_neurons: int, settings: ExemplarSettings,
    runtime: ModelRuntime, progress: Progress | None, stats: dict,
) -> dict:
    """Each split's streaming top-k documents per neuron (``harvest.TopK`` by split)."""
    started = time.perf_counter()
    lengths = [len(t) for t in doc_tokens]
    harvest_total, harvested, tops = sum(lengths), 0, {}
    for split in SPLITS:
        windows = make_windows(lengths, window_tokens, np.nonzero(splits == split)[0])
        base = harvested

        def report(phase, done, total, base=base):
            if progress:
                progress(phase, base + done, harvest_total)

        tops[split] = harvest_top_k(
            reader, doc_tokens, windows, n_neurons, settings.top_k, runtime.bos_id, runtime.pad_id, settings.batch_tokens, report
        )
        harvested += sum(w.length for w in windows)
    stats["harvest_seconds"] = time.perf_counter() - started
    stats["harvest_tokens_per_second"] = harvest_total / max(stats["harvest_seconds"], 1e-9)
    return tops


def _truncate_in_rounds(
    tops: dict, n_neurons: int, doc_tokens: list[np.ndarray], row_acts, settings: ExemplarSettings, progress: Progress | None, stats: dict,
) -> dict:
    """Truncate each (split, neuron)'s documents in rank order, in rounds over the best ones not yet tried,
    until it has ``keep`` (``keep_heldout``) prompts or none is left. Returns (split, neuron column) ->
    [(task, result)] of the kept prompts."""
    started = time.perf_counter()
    truncation_stats = TruncationStats()
    # candidates[(split, col)]: documents in rank order, those where the neuron fires (others are no exemplar of it)
    candidates = {}
    for split, top in tops.items():
        for col in range(n_neurons):
            valid = np.nonzero((top.docs[col] >= 0) & np.isfinite(top.values[col]) & (top.values[col] > 0))[0]
            candidates[(split, col)] = [
                TruncationTask(col, int(top.docs[col, j]), int(top.positions[col, j]), int(top.window_starts[col, j]), float(top.values[col, j]))
                for j in valid
            ]
    kept: dict = {key: [] for key in candidates}
    keep_of = {"explain": settings.keep, "heldout": settings.keep_heldout}
    tried = {key: 0 for key in candidates}
    dropped = evaluated = 0
    while True:
        round_tasks, owners = [], []
        for key, tasks in candidates.items():
            batch = tasks[tried[key] : tried[key] + max(keep_of[key[0]] - len(kept[key]), 0)]
            tried[key] += len(batch)
            round_tasks += batch
            owners += [key] * len(batch)
        if not round_tasks:
            break
        base, evaluated = evaluated, evaluated + len(round_tasks)

        def report(done, total, base=base, evaluated=evaluated):
            if progress:
                progress("truncate", base + done, evaluated)

        results = truncate(round_tasks, doc_tokens, row_acts, settings.act_ratio, settings.max_prompt_tokens, report, truncation_stats)
        for key, task, result in zip(owners, round_tasks, results):
            if result is None:
                dropped += 1
            else:
                kept[key].append((task, result))
    stats.update(
        truncate_seconds=time.perf_counter() - started, truncations_evaluated=evaluated, truncations_dropped=dropped,
        truncation_rows=truncation_stats.rows, truncation_tokens=truncation_stats.row_tokens,
        truncation_candidates=truncation_stats.candidates, truncation_stages=truncation_stats.stages,
    )
    return kept


def _exemplar_rows(kept: dict, neurons: pd.DataFrame, doc_ids: np.ndarray, doc_tokens: list[np.ndarray], tokenizer) -> pd.DataFrame:
    """The ``neuron_exemplars`` rows of the kept prompts, ranked within (neuron, split) by original activation."""
    rows = []
    for (split, col), pairs in kept.items():
        neuron = neurons.iloc[col]
        pairs.sort(key=lambda p: -p[0].original)
        for rank, (task, result) in enumerate(pairs, start=1):
            start = result.start(task)
            ids = doc_tokens[task.doc_index][start : task.pos + 1]
            rows.append(
                {
                    "layer": int(neuron["layer"]), "neuron": int(neuron["neuron"]), "split": split, "doc_id": doc_ids[task.doc_index],
                    "rank": rank, "doc_max_act": task.original, "doc_max_pos": task.pos, "window_start": task.window_start,
                    "prompt_start": start, "prompt_n_tokens": int(len(ids)), "prompt_token_ids": ids.tolist(),
                    "prompt_text": tokenizer.decode(ids.tolist()), "prompt_act": result.activation, "act_ratio": result.activation / task.original,
                    "next_token_id": int(neuron["token_id"]), "next_token": neuron["token"],
                }
            )
    return pd.DataFrame(rows, columns=EXEMPLAR_COLUMNS)
