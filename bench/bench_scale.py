"""Scale benchmark (a script, not a test): the pipeline's forward-pass steps on a random-weight model of any
``transformers`` shape, with tokens/s and peak memory per step, on ``cpu`` or ``cuda``.

It builds a model of the chosen shape with random weights (a preset below, built offline from the
``transformers`` config classes, or any ``config.json``), saves it to a temporary folder with a byte-level BPE
tokenizer of exactly the config's vocabulary size, writes N documents of random words, picks M neurons in the
last layers the catalog would select from (``CatalogSettings``), and times, through the science functions the
steps call (``steps/heads.py``) with the settings of ``pipeline/config.py``:

- harvest: every document through the max-activation pass (streaming top-k per neuron);
- truncation: the shortest qualifying suffix of each kept document (same ``find_exemplars`` call);
- attribution: every head's direct contribution on each truncated prompt;
- ablation: each neuron's ``--heads-per-neuron`` strongest heads (by mean score) zero-ablated on its explain
  prompts (the pipeline ablates its consistent pairs, whose number random weights do not predict).

First a bare batched forward pass (the plain Hugging Face model, logits included) over the harvest's batches
is timed: each step's tokens/s is also printed as a ratio to it. Tokens: for the bare pass and the harvest
the document tokens (BOS not counted), for the others the tokens each step runs (BOS and repeats included).
Peak memory per step: on CUDA ``torch.cuda.max_memory_allocated`` (reset at each step's start; the weights
count in it); on CPU the resident set, sampled every 10 ms (``growth``: over the step's start; memory an
earlier step freed and this one reuses is not counted).

Random weights: the cost of harvest, attribution and ablation depends on the shape alone; truncation's depends
also on how long the qualifying suffixes are (printed: mean prompt tokens), which trained weights change.

Usage:
  python bench/bench_scale.py --config gpt2 --docs 8 --neurons 4                  # CPU: ~7 min on 2 cores (truncation 5 of them)
  python bench/bench_scale.py --config gpt2-large --docs 1 --neurons 2            # the paper's 774M: runs in ~7 min, ~12.5 GB RSS
  python bench/bench_scale.py --config gpt2-large --docs 300 --neurons 200 --device cuda   # the paper's scale, on a GPU
  python bench/bench_scale.py --config-json path/config.json --set num_hidden_layers=4
  python bench/bench_scale.py --config pythia-160m --settings run.yaml --json out.json   # step settings as for `lookups run --config`

Presets: gpt2, gpt2-medium, gpt2-large (774M, the paper's), gpt2-xl, pythia-160m, pythia-410m (GPT-NeoX,
parallel blocks), smollm2-135m (Llama, grouped-query attention, the embedded model's shape), llama-1b
(TinyLlama-1.1B's shape).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path

BOS = "<|endoftext|>"

#: name -> (transformers config class, arguments). Vocabulary, context and ids not given are the class's defaults.
PRESETS: dict[str, tuple[str, dict]] = {
    "gpt2": ("GPT2Config", {"n_embd": 768, "n_layer": 12, "n_head": 12}),
    "gpt2-medium": ("GPT2Config", {"n_embd": 1024, "n_layer": 24, "n_head": 16}),
    "gpt2-large": ("GPT2Config", {"n_embd": 1280, "n_layer": 36, "n_head": 20}),  # 774M parameters: the paper's model
    "gpt2-xl": ("GPT2Config", {"n_embd": 1600, "n_layer": 48, "n_head": 25}),
    "pythia-160m": (
        "GPTNeoXConfig",
        {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "rotary_pct": 0.25,
         "use_parallel_residual": True, "max_position_embeddings": 2048, "vocab_size": 50304, "tie_word_embeddings": False},
    ),
    "pythia-410m": (
        "GPTNeoXConfig",
        {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096, "rotary_pct": 0.25,
         "use_parallel_residual": True, "max_position_embeddings": 2048, "vocab_size": 50304, "tie_word_embeddings": False},
    ),
    "smollm2-135m": (
        "LlamaConfig",
        {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
         "head_dim": 64, "vocab_size": 49152, "max_position_embeddings": 8192, "rope_theta": 100000.0, "tie_word_embeddings": True},
    ),
    "llama-1b": (
        "LlamaConfig",
        {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32, "num_key_value_heads": 4,
         "head_dim": 64, "vocab_size": 32000, "max_position_embeddings": 2048, "tie_word_embeddings": False},
    ),
}


# ------------------------------------------------------------------ the pipeline's calls, one function each
# As steps/heads.py makes them. When a step's call changes there, change the one line here.


def find_exemplars(runtime, neurons, documents, settings, progress):
    """Steps 2-3, harvest and truncation (``run_exemplars``)."""
    from lookups.pipeline.science import exemplars

    return exemplars.find_exemplars(runtime, neurons, documents, settings, progress)


def attribute(model_dir: str, device: str, prompts, bos_id: int, pad_id: int, settings):
    """Step 4, head attribution (``run_attributions``), over the model's verified ``Architecture``."""
    from lookups.pipeline.inputs import architecture
    from lookups.pipeline.science import attribution

    return attribution.attribute_exemplars(architecture.load_architecture(model_dir, device), prompts, bos_id, settings, None, pad_id)


