"""Store benchmark (a script, not a test): prints ratios measured in one run.

The store writes each (table, key) as a Parquet file, conformed through the schema in an in-memory DuckDB,
and reads through views over the files (the Parquet + catalog design chosen for parallel partitions). This
compares it, on the same synthetic head_attributions rows (the largest table: one row per exemplar and
candidate head), with the single-file layout it replaced: rows inserted into a DuckDB table in one file.

- write: replacing one key's rows (the Parquet store) vs DELETE + INSERT in a DuckDB file;
- read: the query a step runs on them (mean score per pair), through the views vs on the table;
- parallel: two processes writing different keys at once (the Parquet store; the DuckDB file cannot:
  its second writer gets a lock error).

Targets: write and read within 2x of the DuckDB file (the price of files any process can write), parallel
writes with no error.

Usage: python bench/bench_store.py [--rows 400000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from lookups.pipeline.store.sql_files import sql_text
from lookups.pipeline.store.store import Store

QUERY = "SELECT layer, neuron, head_layer, head, avg(score) AS s FROM head_attributions WHERE model_id = ? AND prompt_set_id = ? GROUP BY ALL"


def attribution_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    exemplars = n // 256
    frame = pd.DataFrame(
        {
            "layer": np.repeat(rng.integers(20, 30, exemplars), 256),
            "neuron": np.repeat(rng.integers(0, 1536, exemplars), 256),
            "doc_id": np.repeat([f"d{i}" for i in range(exemplars)], 256),
            "split": "explain",
            "head_layer": np.tile(np.repeat(np.arange(29), 9)[:256], exemplars),
            "head": np.tile(np.tile(np.arange(9), 29)[:256], exemplars),
        }
    )
    frame = frame.drop_duplicates(["layer", "neuron", "doc_id", "head_layer", "head"]).reset_index(drop=True)
    for column in ("gate_contribution", "in_contribution", "score"):
        frame[column] = rng.normal(size=len(frame))
    frame["active"] = frame["score"] > 2
    return frame


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


WRITER = """
import sys, pandas as pd
from lookups.pipeline.store.store import Store
frame = pd.read_parquet(sys.argv[2])
Store(sys.argv[1]).replace("head_attributions", {"model_id": sys.argv[3], "prompt_set_id": "p"}, frame)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=400_000)
    args = parser.parse_args()
    frame = attribution_rows(args.rows)
    keys = {"model_id": "m", "prompt_set_id": "p"}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "lookups.duckdb")
        write_parquet = best_of(lambda: store.replace("head_attributions", keys, frame))
        read_parquet = best_of(lambda: store.query(QUERY, ["m", "p"]))

        single = Path(tmp) / "single.duckdb"
        with duckdb.connect(str(single)) as con:
            con.execute(sql_text("schema.sql"))

        def write_single():
            with duckdb.connect(str(single)) as con:
                con.execute("BEGIN")
                con.execute("DELETE FROM head_attributions WHERE model_id = 'm' AND prompt_set_id = 'p'")
                con.register("incoming", frame.assign(**keys))
                con.execute("INSERT INTO head_attributions BY NAME SELECT * FROM incoming")
                con.execute("COMMIT")

        def read_single():
            with duckdb.connect(str(single), read_only=True) as con:
                con.execute(QUERY, ["m", "p"]).df()

        write_db = best_of(write_single)
        read_db = best_of(read_single)

        staged = Path(tmp) / "frame.parquet"
        frame.to_parquet(staged)
        started = time.perf_counter()
        writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), str(staged), f"m{i}"], stderr=subprocess.PIPE, text=True) for i in range(2)]
        errors = [w.communicate()[1] for w in writers]
        parallel = time.perf_counter() - started
        ok = all(w.returncode == 0 for w in writers)
        arrived = store.query("SELECT model_id, count(*) AS n FROM head_attributions WHERE model_id IN ('m0', 'm1') GROUP BY 1")

    print(f"rows: {len(frame):,} head_attributions rows of one (model, prompt set)")
    print(f"write: Parquet store {write_parquet:.2f} s, DuckDB file {write_db:.2f} s -> ratio {write_parquet / write_db:.2f} (target <= 2)")
    print(f"read:  Parquet store {read_parquet:.2f} s, DuckDB file {read_db:.2f} s -> ratio {read_parquet / read_db:.2f} (target <= 2)")
    print(f"parallel: two processes writing two keys at once: {'ok' if ok else 'FAILED'} in {parallel:.1f} s, "
          f"rows arrived {dict(zip(arrived['model_id'], arrived['n']))}")
    if not ok:
        print("\n".join(e[-500:] for e in errors))


if __name__ == "__main__":
    main()
