"""`lookups query` reads the results and nothing else, whatever the SQL (docs/data.md, "What a query can touch").

A real store (the planted chain, explained and scored) is copied for each hostile statement; the statement must be
refused with a one-line ``QueryError``, and afterwards every file under the data folder and under a folder outside
it is byte-identical and none is new. The locked connection is also probed directly, without the statement check,
to show that DuckDB itself refuses.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from chains import run_every_named_query

from lookups.pipeline.store.queries import QueryError, run_query
from lookups.pipeline.store.sql_files import TABLES
from lookups.pipeline.store.store import Store

#: Hostile statements. Placeholders: {part} a neurons part file, {tables} the results folder, {data} the data
#: folder, {views} the views file, {outside} a folder outside the data folder (holding secret.txt, secret.csv,
#: secret.parquet).
HOSTILE = {
    # EXPLAIN ANALYZE runs its statement: every kind of write behind it
    "explain-analyze-copy-over-part": "EXPLAIN ANALYZE COPY (SELECT * FROM neurons LIMIT 0) TO '{part}' (FORMAT parquet)",
    "explain-options-analyze-copy": "EXPLAIN (ANALYZE, FORMAT json) COPY (SELECT * FROM neurons LIMIT 0) TO '{part}' (FORMAT parquet)",
    "explain-analyze-copy-outside": "EXPLAIN ANALYZE COPY (SELECT * FROM neurons) TO '{outside}/stolen.csv'",
    "explain-analyze-ctas": "EXPLAIN ANALYZE CREATE TABLE t AS SELECT * FROM neurons",
    "explain-analyze-insert": "EXPLAIN ANALYZE INSERT INTO neurons SELECT * FROM neurons",
    "explain-analyze-update": "EXPLAIN ANALYZE UPDATE neurons SET score = 0",
    "explain-analyze-delete": "EXPLAIN ANALYZE DELETE FROM neurons",
    "explain-analyze-drop": "EXPLAIN ANALYZE DROP VIEW neurons",
    "explain-analyze-export": "EXPLAIN ANALYZE EXPORT DATABASE '{outside}/export'",
    "explain-copy": "EXPLAIN COPY (SELECT 1) TO '{part}'",
    "lowercase-comment-explain": "/* a read */ explain analyse -- really\n copy (select 1 as a) to '{part}' (format parquet)",
    # plain writes
    "copy-over-part": "COPY (SELECT * FROM neurons LIMIT 0) TO '{part}' (FORMAT parquet)",
    "copy-into-results-folder": "COPY (SELECT 1 AS a) TO '{tables}/neurons/part-new.parquet' (FORMAT parquet)",
    "copy-outside": "COPY neurons TO '{outside}/stolen.csv'",
    "export-database": "EXPORT DATABASE '{data}/export'",
    "create-table-as": "CREATE TABLE t AS SELECT 1",
    "drop-view": "DROP VIEW neurons",
    "attach-new-file": "ATTACH '{outside}/new.duckdb' AS x",
    "attach-views-file": "ATTACH '{views}' AS v",
    "attach-in-results": "ATTACH '{tables}/new.duckdb' AS y",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    # configuration: every way to take the locks off
    "set-external-access": "SET enable_external_access = true",
    "reset-external-access": "RESET enable_external_access",
    "set-lock": "SET lock_configuration = false",
    "set-allowed-dirs": "SET allowed_directories = ['/']",
    "pragma-profiling": "PRAGMA enable_profiling",
    "call-enable-logging": "CALL enable_logging(storage = 'file', storage_path = '{outside}/log')",
    "select-enable-logging": "SELECT * FROM enable_logging(storage = 'file', storage_path = '{outside}/log')",
    # statements hidden from a naive check
    "second-statement": "SELECT 1; COPY (SELECT 1) TO '{part}'",
    "comment-hides-semicolon": "SELECT 1 /* ; */; DROP VIEW neurons",
    "leading-comment": "-- SELECT\nCOPY (SELECT 1 AS a) TO '{part}' (FORMAT parquet)",
    "cte-insert": "WITH x AS (SELECT * FROM neurons) INSERT INTO neurons SELECT * FROM x",
    "cte-copy": "WITH x AS (SELECT 1) COPY (SELECT * FROM x) TO '{part}'",
    "query-function-copy": "SELECT * FROM query('COPY (SELECT 1) TO ''{part}''')",
    # reading files that are not the results
    "read-text-passwd": "SELECT * FROM read_text('/etc/passwd')",
    "read-csv-passwd": "SELECT * FROM read_csv('/etc/passwd', sep = ':', header = false)",
    "read-text-tmp": "SELECT * FROM read_text('{outside}/secret.txt')",
    "read-csv-tmp": "SELECT * FROM read_csv('{outside}/secret.csv')",
    "read-parquet-tmp": "SELECT * FROM read_parquet('{outside}/secret.parquet')",
    "replacement-scan-tmp": "SELECT * FROM '{outside}/secret.csv'",
    "read-blob-tmp": "SELECT * FROM read_blob('{outside}/secret.txt')",
    "sniff-csv-tmp": "SELECT * FROM sniff_csv('{outside}/secret.csv')",
    "parquet-metadata-tmp": "SELECT * FROM parquet_metadata('{outside}/secret.parquet')",
    "glob-etc": "SELECT * FROM glob('/etc/*')",
    "glob-tmp": "SELECT * FROM glob('{outside}/*')",
    "dotdot-escape": "SELECT * FROM read_text('{tables}/../../outside/secret.txt')",
    "read-views-stamp": "SELECT * FROM read_text('{views}.views')",
}


def _snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every file under the folders."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def copy_of_store(filled, tmp_path):
    """(store, placeholders, folders to watch): a fresh copy of the filled data folder, so no probe sees another's
    damage, with its views file already refreshed for the new location."""
    _, original = filled
    data = tmp_path / "data"
    shutil.copytree(original.path.parent, data)
    store = Store(data / original.path.name)
    run_query("SELECT count(*) AS n FROM neurons", None, store)  # the views file follows the copy: a write of ours, not the probe's
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the secret\n")
    (outside / "secret.csv").write_text("a,b\n1,the secret\n")
    pd.DataFrame({"a": [1], "b": ["the secret"]}).to_parquet(outside / "secret.parquet")
    part = sorted(Path(store.table_dir("neurons")).glob("part-*.parquet"))[0]
    values = {"part": part, "tables": store.root, "data": data, "views": store.path, "outside": outside}
    return store, values, (data, outside)


@pytest.mark.parametrize("probe", sorted(HOSTILE))
def test_a_hostile_statement_is_refused_and_changes_no_file(copy_of_store, probe):
    store, values, watched = copy_of_store
    before = _snapshot(*watched)
    sql = HOSTILE[probe].format(**values)
    with pytest.raises(QueryError) as refused:
        frame = run_query(sql, None, store)
        print(frame)
    message = str(refused.value)
    assert message.startswith(("Refused", "The SQL does not parse", "The query failed")), message
    if message.startswith("Refused"):  # DuckDB's own errors keep their LINE and caret lines
        assert "\n" not in message and len(message) < 400, message  # one line, shown alone by the CLI
    assert "the secret" not in message and "root:" not in message
    assert _snapshot(*watched) == before
    assert store.query("SELECT count(*) AS n FROM neurons")["n"][0] > 0  # and the results still read


@pytest.mark.parametrize("probe", [
    "explain-analyze-copy-over-part", "copy-over-part", "copy-into-results-folder", "copy-outside", "export-database", "attach-views-file",
    "attach-in-results", "set-external-access", "set-lock", "read-text-passwd", "read-csv-tmp", "glob-tmp", "dotdot-escape",
])
def test_the_connection_itself_refuses_without_the_statement_check(copy_of_store, probe):
    """What stops the write is DuckDB, not only the parse: the same statements on the locked connection directly."""
    store, values, watched = copy_of_store
    before = _snapshot(*watched)
    with pytest.raises(duckdb.Error) as refused:
        store.query_read_only(HOSTILE[probe].format(**values))
    assert "the secret" not in str(refused.value)
    assert _snapshot(*watched) == before


def test_reads_still_work_named_queries_views_and_explain(filled):
    circuit, store = filled
    for name, frame in run_every_named_query(circuit, store).items():
        assert len(frame) > 0, name
    for table in TABLES:  # the locked connection reads exactly what the pipeline's own reads see
        locked = run_query(f"SELECT * FROM {table}", None, store)
        internal = store.query(f"SELECT * FROM {table}", require_results=False)
        pd.testing.assert_frame_equal(locked, internal, check_dtype=False, obj=table)
    for sql in [
        "EXPLAIN SELECT * FROM neurons", "EXPLAIN ANALYZE SELECT count(*) FROM neurons", "EXPLAIN (FORMAT json) SELECT 1",
        "EXPLAIN (SELECT 1)", "DESCRIBE neurons", "SUMMARIZE neurons", "WITH x AS (SELECT 1 AS a) SELECT * FROM x", "FROM heads_by_layer",
    ]:
        assert len(run_query(sql, None, store)) > 0, sql
    assert run_query("SELECT count(*) AS n FROM neurons WHERE layer = $layer", {"layer": str(circuit.layer)}, store)["n"][0] > 0


def test_a_file_outside_the_results_reads_only_when_allowed(filled, tmp_path, monkeypatch):
    _, store = filled
    (tmp_path / "cwd" / ".tmp").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "cwd")  # DuckDB's default temp directory, '.tmp', is relative to it, and writable even when locked
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "labels.csv").write_text("layer,label\n1,first\n2,second\n")
    sql = f"SELECT n.layer, m.label, count(*) AS n FROM neurons n JOIN read_csv('{mine}/labels.csv') m USING (layer) GROUP BY ALL ORDER BY 1"
    with pytest.raises(QueryError, match="--allow-files"):
        run_query(sql, None, store)
    joined = run_query(sql, None, store, allow_files=[mine])
    assert joined["label"].tolist() == ["first", "second"]
    single = run_query(f"SELECT * FROM read_csv('{mine}/labels.csv')", None, store, allow_files=[mine / "labels.csv"])
    assert len(single) == 2
    before = _snapshot(store.path.parent, tmp_path)
    for sql in [f"COPY (SELECT 1) TO '{mine}/written.csv'", f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{mine}/written.csv'"]:
        with pytest.raises(QueryError):
            run_query(sql, None, store, allow_files=[mine])
    with pytest.raises(duckdb.Error):  # the results folder stays out of reach even of DuckDB itself
        store.query_read_only(f"COPY (SELECT 1) TO '{store.root}/neurons/part-x.parquet'", allow_files=[f"{mine}/"])
    with pytest.raises(duckdb.Error):  # nor is DuckDB's temp directory a way out: it is a private folder, thrown away after
        store.query_read_only("COPY (SELECT 1) TO '.tmp/written.csv'", allow_files=[f"{mine}/"])
    assert _snapshot(store.path.parent, tmp_path) == before
    for inside_or_above in [store.path.parent.parent, f"{store.root}/neurons", store.path]:
        with pytest.raises(QueryError, match="overlaps the results"):
            run_query("SELECT 1", None, store, allow_files=[inside_or_above])
    with pytest.raises(QueryError, match="No file or folder"):
        run_query("SELECT 1", None, store, allow_files=[tmp_path / "nope"])


def test_the_command_line_refuses_in_one_line(filled, tmp_path):
    _, store = filled
    data = tmp_path / "data"
    shutil.copytree(store.path.parent, data)
    env = {**os.environ, "LOOKUPS_DATA_DIR": str(data)}
    lookups = Path(sys.executable).with_name("lookups")

    def query(*args):
        return subprocess.run([str(lookups), "query", *args], capture_output=True, text=True, env=env, timeout=120)

    assert query("SELECT count(*) AS n FROM neurons").returncode == 0  # the views file follows the copy
    before = _snapshot(data)
    part = sorted((data / Path(store.root).name / "neurons").glob("part-*.parquet"))[0]
    refused = query(f"EXPLAIN ANALYZE COPY (SELECT * FROM neurons LIMIT 0) TO '{part}' (FORMAT parquet)")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("lookups: Refused") and refused.stderr.count("\n") == 1, refused.stderr
    read = query("SELECT * FROM read_text('/etc/passwd')")
    assert read.returncode == 2 and read.stderr.count("\n") == 1 and "--allow-files" in read.stderr, read.stderr
    assert _snapshot(data) == before
    later = query("SELECT count(*) AS n FROM neurons", "--format", "csv")
    assert later.returncode == 0 and int(later.stdout.split()[1]) > 0
    help_text = query("--help").stdout
    assert "--allow-files" in help_text
