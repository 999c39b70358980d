"""Step 3 of docs/method.md: the shortest suffix that still switches the neuron on.

For a max-activating position ``pos`` in a document, the candidate prompt of length ℓ is ``BOS +
tokens[pos-ℓ+1 .. pos]``. We want the smallest ℓ whose last-token activation is at least ``act_ratio`` of
the original. The activation is not monotone in ℓ, so a binary search (the paper's) can miss the
shortest suffix; instead every length is evaluated, shortest first, in stages of growing lengths, and a
task stops at the first stage that holds a qualifying length.

Candidates are shared through causality: the row ``BOS + tokens[s .. e]`` gives the activation of every
prompt that starts at ``s`` and ends at any ``p <= e``. So a stage runs one row per (document, start),
long enough for the furthest task that needs it, and reads each task's neuron at its own position.
Tasks of several neurons (and several positions) in one document then share their forward passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Lengths evaluated per stage. A task resolved at length ℓ costs Σ_{k ≤ ℓ + STAGE_WIDTH - 1} (k + 1) tokens:
#: one length per stage wastes nothing past the answer, and a stage still batches every open task's row
#: (measured on 1,920 prompts: width 4 ran 1.05x the tokens of width 1; a 1-8, 9-24, 25-56 scheme 2x).
STAGE_WIDTH = 1

#: rows (document tokens, BOS not included) and queries (row, token index in the row, column) ->
#: ``[n_queries]`` activations, each row run with BOS prepended.
RowActsFn = Callable[[list[np.ndarray], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TruncationTask:
    column: int  # the neuron's column in the reader's output
    doc_index: int
    pos: int  # max-activating position, in document tokens
    window_start: int  # a suffix never reaches before its window
    original: float  # activation at pos in the full window


@dataclass(frozen=True)
class Truncation:
    length: int  # tokens in the prompt, BOS not counted; the prompt is tokens[pos-length+1 .. pos]
    activation: float

    def start(self, task: TruncationTask) -> int:
        return task.pos - self.length + 1


def longest_allowed(task: TruncationTask, max_prompt_tokens: int) -> int:
    """Longest candidate: under ``max_prompt_tokens`` and inside the task's window."""
    return min(max_prompt_tokens - 1, task.pos - task.window_start + 1)


@dataclass
class TruncationStats:
    rows: int = 0
    row_tokens: int = 0  # tokens run, BOS included
    candidates: int = 0  # (task, length) pairs evaluated
    stages: list = field(default_factory=list)


def truncate(
    tasks: Sequence[TruncationTask],
    doc_tokens: Sequence[np.ndarray],
    row_acts: RowActsFn,
    act_ratio: float,
    max_prompt_tokens: int,
    progress: Callable[[int, int], None] | None = None,
    stats: TruncationStats | None = None,
) -> list[Truncation | None]:
    """The shortest qualifying suffix per task, or None when none is shorter than ``max_prompt_tokens``
    (or the original activation is not positive, where a ratio means nothing)."""
    results: list[Truncation | None] = [None] * len(tasks)
    limits = [longest_allowed(t, max_prompt_tokens) if t.original > 0 else 0 for t in tasks]
    open_tasks = [i for i, limit in enumerate(limits) if limit >= 1]
    lo = 1
    while True:
        stage_end = lo + STAGE_WIDTH - 1
        open_tasks = [i for i in open_tasks if limits[i] >= lo]
        if not open_tasks:
            break
        row_end: dict[tuple[int, int], int] = {}  # (doc, start) -> furthest end needed
        for i in open_tasks:
            task = tasks[i]
            for length in range(lo, min(stage_end, limits[i]) + 1):
                key = (task.doc_index, task.pos - length + 1)
                row_end[key] = max(row_end.get(key, -1), task.pos)
        row_index = {key: r for r, key in enumerate(row_end)}
        rows = [doc_tokens[doc][start : end + 1] for (doc, start), end in row_end.items()]
        queries, spans = [], {}
        for i in open_tasks:
            task = tasks[i]
            first = len(queries)
            for length in range(lo, min(stage_end, limits[i]) + 1):
                start = task.pos - length + 1
                queries.append((row_index[(task.doc_index, start)], task.pos - start, task.column))
            spans[i] = (first, len(queries))
        values = row_acts(rows, np.asarray(queries, dtype=np.int64))
        if stats is not None:
            stats.rows += len(rows)
            stats.row_tokens += sum(len(r) + 1 for r in rows)
            stats.candidates += len(queries)
        # A task's queries are contiguous and in increasing length: its first hit is the shortest.
        for i in open_tasks:
            first, end = spans[i]
            hits = np.nonzero(values[first:end] >= act_ratio * tasks[i].original)[0]
            if len(hits):
                results[i] = Truncation(length=lo + int(hits[0]), activation=float(values[first + hits[0]]))
        open_tasks = [i for i in open_tasks if results[i] is None]
        if progress:
            progress(len(tasks) - len(open_tasks), len(tasks))
        if stats is not None:
            stats.stages.append(
                {
                    "lengths": f"{lo}-{stage_end}", "tasks": len(spans), "resolved": len(spans) - len(open_tasks),
                    "rows": len(rows), "tokens": sum(len(r) + 1 for r in rows),
                }
            )
        lo = stage_end + 1
    return results