def ablate(model_dir: str, device: str, rows, bos_id: int, pad_id: int, settings):
    """Step 8, head ablation (``run_ablations``), over the model's verified ``Architecture``."""
    from lookups.pipeline.inputs import architecture
    from lookups.pipeline.science import ablation

    return ablation.ablate_pairs(ablation.Intervener(architecture.load_architecture(model_dir, device)), rows, settings, bos_id, pad_id)


# ------------------------------------------------------------------ the model, its tokenizer, the corpus


def build_config(preset: str | None, config_json: str | None, overrides: list[str]):
    import transformers

    if config_json:
        values = json.loads(Path(config_json).read_text())
        config = transformers.AutoConfig.for_model(values.pop("model_type"), **values)
    else:
        class_name, arguments = PRESETS[preset]
        config = getattr(transformers, class_name)(**arguments)
    for item in overrides:
        key, _, raw = item.partition("=")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        setattr(config, key, value)
    # One special token (id 0) is BOS, EOS and padding, as in the tokenizer below.
    config.bos_token_id = config.eos_token_id = config.pad_token_id = 0
    return config


#: The tokenizer's first ids: BOS (also EOS and padding), the word-start marker, the letters; words follow.
SYMBOLS = [BOS, "Ġ"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]


def words(vocab_size: int) -> list[str]:
    """The ``vocab_size - len(SYMBOLS)`` words of the vocabulary, shortest first (a, b, ..., z, aa, ab, ...): every
    prefix of a word is a word, so byte-level BPE builds each one by merges from the left."""
    import itertools

    n = vocab_size - len(SYMBOLS)
    if n < 1:
        raise SystemExit(f"vocab_size {vocab_size} is too small for the benchmark's tokenizer (at least {len(SYMBOLS) + 1})")
    out: list[str] = []
    for length in itertools.count(1):
        for letters in itertools.product(SYMBOLS[2:], repeat=length):
            out.append("".join(letters))
            if len(out) == n:
                return out


def bpe_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer with exactly ``vocab_size`` entries: BOS, ``Ġ`` and the 26 letters, then one
    word-start token (``Ġ`` + letters, as GPT-2 spells a word after a space) per remaining id, each made by one
    merge. Byte-level BPE, not a word-level model: ``AutoTokenizer`` rebuilds some families' tokenizers (Qwen2)
    as BPE from the vocabulary and merges alone, and a word-level vocabulary without merges then tokenizes to
    nothing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {symbol: i for i, symbol in enumerate(SYMBOLS)}
    merges = []
    for word in words(vocab_size):
        merges.append(("Ġ" + word[:-1], word[-1]) if len(word) > 1 else ("Ġ", word))
        vocab["Ġ" + word] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, unk_token=BOS, pad_token=BOS)


def document_text(ids, vocabulary: list[str]) -> str:
    """The text of word ids (each ``>= len(SYMBOLS)``): every word after a space, so each is one word-start token."""
    return "".join(" " + vocabulary[int(i) - len(SYMBOLS)] for i in ids)


