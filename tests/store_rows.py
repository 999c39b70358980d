"""Rows and writers the store tests share (the local store in tests/unit/store, the object store in
tests/integration/object_store), and how the whole-run tests compare every result table."""

from __future__ import annotations

import pandas as pd

#: When a row was written, how long it took, and which run wrote it: not part of a result.
IGNORED = {"recorded_at", "created_at", "updated_at", "seconds", "run_id"}


def doc_rows(n: int, text: str = "t") -> pd.DataFrame:
    """``n`` rows of the ``documents`` table."""
    return pd.DataFrame({
        "doc_id": [f"d{i}" for i in range(n)], "doc_index": range(n), "source_id": "s", "title": "x", "passage_index": 0, "split": "explain",
        "text": text, "n_chars": 1,
    })


#: A writer process: ``python -c WRITER <views file> <name> <rounds> <own|shared>``. Each round replaces one of its
#: five own 50-row keys of ``documents`` (with ``shared``, also one of three keys every writer replaces) and appends
#: one ``llm_calls`` row.
WRITER = """
import sys, pandas as pd
from lookups.pipeline.store.store import Store
path, name, n, shared = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "shared"
store = Store(path)
for i in range(n):
    rows = pd.DataFrame({"doc_id": [f"d{j}" for j in range(50)], "doc_index": range(50), "source_id": "s", "title": "x",
                         "passage_index": 0, "split": "explain", "text": f"{name} {i}", "n_chars": 1})
    store.replace("documents", {"prompt_set_id": f"{name}-{i % 5}"}, rows)  # this writer's slots
    if shared:
        store.replace("documents", {"prompt_set_id": f"shared-{i % 3}"}, rows)  # slots both writers replace
    store.append("llm_calls", pd.DataFrame([{"cache_key": f"{name}-{i}", "run_id": name, "backend": "b", "llm_model": "m",
                 "template_version": "t", "purpose": "explain", "status": "ok", "prompt_tokens": 1, "completion_tokens": 1, "seconds": 0.1}]))
"""


def tables_as_text(store) -> dict[str, str]:
    """Every result table's rows, sorted, as CSV text (list columns included), without ``IGNORED``: equal text,
    equal results."""
    from lookups.pipeline.store.sql_files import TABLES

    out = {}
    for table in TABLES:
        columns = [c for c in store.query(f"SELECT * FROM {table} LIMIT 0").columns if c not in IGNORED]
        out[table] = store.query(f"SELECT {', '.join(columns)} FROM {table} ORDER BY ALL").to_csv(index=False)
    return out
