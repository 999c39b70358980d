"""What the look-up benchmarks share: the latest run's store, keys and model folder, from a views file."""

from __future__ import annotations

from pathlib import Path


def open_latest(database: Path):
    """(store, {'model_id', 'prompt_set_id'} of the latest run with look-ups, its model's local folder); exits with a
    one-line hint when the data folder has no such run."""
    from lookups.pipeline.inputs import checkpoints
    from lookups.pipeline.store.store import Store

    if not database.exists():
        raise SystemExit(f"No results at {database}: run `make demo` first.")
    store = Store(database)
    latest = store.query("SELECT model_id, prompt_set_id FROM head_lookups LIMIT 1")
    if not len(latest):
        raise SystemExit(f"No look-ups in {database}: run `make demo` first.")
    keys = latest.iloc[0].to_dict()
    name = store.query("SELECT name FROM models WHERE model_id = ?", [keys["model_id"]]).iloc[0, 0]
    return store, keys, str(checkpoints.resolve_model(name).local_dir)
