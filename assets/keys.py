"""The model and corpus keys registered in the instance (the two dimensions of every partition): list them
with whether each still resolves, remove the ones that never will.

A key that stopped resolving (a deleted checkpoint folder, a moved corpus file) stays registered, and the
sources' observation warns about it on every run until it is removed. ``lookups keys`` (pipeline/cli.py, which
never imports Dagster) calls this as a subprocess: ``python -m lookups.assets.keys [list | remove --model X]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import dagster as dg

from lookups.pipeline.common.errors import LookupsError
from lookups.pipeline.inputs import corpora, sources

from .automation import CORPUS_DIMENSION, MODEL_DIMENSION
from .instance import open_instance

DIMENSIONS = {"model": MODEL_DIMENSION, "corpus": CORPUS_DIMENSION}


def why_unresolved(kind: str, key: str) -> str | None:
    """None when the key resolves as the sources' observation resolves it, else the first line of why not."""
    try:
        if kind == "model":
            sources.model_fingerprint(key)
        else:
            source = sources.corpus_source(key)
            if source != corpora.EMBEDDED_CORPUS and not source.startswith("hf:") and not Path(source).expanduser().exists():
                return f"{source} does not exist"
            sources.corpus_fingerprint(key)
    except Exception as err:  # whatever observing it would hit
        return (str(err).strip().splitlines() or [type(err).__name__])[0]
    return None


def list_keys(instance: dg.DagsterInstance) -> list[tuple[str, str, str | None]]:
    """(kind, key, why it does not resolve or None) for every registered key."""
    return [(kind, key, why_unresolved(kind, key)) for kind, dimension in DIMENSIONS.items() for key in instance.get_dynamic_partitions(dimension)]


def remove_keys(instance: dg.DagsterInstance, keys: dict[str, list[str]]) -> list[tuple[str, str]]:
    """Delete the keys (``{kind: [key, ...]}``) from the instance; their results stay in the store. Every key
    is checked first, so a mistyped one removes nothing."""
    found = []
    for kind, wanted in keys.items():
        registered = set(instance.get_dynamic_partitions(DIMENSIONS[kind]))
        for key in wanted:
            # A relative path was registered absolute, from the folder the run started in (here, if the
            # file is gone since).
            candidates = [key, key.strip(), str(Path(key.strip()).expanduser().absolute())]
            try:
                candidates.append(sources.normalize_key(kind, key))
            except LookupsError:
                pass
            match = next((c for c in candidates if c in registered), None)
            if match is None:
                raise LookupsError(f"No {kind} key {key!r} is registered: `lookups keys` lists them (copy the key as shown).")
            found.append((kind, match))
    for kind, key in found:
        instance.delete_dynamic_partition(DIMENSIONS[kind], key)
    return found


def print_keys(rows: list[tuple[str, str, str | None]]) -> None:
    if not rows:
        print("No model or corpus keys are registered yet (`lookups run` registers the ones it runs).")
        return
    width = max(len(key) for _, key, _ in rows)
    for kind, key, why in rows:
        print(f"{kind:<7} {key:<{width}}  {'resolves' if why is None else 'does not resolve: ' + why}")
    if any(why is not None for *_, why in rows):
        print("\nRemove a key that will not resolve again with `lookups keys remove --model KEY` or `--corpus KEY`.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("action", nargs="?", default="list", choices=["list", "remove"])
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--corpus", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        with open_instance() as instance:
            if args.action == "list":
                print_keys(list_keys(instance))
                return 0
            if not (args.model or args.corpus):
                raise LookupsError("`lookups keys remove` needs --model KEY or --corpus KEY: `lookups keys` lists them.")
            for kind, key in remove_keys(instance, {"model": args.model, "corpus": args.corpus}):
                print(f"Removed {kind} key {key} (results computed for it stay in the store).")
    except LookupsError as err:
        print(f"lookups: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