def build_checkpoint(config, folder: Path, seed: int) -> dict:
    """Random weights of ``config``'s shape and the BPE tokenizer, saved as a Hugging Face checkpoint; the
    tokenizer ``AutoTokenizer`` loads back from it must give the ids the documents are written from."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    vocab_size = int(config.vocab_size)
    tokenizer = bpe_tokenizer(vocab_size)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    built = time.perf_counter()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    gc.collect()
    sample = np.random.default_rng(seed).integers(len(SYMBOLS), vocab_size, size=64)
    loaded = AutoTokenizer.from_pretrained(folder)
    got = loaded(document_text(sample, words(vocab_size)), add_special_tokens=False)["input_ids"]
    if got != sample.tolist():
        raise SystemExit(f"AutoTokenizer loads {type(loaded).__name__} from {folder}, which does not reproduce the benchmark's token ids")
    return {"parameters": n_params, "build_seconds": built - started, "save_seconds": time.perf_counter() - built}


def documents_frame(vocab_size: int, n_docs: int, doc_tokens: int, heldout_fraction: float, seed: int):
    """``n_docs`` documents of ``doc_tokens`` random words (uniform over the word ids), the first
    ``1 - heldout_fraction`` of them in the explain split: the columns ``find_exemplars`` reads."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    vocabulary = words(vocab_size)
    n_explain = n_docs if n_docs < 2 else min(n_docs - 1, max(1, round(n_docs * (1 - heldout_fraction))))
    texts = [document_text(rng.integers(len(SYMBOLS), vocab_size, size=doc_tokens), vocabulary) for _ in range(n_docs)]
    return pd.DataFrame(
        {"doc_index": range(n_docs), "doc_id": [f"doc{i}" for i in range(n_docs)],
         "split": ["explain" if i < n_explain else "heldout" for i in range(n_docs)], "text": texts}
    )


def pick_neurons(hf_model, bridge, n_neurons: int, catalog_settings, seed: int):
    """``n_neurons`` neurons spread over the last layers the catalog selects from, each with the token its output
    weights favour most (``W_out[n] · W_U``, final norm not folded: ablation reads that token's probability)."""
    import numpy as np
    import pandas as pd
    import torch

    from lookups.pipeline.inputs import models

    n_layers, d_mlp = int(bridge.cfg.n_layers), int(bridge.cfg.d_mlp)
    last = catalog_settings.resolved_last_layers(n_layers)
    layers = list(range(n_layers - last, n_layers))
    rng = np.random.default_rng(seed)
    per_layer = {layer: [] for layer in layers}
    for j in range(n_neurons):
        per_layer[layers[len(layers) - 1 - j % len(layers)]].append(j)  # deepest layer first
    modules = dict(hf_model.named_modules())
    unembed = hf_model.get_output_embeddings().weight  # [vocab, d_model]
    rows = []
    for layer, members in per_layer.items():
        if not members:
            continue
        out = modules[models.mlp_output_paths(bridge)[layer]]
        weight = out.weight if type(out).__name__ == "Conv1D" else out.weight.T  # [d_mlp, d_model]
        for neuron in sorted(rng.choice(d_mlp, size=min(len(members), d_mlp), replace=False).tolist()):
            with torch.no_grad():
                token_id = int((unembed @ weight[neuron]).argmax())
            rows.append({"layer": layer, "neuron": neuron, "token_id": token_id, "token": bridge.tokenizer.decode([token_id])})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ measuring


class Meter:
    """Wall time and peak memory of one step at a time (CUDA: the allocator's peak; CPU: sampled RSS)."""

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")
        self.device = device
        self.records: dict[str, dict] = {}
        self.step: str | None = None
        self._lock = threading.Lock()
        self._peak = 0
        if not self.cuda:
            try:
                import psutil

                process = psutil.Process()
                self._rss = lambda: process.memory_info().rss
            except ImportError:
                page = os.sysconf("SC_PAGE_SIZE")

                def statm() -> int:
                    with open("/proc/self/statm") as fh:
                        return int(fh.read().split()[1]) * page

                self._rss = statm
            self._stop = threading.Event()
            threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = self._rss()
            with self._lock:
                self._peak = max(self._peak, rss)
            time.sleep(0.01)

    def memory(self) -> int:
        """Bytes in use now: allocated on the GPU, resident on the CPU."""
        return self.torch.cuda.memory_allocated(self.device) if self.cuda else self._rss()

    def start(self, step: str) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.reset_peak_memory_stats(self.device)
        self.step, self._base = step, self.memory()
        with self._lock:
            self._peak = self._base
        self._started = time.perf_counter()

    def stop(self, **extra) -> dict:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self._started
        if self.cuda:
            peak = self.torch.cuda.max_memory_allocated(self.device)
        else:
            with self._lock:
                peak = max(self._peak, self._rss())
        record = {"seconds": seconds, "peak_mb": peak / 2**20, "growth_mb": (peak - self._base) / 2**20, **extra}
        self.records[self.step] = record
        self.step = None
        return record

    def close(self) -> None:
        if not self.cuda:
            self._stop.set()


