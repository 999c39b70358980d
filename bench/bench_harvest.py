"""Harvesting benchmark (a script, not a test): prints ratios measured in one run.

1. Speed: on the same batches, the harvesting pass's tokens/s divided by a bare batched forward pass's
   tokens/s (target >= 0.9). The bare pass is the plain Hugging Face model's full forward (SDPA attention,
   logits included), the fastest full pass here; the bridge's own forward is slower still.
2. Memory: peak memory growth during harvesting for a corpus of N documents and for 2N (target: flat),
   each in a fresh subprocess, sampled from /proc.

Usage: python bench/bench_harvest.py [--documents 120] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakSampler:
    def __init__(self, every: float = 0.02):
        self.every, self.peak, self._stop = every, 0.0, threading.Event()

    def __enter__(self):
        self.base = _rss_mb()
        self.peak = self.base
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_mb())
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def setup(documents: int, selection: str | None = None):
    """Model, selected neurons (from a JSON file when given, else the catalog), document tokens, and the
    reader the pipeline harvests with (plain HF model, hooks on the selected neurons)."""
    import pandas as pd

    from lookups.pipeline import steps
    from lookups.pipeline.config import EMBEDDED_MODEL, CatalogSettings, CorpusSettings, PromptSetSettings
    from lookups.pipeline.inputs import architecture, checkpoints, corpora, models
    from lookups.pipeline.science import catalog
    from lookups.pipeline.science.exemplars import tokenize_documents
    from lookups.pipeline.science.harvest import NeuronReader
    from lookups.pipeline.store.store import Store

    source = checkpoints.resolve_model(EMBEDDED_MODEL)
    bridge = models.load_bridge(source.local_dir)
    facts = models.model_facts(bridge)
    if selection:
        selected = pd.read_json(selection)
    else:
        cat = catalog.build_catalog(architecture.load_architecture(source.local_dir), bridge.tokenizer, CatalogSettings())
        selected = cat.loc[cat["selected"], ["layer", "neuron"]].reset_index(drop=True)
    sources = pd.read_parquet(steps.run_corpus(CorpusSettings(), Store()).handle.parquet_path)  # parsed once, cached
    prompt_set = corpora.build_prompt_set(sources, PromptSetSettings(max_documents=documents, max_passages_per_source=None))
    doc_tokens = tokenize_documents(bridge.tokenizer, prompt_set.documents["text"].tolist())
    hf = models.load_activation_model(source.local_dir)
    reader = NeuronReader(hf, models.mlp_output_paths(bridge), selected["layer"].to_numpy(), selected["neuron"].to_numpy())
    return bridge, facts, selected, doc_tokens, reader


def speed(documents: int, repeats: int, selection_out: str) -> dict:
    import numpy as np
    import torch

    from lookups.pipeline.science.batching import pack_batches, pad_right
    from lookups.pipeline.science.harvest import harvest_top_k, make_windows

    bridge, facts, selected, doc_tokens, reader = setup(documents)
    selected.to_json(selection_out)
    windows = make_windows([len(t) for t in doc_tokens], 256)
    bos, pad = facts.bos_token_id, bridge.tokenizer.pad_token_id or facts.bos_token_id
    batches = pack_batches([w.length + 1 for w in windows], 4096)
    tokens = sum(w.length for w in windows)

    def bare():
        for batch in batches:
            rows = [np.concatenate([[bos], doc_tokens[windows[i].doc_index][windows[i].start : windows[i].end]]) for i in batch]
            padded, _ = pad_right(rows, pad)
            reader.model(padded, use_cache=False)

    def harvest():
        harvest_top_k(reader, doc_tokens, windows, len(selected), 30, bos, pad, 4096)

    with torch.no_grad():
        bare_times, harvest_times = [], []
        for _ in range(repeats):  # interleaved, so drift on a shared machine hits both
            t = time.perf_counter()
            bare()
            bare_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            harvest()
            harvest_times.append(time.perf_counter() - t)
    bare_tps, harvest_tps = tokens / min(bare_times), tokens / min(harvest_times)
    return {"tokens": tokens, "neurons": len(selected), "bare_tokens_per_s": bare_tps, "harvest_tokens_per_s": harvest_tps, "ratio": harvest_tps / bare_tps}


def memory(documents: int, selection: str) -> dict:
    from lookups.pipeline.science.harvest import harvest_top_k, make_windows

    bridge, facts, selected, doc_tokens, reader = setup(documents, selection)
    windows = make_windows([len(t) for t in doc_tokens], 256)
    with PeakSampler() as sampler:
        harvest_top_k(reader, doc_tokens, windows, len(selected), 30, facts.bos_token_id, facts.bos_token_id, 4096)
    return {"documents": documents, "tokens": sum(w.length for w in windows), "peak_growth_mb": sampler.peak - sampler.base}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", choices=["memory"], help=argparse.SUPPRESS)
    parser.add_argument("--selection", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "memory":
        print(json.dumps(memory(args.documents, args.selection)))
        return
    import tempfile

    selection = str(Path(tempfile.mkdtemp()) / "selection.json")
    result = speed(args.documents, args.repeats, selection)
    print(f"speed   {result['tokens']} tokens, {result['neurons']} neurons: bare forward {result['bare_tokens_per_s']:.0f} tok/s, "
          f"harvest {result['harvest_tokens_per_s']:.0f} tok/s, ratio {result['ratio']:.2f} (target >= 0.9)")
    peaks = []
    for n in (args.documents, 2 * args.documents):
        out = subprocess.run(
            [sys.executable, __file__, "--child", "memory", "--documents", str(n), "--selection", selection], capture_output=True, text=True, check=True
        )
        peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
    a, b = peaks
    print(f"memory  {a['tokens']} tokens: +{a['peak_growth_mb']:.0f} MB; {b['tokens']} tokens: +{b['peak_growth_mb']:.0f} MB; "
          f"ratio {b['peak_growth_mb'] / max(a['peak_growth_mb'], 1e-9):.2f} for {b['tokens'] / a['tokens']:.2f}x the tokens (target: flat, ~1.0)")


if __name__ == "__main__":
    main()
