"""Truncation search logic on a fake activation function (no model)."""

import numpy as np
import pytest

from lookups.pipeline.science.truncation import STAGE_WIDTH, TruncationStats, TruncationTask, truncate


def fake_row_acts(activation_of_suffix):
    """A fake model: the activation at token j of a row is ``activation_of_suffix(row[: j + 1])``."""

    def row_acts(rows, queries):
        return np.array([activation_of_suffix(rows[r][: j + 1], col) for r, j, col in queries], dtype=np.float32)

    return row_acts


def test_finds_the_shortest_suffix_even_when_not_monotone():
    doc = np.arange(100, 160)
    pos = 50
    # Non-monotone in length: length 3 qualifies, 4-9 do not, 10+ do; a binary search from the
    # full length would settle on 10.
    def act(suffix, col):
        n = len(suffix)
        return 1.0 if n == 3 or n >= 10 else 0.1

    task = TruncationTask(column=0, doc_index=0, pos=pos, window_start=0, original=1.0)
    [result] = truncate([task], [doc], fake_row_acts(act), act_ratio=0.8, max_prompt_tokens=100)
    assert result.length == 3
    assert result.start(task) == pos - 2


def test_finds_lengths_in_later_stages_and_respects_the_length_limit():
    doc = np.arange(0, 300)
    need = {0: 30, 1: 99, 2: 100}  # shortest qualifying length per column

    def act(suffix, col):
        return 2.0 if len(suffix) >= need[col] else 0.0

    tasks = [TruncationTask(column=c, doc_index=0, pos=250, window_start=0, original=2.0) for c in need]
    results = truncate(tasks, [doc], fake_row_acts(act), act_ratio=0.8, max_prompt_tokens=100)
    assert results[0].length == 30
    assert results[1].length == 99
    assert results[2] is None  # would need a 100-token prompt: dropped


def test_suffix_never_reaches_before_the_window():
    doc = np.arange(0, 300)

    def act(suffix, col):
        return 1.0 if len(suffix) >= 20 else 0.0

    task = TruncationTask(column=0, doc_index=0, pos=265, window_start=256, original=1.0)
    [result] = truncate([task], [doc], fake_row_acts(act), act_ratio=0.8, max_prompt_tokens=100)
    assert result is None  # only 10 tokens of window before pos


def test_rows_are_shared_between_tasks_of_one_document():
    doc = np.arange(0, 100)

    def act(suffix, col):
        return 1.0 if len(suffix) >= STAGE_WIDTH + 1 else 0.0  # resolved in the second stage

    tasks = [TruncationTask(column=c, doc_index=0, pos=60, window_start=0, original=1.0) for c in range(4)]
    shared, alone = TruncationStats(), TruncationStats()
    truncate(tasks, [doc], fake_row_acts(act), 0.8, 100, stats=shared)
    truncate(tasks[:1], [doc], fake_row_acts(act), 0.8, 100, stats=alone)
    assert shared.rows == alone.rows == 2 * STAGE_WIDTH  # resolved in the second stage
    assert shared.candidates == 4 * alone.candidates


def test_nonpositive_original_activation_is_dropped():
    task = TruncationTask(column=0, doc_index=0, pos=5, window_start=0, original=-0.5)
    assert truncate([task], [np.arange(10)], fake_row_acts(lambda s, c: 1.0), 0.8, 100) == [None]


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_on_random_activations(seed):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(0, 1000, size=rng.integers(20, 200)) for _ in range(4)]
    table = {}

    def act(suffix, col):
        key = (tuple(suffix.tolist()), col)
        if key not in table:
            table[key] = float(rng.random())
        return table[key]

    tasks = []
    for d, doc in enumerate(docs):
        for col in range(3):
            pos = int(rng.integers(0, len(doc)))
            tasks.append(TruncationTask(col, d, pos, 0, 1.0))
    results = truncate(tasks, docs, fake_row_acts(act), act_ratio=0.8, max_prompt_tokens=60)
    for task, result in zip(tasks, results):
        doc = docs[task.doc_index]
        expected = None
        for length in range(1, min(59, task.pos + 1) + 1):
            if act(doc[task.pos - length + 1 : task.pos + 1], task.column) >= 0.8:
                expected = length
                break
        assert (result.length if result else None) == expected