def bare_forward(hf_model, doc_tokens, window_tokens: int, batch_tokens: int, bos_id: int, pad_id: int) -> int:
    """The baseline: the plain model's full forward (logits included) over the harvest's own batches."""
    import numpy as np
    import torch

    from lookups.pipeline.science.batching import pack_batches, pad_right
    from lookups.pipeline.science.harvest import make_windows

    device = next(hf_model.parameters()).device
    windows = make_windows([len(t) for t in doc_tokens], window_tokens)
    for batch in pack_batches([w.length + 1 for w in windows], batch_tokens):
        rows = [np.concatenate([[bos_id], doc_tokens[windows[i].doc_index][windows[i].start : windows[i].end]]) for i in batch]
        padded, _ = pad_right(rows, pad_id)
        with torch.no_grad():
            hf_model(padded.to(device), use_cache=False)
    return sum(w.length for w in windows)  # document tokens, BOS not counted, as the harvest counts them


def ablation_rows(heads, exemplar_frame, heads_per_neuron: int, splits: list[str], score_settings):
    """What ``sql/reads/ablation_prompts.sql`` reads, for each neuron's ``heads_per_neuron`` heads of highest mean
    score (rank 1..k of ``head_neuron_scores``) instead of its consistent ones. Also the scores."""
    from lookups.pipeline.science import head_scores

    scores = head_scores.head_neuron_scores(heads, score_settings)
    pairs = scores.loc[scores["rank"] <= heads_per_neuron, head_scores.PAIR_KEYS]
    chosen = heads[heads["split"].isin(splits)].merge(pairs, on=head_scores.PAIR_KEYS)
    rows = chosen[["layer", "neuron", "doc_id", "split", "head_layer", "head", "active"]].merge(
        exemplar_frame[["layer", "neuron", "doc_id", "prompt_token_ids", "next_token_id"]], on=["layer", "neuron", "doc_id"]
    )
    return rows.sort_values(["layer", "neuron", "head_layer", "head", "doc_id"]).reset_index(drop=True), scores


