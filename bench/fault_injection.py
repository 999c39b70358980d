"""Fault injection (a script, not a test): runs killed with SIGKILL at random points, then rerun, give the
results of a run never interrupted.

1. Runs the planted circuit (`lookups run --model planted --corpus planted`) once, uninterrupted, in its own
   data folder: the reference, and its wall time T.
2. N times, in a fresh data folder each: starts the same run, kills its whole process group with SIGKILL
   after a seeded random delay in [1 s, 0.95 T], counts the staging files the kill left, reruns to the end.
3. After each rerun checks: every result table equal to the reference row for row (timestamps, compute
   times and run ids left out; ``asset_versions`` by data version), no staging file left in the data folder,
   no run left STARTED (or STARTING, NOT_STARTED) in the Dagster instance, and the killed run marked failed.

Prints a table of kill times and outcomes; exits 1 if any trial is not OK.

Usage: python bench/fault_injection.py [N=5] [--seed 0] [--workdir DIR] [--explainer contrastive]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from tabulate import tabulate

from lookups.pipeline.common.files import STAGING_NAME
from lookups.pipeline.store.sql_files import TABLES

REPO = Path(__file__).resolve().parent.parent
#: Left out of the comparison: when a row was written and how long it took, and which run wrote it.
IGNORED = {"recorded_at", "created_at", "updated_at", "seconds", "run_id"}
UNFINISHED = ("NOT_STARTED", "STARTING", "STARTED")


def command(extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "lookups.pipeline.cli", "run", "--model", "planted", "--corpus", "planted", *extra]


def environment(data: Path, cache: Path) -> dict:
    return {**os.environ, "LOOKUPS_DATA_DIR": str(data), "LOOKUPS_CACHE_DIR": str(cache)}


def run_to_end(data: Path, cache: Path, extra: list[str], log: Path) -> tuple[int, float]:
    started = time.monotonic()
    with log.open("a") as out:
        code = subprocess.call(command(extra), env=environment(data, cache), stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    return code, time.monotonic() - started


def run_and_kill(data: Path, cache: Path, extra: list[str], log: Path, delay: float) -> str:
    """Start the run, SIGKILL its process group after ``delay`` seconds; the last log line before the kill."""
    with log.open("w") as out:
        run = subprocess.Popen(command(extra), env=environment(data, cache), stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        try:
            run.wait(timeout=delay)
            return "(finished before the kill)"
        except subprocess.TimeoutExpired:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return lines[-1][:60] if lines else "(no output yet)"


def staging_files(data: Path) -> list[Path]:
    return [p for p in data.rglob(".*.tmp") if STAGING_NAME.match(p.name)]


def run_statuses(data: Path) -> dict[str, str]:
    db = data / "dagster_home" / "history" / "runs.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT run_id, status FROM runs").fetchall())


def table_select(con: duckdb.DuckDBPyConnection, data: Path, table: str) -> str | None:
    files = f"{data}/lookups_tables/{table}/*.parquet"
    if not list((data / "lookups_tables" / table).glob("*.parquet")):
        return None
    columns = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{files}', union_by_name = true)").fetchall()]
    if table == "asset_versions":
        keep = ["asset", "scope", "data_version", "code_version", "complete"]  # stats hold timings and cache hits
    else:
        keep = [c for c in columns if c not in IGNORED]
    return f"SELECT {', '.join(keep)} FROM read_parquet('{files}', union_by_name = true)"


def compare(reference: Path, data: Path) -> list[str]:
    """The tables that differ from the reference's, each with how many rows are on one side only."""
    con = duckdb.connect()
    versions = "SELECT asset, scope, code_version FROM read_parquet('{}/lookups_tables/asset_versions/*.parquet', union_by_name = true)"
    if (data / "lookups_tables" / "asset_versions").is_dir():
        changed = con.execute(f"SELECT DISTINCT asset FROM ({versions.format(reference)} EXCEPT {versions.format(data)}) ORDER BY 1").fetchall()
        if changed:  # not a fault: someone edited the code (a template, a step) while the bench ran
            return [f"code changed during the bench ({', '.join(a for (a,) in changed)}): rerun it"]
    differences = []
    for table in (*TABLES, "asset_versions"):
        a, b = table_select(con, reference, table), table_select(con, data, table)
        if a is None or b is None:
            if a != b:
                differences.append(f"{table}: {'missing' if b is None else 'unexpected'}")
            continue
        only_ref = con.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {b})").fetchone()[0]
        only_new = con.execute(f"SELECT count(*) FROM ({b} EXCEPT ALL {a})").fetchone()[0]
        if only_ref or only_new:
            differences.append(f"{table}: {only_ref} rows only in the reference, {only_new} only here")
    return differences


def table_rows(data: Path) -> int:
    con = duckdb.connect()
    total = 0
    for table in TABLES:
        select = table_select(con, data, table)
        total += con.execute(f"SELECT count(*) FROM ({select})").fetchone()[0] if select else 0
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=5, help="Killed runs (default 5).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill delays (default 0).")
    parser.add_argument("--workdir", help="Where the data folders go (default: a temporary folder, removed after).")
    parser.add_argument("--cache-dir", default=str(REPO / "data"), help="LOOKUPS_CACHE_DIR: the planted circuit and model caches, shared (default data/).")
    parser.add_argument("--explainer", help="Pass --explainer to every run (default: the run's own default).")
    args = parser.parse_args()
    extra = ["--explainer", args.explainer] if args.explainer else []
    cache = Path(args.cache_dir).resolve()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="fault-injection-") as tmp:
        work = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        reference = work / "reference"
        code, total = run_to_end(reference, cache, extra, work / "reference.log")
        if code != 0:
            print(f"The uninterrupted run failed (exit {code}): see {work / 'reference.log'}", file=sys.stderr)
            return 1
        print(f"uninterrupted run: {total:.1f} s, {table_rows(reference)} result rows in {len(TABLES)} tables", flush=True)
        rows, all_ok = [], True
        for trial in range(1, args.n + 1):
            data = work / f"trial{trial}"
            delay = rng.uniform(1.0, 0.95 * total)
            last = run_and_kill(data, cache, extra, work / f"trial{trial}.log", delay)
            left_by_kill = len(staging_files(data))
            unfinished_after_kill = sum(s in UNFINISHED for s in run_statuses(data).values())
            code, rerun_s = run_to_end(data, cache, extra, work / f"trial{trial}.log")
            statuses = run_statuses(data)
            differences = compare(reference, data) if code == 0 else ["rerun failed"]
            leftovers = staging_files(data)
            unfinished = [run_id for run_id, status in statuses.items() if status in UNFINISHED]
            failed = sum(status == "FAILURE" for status in statuses.values())
            ok = code == 0 and not differences and not leftovers and not unfinished
            all_ok &= ok
            rows.append([
                trial, f"{delay:.1f}", last, left_by_kill, unfinished_after_kill, f"{rerun_s:.1f}", code,
                "equal" if not differences else "; ".join(differences)[:80], len(leftovers), len(unfinished), failed, "OK" if ok else "FAILED",
            ])
            print(f"trial {trial}: killed at {delay:.1f} s, {'OK' if ok else 'FAILED'}", flush=True)
        print()
        print(tabulate(rows, headers=[
            "trial", "kill at s", "last log line before the kill", "staging left by kill", "runs unfinished after kill",
            "rerun s", "rerun exit", "tables vs uninterrupted", "staging after rerun", "runs STARTED after rerun", "runs marked FAILURE", "outcome",
        ]))
        if args.workdir is None and not all_ok:
            print("\n(logs were in a temporary folder: pass --workdir to keep them)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
