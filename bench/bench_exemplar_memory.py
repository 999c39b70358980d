"""Peak memory of the exemplar step on one long passage, by the passage's size: it should stay flat (bounded by
the batch and the tokenizer's piece, pipeline/science/exemplars.py ``TOKENIZE_CHARS``), not grow with the text.

    .venv/bin/python bench/bench_exemplar_memory.py [--sizes-mb 0.5 1 4 16]

Each size runs in a fresh process on the planted model: the peak resident size is reset just before
``find_exemplars`` (``/proc/self/clear_refs``) and read after it (``VmHWM``), so model loading is not counted.
Prints MB of growth per size and the ratio of the largest to the smallest (1.0: flat).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap

PROBE = textwrap.dedent(
    """
    import json, random, sys, tempfile
    import pandas as pd
    from lookups.pipeline.config import ExemplarSettings
    from lookups.pipeline.inputs import planted
    from lookups.pipeline.inputs.runtime import load_runtime
    from lookups.pipeline.science import exemplars

    words = ["wizard", "people", "spell", "school", "friends", "games", "along", "after", "magic", "river"]
    rng = random.Random(0)
    text = " ".join(rng.choice(words) for _ in range(int(float(sys.argv[1]) * 1e6 / 6.5)))  # no sentence end
    circuit = planted.build_planted_circuit(tempfile.mkdtemp())
    runtime = load_runtime(circuit.model_dir, "cpu")
    runtime.arch  # the weights, loaded before the measurement
    docs = pd.DataFrame({"doc_index": [0], "doc_id": ["d0"], "split": ["explain"], "text": [text]})
    neurons = pd.DataFrame([{"layer": 2, "neuron": 77, "token_id": 5, "token": " magic"}])

    def status(key):
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key + ":"))

    open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current resident size
    before = status("VmRSS")
    frame, stats = exemplars.find_exemplars(runtime, neurons, docs, ExemplarSettings(**planted.EXEMPLAR_CONFIG))
    print(json.dumps({"growth_mb": (status("VmHWM") - before) / 1024, "chars": len(text), "tokens": stats["document_tokens"]}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[0.5, 1.0, 4.0])
    args = parser.parse_args()
    growth = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes_mb:
            done = subprocess.run([sys.executable, "-c", PROBE, str(size)], capture_output=True, text=True, cwd=tmp, check=True)
            measured = json.loads(done.stdout.strip().splitlines()[-1])
            growth[size] = measured["growth_mb"]
            print(f"{size:6.2f} MB passage ({measured['tokens']:,} tokens): peak +{measured['growth_mb']:.0f} MB")
    smallest, largest = min(growth), max(growth)
    print(f"peak growth ratio, {largest:g} MB over {smallest:g} MB: {growth[largest] / max(growth[smallest], 1e-9):.2f} (1.0: flat)")


if __name__ == "__main__":
    main()