def step_settings(path: str | None):
    """The settings of the timed steps: a run-config file's (as `lookups run --config` takes), else the defaults."""
    from lookups.pipeline import config, steps

    ops = config.load_settings_file(path, "--settings ") if path else {}
    config.check_run_settings(ops, steps.settings_of_steps(), f"--settings {path}")

    def of(asset: str):
        return steps.STEPS[asset].settings(**((ops.get(asset) or {}).get("config") or {}))

    return {asset: of(asset) for asset in ("neuron_catalog", "prompt_set", "neuron_exemplars", "head_attributions", "head_neuron_scores", "head_ablations")}


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--config", choices=sorted(PRESETS), default=None, help="a model shape preset (default: gpt2)")
    shape.add_argument("--config-json", help="a Hugging Face config.json (with model_type) of any shape")
    shape.add_argument("--model-dir", help="a checkpoint folder written by an earlier run with --keep (no build)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config attribute (JSON value), e.g. n_layer=6")
    parser.add_argument("--docs", type=int, default=8, help="documents in the corpus")
    parser.add_argument("--doc-tokens", type=int, default=256, help="tokens per document (the window is 256 by default)")
    parser.add_argument("--neurons", type=int, default=4, help="neurons, spread over the catalog's last layers")
    parser.add_argument("--heads-per-neuron", type=int, default=3, help="heads ablated per neuron")
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:N")
    parser.add_argument("--settings", help="a run-config YAML/JSON for the steps' settings (batch_tokens, top_k, ...)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare forward pass")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoint folder (printed) for --model-dir")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.docs < 1 or args.neurons < 1 or args.doc_tokens < 2:
        parser.error("--docs and --neurons must be at least 1, --doc-tokens at least 2")

    import torch

    from lookups.pipeline.config import ModelRunSettings
    from lookups.pipeline.inputs import architecture, models
    from lookups.pipeline.inputs.runtime import load_runtime
    from lookups.pipeline.science import ablation, attribution, exemplars, head_scores  # noqa: F401  (fail before the model is built)
    from lookups.pipeline.science.exemplars import tokenize_documents

    device = ModelRunSettings(device=args.device).device  # the pipeline's own check of the name
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {device}: this torch ({torch.__version__}) sees no CUDA device")
    settings = step_settings(args.settings)
    meter = Meter(device)
    started = datetime.datetime.now().astimezone()
    result: dict = {"date": started.isoformat(timespec="seconds"), "device": device, "host": platform.node(), "torch": torch.__version__}
    if device.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(device)
    else:
        result["threads"] = torch.get_num_threads()

    folder = Path(args.model_dir) if args.model_dir else Path(tempfile.mkdtemp(prefix="lookups-scale-"))
    try:
        meter.start("load")
        if args.model_dir:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(folder)
            build = {"parameters": None, "build_seconds": 0.0, "save_seconds": 0.0}
            result["config"] = f"{folder} ({type(config).__name__})"
        else:
            config = build_config(args.config or (None if args.config_json else "gpt2"), args.config_json, args.set)
            build = build_checkpoint(config, folder, args.seed)
            result["config"] = (args.config_json or args.config or "gpt2") + "".join(f" {s}" for s in args.set)
        booted = time.perf_counter()
        bridge = models.load_bridge(str(folder), device)
        hf_model = models.load_activation_model(str(folder), device)
        arch = architecture.load_architecture(str(folder), device)  # verifies the decomposition once, as the model step does
        gc.collect()
        load = meter.stop(boot_seconds=time.perf_counter() - booted, resident_mb=meter.memory() / 2**20, **build)
        if load["parameters"] is None:
            load["parameters"] = sum(p.numel() for p in hf_model.parameters())
        facts = models.model_facts(bridge)
        bos_id = facts.bos_token_id
        pad_id = models.pad_token_id(bridge.tokenizer, bos_id)
        result["model"] = {**facts.as_dict(), "parameters": load["parameters"], "architecture": arch.summary(), "dtype": "float32"}
        print(f"bench_scale {result['date']}  {result['config']}: {result['model']['architecture']}")
        print(
            f"  {facts.n_layers} layers, d_model {facts.d_model}, {facts.n_heads} heads ({facts.n_kv_heads} kv) x {facts.d_head}, d_mlp {facts.d_mlp}, "
            f"vocab {facts.d_vocab}, {load['parameters'] / 1e6:.1f}M parameters, fp32; device {device} "
            + (f"({result['gpu']})" if "gpu" in result else f"({result['threads']} threads)")
        )
        print(
            f"  load {load['seconds']:.1f} s (build {build['build_seconds']:.1f} s, save {build['save_seconds']:.1f} s, "
            f"boot bridge + HF model + architecture {load['boot_seconds']:.1f} s); memory {load['peak_mb'] / 1024:.2f} GB at peak, "
            f"{load['resident_mb'] / 1024:.2f} GB after loading ({'allocated' if device.startswith('cuda') else 'resident'})"
        )

        documents = documents_frame(facts.d_vocab, args.docs, args.doc_tokens, settings["prompt_set"].heldout_fraction, args.seed)
        neurons = pick_neurons(hf_model, bridge, args.neurons, settings["neuron_catalog"], args.seed)
        exemplar_settings = settings["neuron_exemplars"]
        window_tokens = min(exemplar_settings.window_tokens, facts.n_ctx - 1)
        layers = sorted(set(neurons["layer"]))
        print(
            f"  workload: {args.docs} document(s) x {args.doc_tokens} tokens ({(documents['split'] == 'explain').sum()} explain), "
            f"{len(neurons)} neuron(s) in layers {layers[0]}-{layers[-1]}, {args.heads_per_neuron} ablated head(s) per neuron"
        )
        with torch.no_grad():  # warm-up: first-call costs (allocator, kernels, threads) stay out of every step
            hf_model(torch.full((2, 16), bos_id, dtype=torch.long, device=device), use_cache=False)

        unit = "GB allocated" if device.startswith("cuda") else "GB resident"
        print(f"\n  {'step':<13}{'seconds':>9}{'tokens':>9}{'tok/s':>9}{'x bare':>8}{'s/neuron':>10}   peak ({unit}), growth over the step's start")
        if not args.no_baseline:
            doc_tokens = tokenize_documents(bridge.tokenizer, documents["text"].tolist())
            meter.start("bare forward")
            tokens = bare_forward(hf_model, doc_tokens, window_tokens, exemplar_settings.batch_tokens, bos_id, pad_id)
            print_row(meter, "bare forward", tokens=tokens)

        # Harvest and truncation are one call; the harvest's last progress report marks the boundary.
        def progress(phase: str, done: int, total: int) -> None:
            if meter.step == "harvest" and ((phase == "harvest" and done >= total) or phase != "harvest"):
                meter.stop()
                meter.start("truncation")

        meter.start("harvest")
        frame, stats = find_exemplars(load_runtime(str(folder), device), neurons, documents, exemplar_settings, progress)
        together = meter.step == "harvest"  # no boundary seen: both in one record
        meter.stop()
        print_row(meter, "harvest", tokens=stats["document_tokens"], neurons=len(neurons),
                  **({"note": "harvest and truncation together (no progress boundary seen)"} if together else {}))
        if not together:
            print_row(meter, "truncation", tokens=stats.get("truncation_tokens"), neurons=len(neurons))
        result["exemplars"] = {
            k: stats.get(k) for k in ("exemplars", "neurons_with_exemplars", "mean_prompt_tokens", "truncations_evaluated", "truncations_dropped",
                                      "truncation_rows", "harvest_seconds", "truncate_seconds")
        }
        if frame.empty:
            raise SystemExit("no exemplars: no neuron fired on any document (try more --docs)")

        prompts = frame[["layer", "neuron", "doc_id", "split", "prompt_token_ids"]]
        meter.start("attribution")
        attributed = attribute(str(folder), device, prompts, bos_id, pad_id, settings["head_attributions"])
        print_row(meter, "attribution", tokens=attributed.stats["prompt_tokens"], neurons=int(frame.groupby(["layer", "neuron"]).ngroups))
        result["attribution"] = {k: attributed.stats.get(k) for k in ("exemplars", "prompts", "forward_batches", "head_rows", "identity_max_rel_error")}

        rows, scores = ablation_rows(attributed.heads, frame, args.heads_per_neuron, settings["head_ablations"].splits, settings["head_neuron_scores"])
        clean = rows.drop_duplicates(["layer", "neuron", "doc_id"])
        ablation_tokens = int(sum(len(ids) + 1 for ids in rows["prompt_token_ids"]) + sum(len(ids) + 1 for ids in clean["prompt_token_ids"]))
        result["ablation"] = {"rows": len(rows), "clean_rows": len(clean), "consistent_pairs": int(scores["consistent"].sum()), "pairs": len(scores)}
        if len(rows):
            meter.start("ablation")
            ablate(str(folder), device, rows, bos_id, pad_id, settings["head_ablations"])
            print_row(meter, "ablation", tokens=ablation_tokens, neurons=int(rows.groupby(["layer", "neuron"]).ngroups))

        ex, at, ab = result["exemplars"], result["attribution"], result["ablation"]
        print(
            f"\n  {ex['exemplars']} exemplar(s) of {ex['neurons_with_exemplars']} neuron(s), mean prompt {ex['mean_prompt_tokens'] or 0:.1f} tokens, "
            f"{ex['truncations_dropped']} of {ex['truncations_evaluated']} truncations dropped; attribution {at['prompts']} prompts in "
            f"{at['forward_batches']} batches, identity max rel error {at['identity_max_rel_error']:.1e}; ablation {ab['rows']} rows "
            f"(+{ab['clean_rows']} clean), {ab['consistent_pairs']} of {ab['pairs']} pairs consistent by the pipeline's rule"
        )
        if args.keep and not args.model_dir:
            print(f"  checkpoint kept in {folder} (reuse with --model-dir)")
    finally:
        meter.close()
        if not args.model_dir and not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        result["steps"] = meter.records
        if args.json:  # also after a failed step: the steps measured so far
            Path(args.json).write_text(json.dumps(result, indent=1, default=str))


