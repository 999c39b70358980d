"""Steps 2-3 of docs/method.md end to end: max-activating documents per selected neuron and split, truncated.

Ranking: a neuron's documents are ranked by their original max activation; truncation runs in rounds
over the best ``keep`` documents not yet tried, so documents beyond the first ``keep`` are truncated
only when an earlier one had no qualifying suffix under ``max_prompt_tokens``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd

from lookups.pipeline.config import ExemplarSettings
from lookups.pipeline.inputs.models import mlp_output_paths, pad_token_id
from lookups.pipeline.science.harvest import NeuronReader, harvest_top_k, make_windows
from lookups.pipeline.science.truncation import TruncationStats, TruncationTask, truncate

PhaseProgress = Callable[[str, int, int], None]  # (phase, done, total)

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
    bridge,
    activation_model,
    neurons: pd.DataFrame,
    documents: pd.DataFrame,
    settings: ExemplarSettings,
    bos_id: int,
    progress: PhaseProgress | None = None,
) -> tuple[pd.DataFrame, dict]:
    """bridge: the TransformerBridge (tokenizer, module map); activation_model: the same checkpoint as a plain
    Hugging Face model (``models.load_activation_model``). neurons: rows with layer, neuron, token_id, token
    (the selected ones). documents: doc_index, doc_id, split, text. Returns the ``neuron_exemplars`` rows (without model/prompt-set keys) and run statistics."""
    tokenizer = bridge.tokenizer
    pad_id = pad_token_id(tokenizer, bos_id)
    neurons = neurons.reset_index(drop=True)
    documents = documents.sort_values("doc_index").reset_index(drop=True)
    reader = NeuronReader(activation_model, mlp_output_paths(bridge), neurons["layer"].to_numpy(), neurons["neuron"].to_numpy())
    started = time.perf_counter()
    doc_tokens = tokenize_documents(tokenizer, documents["text"].tolist())
    lengths = [len(t) for t in doc_tokens]
    stats: dict = {"documents": len(documents), "document_tokens": int(sum(lengths)), "neurons": len(neurons)}

    # Windows never exceed the model's context (BOS takes one position).
    window_tokens = min(settings.window_tokens, int(bridge.cfg.n_ctx) - 1)
    tops = {}
    harvest_total = sum(lengths)
    harvested = 0
    for split in ("explain", "heldout"):
        indices = np.nonzero(documents["split"].to_numpy() == split)[0]
        windows = make_windows(lengths, window_tokens, indices)
        base = harvested

        def report(done, total, base=base):
            if progress:
                progress("harvest", base + done, harvest_total)

        tops[split] = harvest_top_k(reader, doc_tokens, windows, len(neurons), settings.top_k, bos_id, pad_id, settings.batch_tokens, report)
        harvested += sum(w.length for w in windows)
    stats["harvest_seconds"] = time.perf_counter() - started
    stats["harvest_tokens_per_second"] = harvest_total / max(stats["harvest_seconds"], 1e-9)

    def row_acts(rows, queries):
        return reader.at_positions(rows, queries, bos_id, settings.batch_tokens, pad_id)

    truncation_stats = TruncationStats()

    started = time.perf_counter()
    # candidates[(split, col)]: documents in rank order; kept[(split, col)]: (rank position, task, result)
    candidates = {}
    for split, top in tops.items():
        for col in range(len(neurons)):
            # A document where the neuron never fires is no exemplar of it.
            valid = np.nonzero((top.docs[col] >= 0) & np.isfinite(top.values[col]) & (top.values[col] > 0))[0]
            candidates[(split, col)] = [
                TruncationTask(col, int(top.docs[col, j]), int(top.positions[col, j]), int(top.window_starts[col, j]), float(top.values[col, j]))
                for j in valid
            ]
    kept: dict = {key: [] for key in candidates}
    keep_of = {"explain": settings.keep, "heldout": settings.keep_heldout}
    tried = {key: 0 for key in candidates}
    dropped = 0
    evaluated = 0
    while True:
        round_tasks, owners = [], []
        for key, tasks in candidates.items():
            need = keep_of[key[0]] - len(kept[key])
            batch = tasks[tried[key] : tried[key] + max(need, 0)]
            tried[key] += len(batch)
            round_tasks += batch
            owners += [key] * len(batch)
        if not round_tasks:
            break
        base = evaluated
        evaluated += len(round_tasks)

        def report(done, total, base=base, evaluated=evaluated):
            if progress:
                progress("truncate", base + done, evaluated)

        results = truncate(round_tasks, doc_tokens, row_acts, settings.act_ratio, settings.max_prompt_tokens, report, truncation_stats)
        for key, task, result in zip(owners, round_tasks, results):
            if result is None:
                dropped += 1
            else:
                kept[key].append((task, result))
    stats["truncate_seconds"] = time.perf_counter() - started
    stats["truncations_evaluated"] = evaluated
    stats["truncations_dropped"] = dropped
    stats["truncation_rows"] = truncation_stats.rows
    stats["truncation_tokens"] = truncation_stats.row_tokens
    stats["truncation_candidates"] = truncation_stats.candidates
    stats["truncation_stages"] = truncation_stats.stages

    rows = []
    doc_ids = documents["doc_id"].to_numpy()
    for (split, col), pairs in kept.items():
        neuron = neurons.iloc[col]
        pairs.sort(key=lambda p: -p[0].original)
        for rank, (task, result) in enumerate(pairs, start=1):
            start = result.start(task)
            ids = doc_tokens[task.doc_index][start : task.pos + 1]
            rows.append(
                {
                    "layer": int(neuron["layer"]),
                    "neuron": int(neuron["neuron"]),
                    "split": split,
                    "doc_id": doc_ids[task.doc_index],
                    "rank": rank,
                    "doc_max_act": task.original,
                    "doc_max_pos": task.pos,
                    "window_start": task.window_start,
                    "prompt_start": start,
                    "prompt_n_tokens": int(len(ids)),
                    "prompt_token_ids": ids.tolist(),
                    "prompt_text": tokenizer.decode(ids.tolist()),
                    "prompt_act": result.activation,
                    "act_ratio": result.activation / task.original,
                    "next_token_id": int(neuron["token_id"]),
                    "next_token": neuron["token"],
                }
            )
    frame = pd.DataFrame(rows, columns=EXEMPLAR_COLUMNS)
    stats["exemplars"] = len(frame)
    stats["neurons_with_exemplars"] = int(frame.groupby(["layer", "neuron"]).ngroups) if len(frame) else 0
    if len(frame):
        stats["mean_prompt_tokens"] = float(frame["prompt_n_tokens"].mean())
    return frame, stats
