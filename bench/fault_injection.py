"""Fault injection (a script, not a test): killed runs, damaged result files and a full disk, each followed by a
rerun that must end with the tables of a run never interrupted.

1. Runs the planted circuit (`lookups run --model planted --corpus planted`) once, uninterrupted, in its own
   data folder: the reference, and its wall time T. Then reruns it unchanged (every step skipped after checking
   its files against the manifest) and times `lookups verify` on it: what verification costs.
2. Kills: N times, in a fresh data folder each, starts the same run and kills it and its runner (each leads a
   process group) with SIGKILL after a seeded random delay in [1 s, 0.95 T]; with --kill-at-steps, once more per step, as that
   step starts. Counts the staging files the kill left, then reruns to the end.
3. Damage (--damage): on a copy of the reference per trial, deletes, truncates or flips three bits of one
   table's files (every table, each way), checks that reading that table fails in one line, then reruns.
4. Bit flips (--bit-flips N): N single-bit flips of a neurons file, one at a time, each read as before
   manifests (a plain DuckDB read of the file) and through the store: the store must never read different rows.
5. A full disk (--full-disk, as root): the run on a 1.5 MB tmpfs, which must stop in one line; the tmpfs then
   grown to 256 MB, and a rerun.
After each rerun checks: every result table equal to the reference row for row (timestamps, compute times and
run ids left out; ``asset_versions`` by data version), no staging file left in the data folder, no run left
STARTED (or STARTING, NOT_STARTED) in the Dagster instance, nothing left pending, no damaged file.

Prints a table per kind of fault; exits 1 if any trial is not OK.

Usage: python bench/fault_injection.py [N=5] [--seed 0] [--workdir DIR] [--explainer contrastive]
                                       [--kill-at-steps] [--damage] [--bit-flips N] [--full-disk]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from tabulate import tabulate

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.common.files import STAGING_NAME
from lookups.pipeline.steps.registry import STEPS
from lookups.pipeline.store.sql_files import TABLES
from lookups.pipeline.store.store import Store

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
            kill_everything(run)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    return lines[-1][:60] if lines else "(no output yet)"


def kill_everything(run: subprocess.Popen) -> None:
    """SIGKILL `lookups run` and its runner (which leads its own process group, and would otherwise stop cleanly
    when `lookups run` dies) at once: a power cut or the OOM killer, not a stop."""
    try:
        runners = [int(pid) for pid in Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()]
    except OSError:
        runners = []
    for group in (*runners, run.pid):
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    run.wait()


def staging_files(data: Path) -> list[Path]:
    return [p for p in data.rglob(".*.tmp") if STAGING_NAME.match(p.name)]


def run_statuses(data: Path) -> dict[str, str]:
    db = data / "dagster_home" / "history" / "runs.db"
    if not db.exists():
        return {}
    with sqlite3.connect(db) as con:
        return dict(con.execute("SELECT run_id, status FROM runs").fetchall())


def table_select(store: Store, table: str) -> str:
    columns = [c for c in store.query(f"SELECT * FROM {table} LIMIT 0", require_results=False).columns]
    if table == "asset_versions":
        keep = ["asset", "scope", "data_version", "code_version", "complete"]  # stats hold timings and cache hits
    else:
        keep = [c for c in columns if c not in IGNORED]
    return f"SELECT {', '.join(keep)} FROM {table}"


def store_of(data: Path) -> Store:
    return Store(data / "lookups.duckdb", lock_wait_s=10.0)


def compare(reference: Path, data: Path) -> list[str]:
    """The tables that differ from the reference's (read through each store's published manifest, as every
    reader reads them), each with how many rows are on one side only."""
    ref, new = store_of(reference), store_of(data)
    if not new.exists():
        return ["no results"]
    versions = "SELECT DISTINCT asset, code_version FROM asset_versions"
    try:
        changed = {tuple(r) for r in ref.query(versions).values.tolist()} - {tuple(r) for r in new.query(versions).values.tolist()}
    except LookupsError:
        changed = set()
    if changed:  # not a fault: someone edited the code (a template, a step) while the bench ran
        return [f"code changed during the bench ({', '.join(sorted(a for a, _ in changed))}): rerun it"]
    differences = []
    con = duckdb.connect()
    for table in (*TABLES, "asset_versions"):
        try:
            a, b = ref.query(table_select(ref, table)), new.query(table_select(new, table))
        except LookupsError as err:
            differences.append(f"{table}: {err}"[:80])
            continue
        con.register("a", a)
        con.register("b", b)
        only_ref = con.execute("SELECT count(*) FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b)").fetchall()[0][0]
        only_new = con.execute("SELECT count(*) FROM (SELECT * FROM b EXCEPT ALL SELECT * FROM a)").fetchall()[0][0]
        if only_ref or only_new:
            differences.append(f"{table}: {only_ref} rows only in the reference, {only_new} only here")
    return differences


def table_rows(data: Path) -> int:
    store = store_of(data)
    return sum(int(store.query(f"SELECT count(*) AS n FROM {table}")["n"][0]) for table in TABLES)


def outcome(reference: Path, data: Path, code: int) -> dict:
    """What a rerun left: its exit code, the tables against the reference, staging files, unfinished runs,
    pending partitions, damaged files."""
    differences = compare(reference, data) if code == 0 else ["rerun failed"]
    verification = store_of(data).verify() if store_of(data).exists() else None
    statuses = run_statuses(data)
    found = {
        "code": code, "differences": differences, "staging": len(staging_files(data)),
        "unfinished": sum(s in UNFINISHED for s in statuses.values()),
        "pending": len(verification.pending) if verification else 0, "damaged": len(verification.damaged) if verification else 0,
    }
    found["ok"] = code == 0 and not differences and not any(found[k] for k in ("staging", "unfinished", "pending", "damaged"))
    return found


def outcome_cells(found: dict) -> list:
    tables = "equal" if not found["differences"] else "; ".join(found["differences"])[:80]
    return [found["code"], tables, found["staging"], found["unfinished"], found["pending"], found["damaged"], "OK" if found["ok"] else "FAILED"]


OUTCOME_HEADERS = ["rerun exit", "tables vs uninterrupted", "staging left", "runs unfinished", "pending", "damaged", "outcome"]


def run_and_kill_at(data: Path, cache: Path, extra: list[str], log: Path, step: str, timeout: float) -> str:
    """Start the run and SIGKILL its process group as ``step`` starts; what happened."""
    marker = f'Started execution of step "{step}"'
    with log.open("w") as out:
        run = subprocess.Popen(command(extra), env=environment(data, cache), stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        started = time.monotonic()
        while run.poll() is None and time.monotonic() - started < timeout:
            if marker in log.read_text():
                kill_everything(run)
                return f"killed as {step} started"
            time.sleep(0.05)
        if run.poll() is None:
            kill_everything(run)
            return "killed at the timeout"
    return "(finished before the step started)"


def damage(store: Store, table: str, how: str) -> int:
    """Damage every file of ``table`` the published manifest names; how many."""
    entries = [e for e in store.manifests.published().values() if e.table == table]
    for entry in entries:
        path = Path(store.root) / entry.file
        if how == "delete":
            path.unlink()
        elif how == "truncate":
            path.write_bytes(path.read_bytes()[: entry.bytes // 2])
        else:
            data = bytearray(path.read_bytes())
            for offset in (entry.bytes // 4, entry.bytes // 2, 3 * entry.bytes // 4):
                data[offset] ^= 0x10
            path.write_bytes(bytes(data))
    return len(entries)


def read_fails_in_one_line(data: Path, table: str) -> bool:
    try:
        store_of(data).query(f"SELECT count(*) FROM {table}")
    except LookupsError as err:
        return "\n" not in str(err) and "is damaged" in str(err)
    return False


def kill_trials(args, work: Path, reference: Path, cache: Path, extra: list[str], total: float) -> list[list]:
    """Random kills, then (``--kill-at-steps``) one kill as each step starts; a row per trial."""
    rng = random.Random(args.seed)
    plans = [("random", rng.uniform(1.0, 0.95 * total)) for _ in range(args.n)]
    if args.kill_at_steps:
        plans += [("step", step) for step in STEPS]
    rows = []
    for trial, (kind, at) in enumerate(plans, 1):
        data = work / f"kill{trial}"
        log = work / f"kill{trial}.log"
        if kind == "random":
            what = f"{at:.1f} s: " + run_and_kill(data, cache, extra, log, at)
        else:
            what = run_and_kill_at(data, cache, extra, log, at, timeout=3 * total)
        left_by_kill = len(staging_files(data))
        code, rerun_s = run_to_end(data, cache, extra, log)
        found = outcome(reference, data, code)
        rows.append([trial, what[:60], left_by_kill, f"{rerun_s:.1f}", *outcome_cells(found)])
        print(f"kill {trial}: {what[:60]}: {'OK' if found['ok'] else 'FAILED'}", flush=True)
    return rows


def damage_trials(work: Path, reference: Path, cache: Path, extra: list[str]) -> list[list]:
    """Each table's files deleted, truncated or bit-flipped on a copy of the reference, then a rerun."""
    rows = []
    present = [t for t in (*TABLES, "asset_versions") if any(e.table == t for e in store_of(reference).manifests.published().values())]
    for table in present:
        for how in ("delete", "truncate", "flip"):
            data = work / f"damage-{table}-{how}"
            shutil.copytree(reference, data, ignore=shutil.ignore_patterns("dagster_home"))
            files = damage(store_of(data), table, how)
            one_line = read_fails_in_one_line(data, table)
            code, rerun_s = run_to_end(data, cache, extra, work / f"damage-{table}-{how}.log")
            found = outcome(reference, data, code)
            found["ok"] &= one_line
            rows.append([table, how, files, "yes" if one_line else "NO", f"{rerun_s:.1f}", *outcome_cells(found)])
            print(f"damage {table} {how}: {'OK' if found['ok'] else 'FAILED'}", flush=True)
            shutil.rmtree(data, ignore_errors=True)
    return rows


