"""The warehouse: where the Parquet files live (a local folder or an object store), and the DuckDB
connections that read them, each with the deployment's setup SQL and, for a person's query, locked down."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb


def warehouse_root(path: Path) -> str:
    """Where the Parquet files live: ``LOOKUPS_WAREHOUSE`` (a folder or an object-store URL such as
    ``s3://bucket/lookups``), else a folder beside the views file."""
    return os.environ.get("LOOKUPS_WAREHOUSE") or str(path.with_name(path.stem + "_tables"))


def is_local(root: str) -> bool:
    """Whether the warehouse is a local folder rather than an object-store URL."""
    return "://" not in root


def sql_string(value: str) -> str:
    """``value`` as a SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


DUCKDB_SETUP_ENV = "LOOKUPS_DUCKDB_SETUP"


def connect(database: str = ":memory:", **kwargs) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the deployment's setup SQL run first (``LOOKUPS_DUCKDB_SETUP``, e.g.
    ``CREATE SECRET (TYPE s3, PROVIDER credential_chain)`` for a warehouse on S3): credentials stay in the
    environment, never in the code or the views file."""
    con = duckdb.connect(database, **kwargs)
    setup = os.environ.get(DUCKDB_SETUP_ENV)
    if setup:
        con.execute(setup)
    return con


def lock_down(con: duckdb.DuckDBPyConnection, readable: list[str], scratch: str) -> None:
    """Close ``con`` around what it may read (docs/data.md, "What a query can touch"): no file but ``readable``
    (folders end in '/'), no extension installed or loaded, no Python variable scanned, and the configuration
    locked, so no SET, RESET or PRAGMA undoes any of it. With nothing readable the local file system is off.
    Otherwise DuckDB may still write in its temp directory, so that is ``scratch``, a folder thrown away after."""
    folders = [p for p in readable if p.endswith("/")]
    paths = [p for p in readable if not p.endswith("/")]
    if folders:  # must be set before external access goes off
        con.execute(f"SET allowed_directories = [{', '.join(map(sql_string, folders))}]")
    if paths:
        con.execute(f"SET allowed_paths = [{', '.join(map(sql_string, paths))}]")
    con.execute(f"SET temp_directory = {sql_string(scratch)}")
    for setting in ("autoload_known_extensions", "autoinstall_known_extensions", "allow_community_extensions", "python_enable_replacements"):
        con.execute(f"SET {setting} = false")
    con.execute("SET enable_external_access = false")
    if not readable:
        con.execute("SET disabled_filesystems = 'LocalFileSystem'")  # after external access: turning that off checks the file system
    con.execute("SET lock_configuration = true")