def print_row(meter: Meter, step: str, **extra) -> None:
    """Close ``step``'s record if it is still open, add ``extra`` (tokens, neurons, note) and print its line."""
    if meter.step == step:
        meter.stop()
    r = meter.records[step]
    r.update(extra)
    tokens = r.get("tokens")
    r["tokens_per_s"] = tokens / r["seconds"] if tokens else None
    bare = meter.records.get("bare forward")
    r["ratio_to_bare"] = r["tokens_per_s"] / bare["tokens_per_s"] if bare and bare.get("tokens_per_s") and r["tokens_per_s"] else None
    r["seconds_per_neuron"] = r["seconds"] / r["neurons"] if r.get("neurons") else None
    ratio, per_neuron = r["ratio_to_bare"], r["seconds_per_neuron"]
    print(
        f"  {step:<13}{r['seconds']:>9.2f}{tokens or 0:>9}{(r['tokens_per_s'] or 0):>9.0f}{(f'{ratio:.2f}' if ratio else '-'):>8}"
        f"{(f'{per_neuron:.2f}' if per_neuron else '-'):>10}   {r['peak_mb'] / 1024:.2f} GB, {r['growth_mb'] / 1024:+.2f} GB"
        + (f"  ({r['note']})" if "note" in r else ""),
        flush=True,
    )

if __name__ == "__main__":
    main()