def full_disk_trial(work: Path, reference: Path, cache: Path, extra: list[str]) -> list[list]:
    """The run on a 1.5 MB tmpfs (one line, non-zero exit), the tmpfs grown, a rerun."""
    mount = work / "small-disk"
    mount.mkdir(exist_ok=True)
    if subprocess.call(["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(mount)], stderr=subprocess.DEVNULL) != 0:
        print("full disk: skipped (mounting a tmpfs needs root)", flush=True)
        return []
    try:
        data, log = mount / "data", work / "full-disk.log"
        code, _ = run_to_end(data, cache, extra, log)
        lines = [line for line in log.read_text().splitlines() if line.startswith("lookups:")]
        said = lines[-1][:70] if lines else "(no one-line message)"
        subprocess.check_call(["mount", "-o", "remount,size=256m", str(mount)])
        rerun, rerun_s = run_to_end(data, cache, extra, log)
        found = outcome(reference, data, rerun)
        found["ok"] &= code != 0 and "Traceback" not in log.read_text() and bool(lines)
        print(f"full disk: {'OK' if found['ok'] else 'FAILED'}", flush=True)
        return [[code, said, f"{rerun_s:.1f}", *outcome_cells(found)]]
    finally:
        subprocess.call(["umount", str(mount)])


def bit_flip_trials(reference: Path, work: Path, n: int, seed: int) -> list[list]:
    """``n`` single-bit flips, one at a time, in the reference's ``neurons`` file (a copy): what a plain DuckDB
    read of the file (as every read was before manifests) and a read through the store make of each."""
    data = work / "bit-flips"
    shutil.copytree(reference, data, ignore=shutil.ignore_patterns("dagster_home"))
    entry = next(e for e in store_of(data).manifests.published().values() if e.table == "neurons")
    path = Path(store_of(data).root) / entry.file
    original = path.read_bytes()
    readers = {
        "plain DuckDB read of the file": lambda: duckdb.connect().sql(f"SELECT * FROM read_parquet('{path}') ORDER BY ALL").df().to_csv(),
        "read through the store": lambda: store_of(data).query("SELECT * FROM neurons ORDER BY ALL").to_csv(),
    }
    wanted = {name: read() for name, read in readers.items()}
    counts = {name: {"error": 0, "silently different": 0, "same": 0} for name in readers}
    rng = random.Random(seed)
    for _ in range(n):
        flipped = bytearray(original)
        flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(flipped))
        for name, read in readers.items():
            try:
                counts[name]["same" if read() == wanted[name] else "silently different"] += 1
            except Exception:
                counts[name]["error"] += 1
    shutil.rmtree(data, ignore_errors=True)
    rows = [[name, n, found["error"], found["silently different"], found["same"]] for name, found in counts.items()]
    return [[*row, "OK" if "store" not in row[0] or not row[3] else "FAILED"] for row in rows]


def verification_cost(reference: Path, cache: Path, extra: list[str], work: Path) -> str:
    """An unchanged rerun's wall time, and what checking every file against the manifest takes."""
    code, unchanged_s = run_to_end(reference, cache, extra, work / "unchanged.log")
    started = time.perf_counter()
    found = store_of(reference).verify()
    verify_s = time.perf_counter() - started
    return (f"unchanged rerun: {unchanged_s:.1f} s (exit {code}); `verify` of all {found.files} files ({found.bytes / 1e6:.2f} MB): "
            f"{verify_s * 1000:.0f} ms, of which hashing {found.seconds * 1000:.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=5, help="Runs killed at random points (default 5).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the kill delays (default 0).")
    parser.add_argument("--workdir", help="Where the data folders go (default: a temporary folder, removed after).")
    parser.add_argument("--cache-dir", default=str(REPO / "data"), help="LOOKUPS_CACHE_DIR: the planted circuit and model caches, shared (default data/).")
    parser.add_argument("--explainer", help="Pass --explainer to every run (default: the run's own default).")
    parser.add_argument("--kill-at-steps", action="store_true", help="Also kill one run as each step starts.")
    parser.add_argument("--damage", action="store_true", help="Also delete, truncate and bit-flip each table's files, then rerun.")
    parser.add_argument("--full-disk", action="store_true", help="Also run on a 1.5 MB tmpfs, then grow it and rerun (root only).")
    parser.add_argument("--bit-flips", type=int, default=0, metavar="N", help="Also flip N single bits of a neurons file, one at a time, and read it.")
    args = parser.parse_args()
    extra = ["--explainer", args.explainer] if args.explainer else []
    cache = Path(args.cache_dir).resolve()
    with tempfile.TemporaryDirectory(prefix="fault-injection-") as tmp:
        work = Path(args.workdir).resolve() if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        reference = work / "reference"
        code, total = run_to_end(reference, cache, extra, work / "reference.log")
        if code != 0:
            print(f"The uninterrupted run failed (exit {code}): see {work / 'reference.log'}", file=sys.stderr)
            return 1
        print(f"uninterrupted run: {total:.1f} s, {table_rows(reference)} result rows in {len(TABLES)} tables", flush=True)
        print(verification_cost(reference, cache, extra, work), flush=True)
        tables = [("kills", kill_trials(args, work, reference, cache, extra, total),
                   ["trial", "kill", "staging left by kill", "rerun s", *OUTCOME_HEADERS])]
        if args.damage:
            tables.append(("damaged files", damage_trials(work, reference, cache, extra),
                           ["table", "damage", "files", "read fails in one line", "rerun s", *OUTCOME_HEADERS]))
        if args.bit_flips:
            tables.append(("single-bit flips in a neurons file", bit_flip_trials(reference, work, args.bit_flips, args.seed),
                           ["reader", "flips", "error", "silently different", "same rows", "outcome"]))
        if args.full_disk:
            tables.append(("full disk", full_disk_trial(work, reference, cache, extra), ["run exit", "what it said", "rerun s", *OUTCOME_HEADERS]))
        all_ok = True
        for title, rows, headers in tables:
            print(f"\n{title}\n" + tabulate(rows, headers=headers))
            all_ok &= all(row[-1] == "OK" for row in rows)
        if args.workdir is None and not all_ok:
            print("\n(logs were in a temporary folder: pass --workdir to keep them)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
