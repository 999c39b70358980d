"""A planted circuit: a tiny GPT-2-style model whose look-up head and next-token neuron are known, with a
corpus that exercises them. The pipeline must find the planted head for the planted neuron (the project's
ground-truth test), and must not find it in the control model built without the plant.

The construction, on named residual directions (``d_model`` = 64):

- every token embedding has a constant component (``CONST``), the trigger token a ``TRIG`` component, the
  cue token a ``NEUR`` component and the target token a ``TARGET`` component; other dimensions are random;
- the planted head (``PLANTED_HEAD``) queries along ``CONST`` and keys along ``TRIG``, so from any position it
  attends to an earlier trigger token; its value reads ``TRIG`` and its output writes ``NEUR``;
- the planted neuron (last layer) reads ``NEUR`` with a negative bias, and writes ``TARGET``, the target
  token's unembedding (embeddings are tied), so it is a next-token neuron for the target word.

It is also a model key and a corpus key, ``planted``: ``lookups run --model planted --corpus planted`` builds
it once under the cache folder and runs the whole graph on it in about a minute, a sanity check that the
installation finds a circuit whose answer is known.

The neuron therefore fires in two ways: after the trigger word (through the head: context-dependent), or on
the cue word itself (through the embedding, no head involved). The corpus holds both kinds of documents in
equal numbers, so the head is active on about half of the neuron's prompts: a consistent pair. Every other
weight is small and random (GPT-2's initialisation scale).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from lookups.pipeline.config import cache_dir

D_MODEL, N_LAYERS, N_HEADS, D_MLP, N_CTX = 64, 3, 4, 128, 64
CONST, TRIG, NEUR, TARGET = 0, 1, 2, 3
PLANTED_HEAD = (1, 2)  # (layer, head)
PLANTED_NEURON = (2, 77)  # (layer, neuron)

#: The model key and the corpus key of the planted circuit.
PLANTED_KEY = "planted"
#: Exemplar settings for the planted corpus: keep every document (48 in all; each fits one window).
EXEMPLAR_CONFIG = {"top_k": 64, "keep": 64, "keep_heldout": 64, "window_tokens": N_CTX - 2}
#: Select just the planted neuron: one per layer, in the last layer.
CATALOG_CONFIG = {"neurons_per_layer": 1, "last_layers": 1}
#: The settings a run of the planted circuit takes (`lookups run --model planted` starts from them).
RUN_SETTINGS = {"prompt_set": {"max_documents": None}, "neuron_catalog": CATALOG_CONFIG, "neuron_exemplars": EXEMPLAR_CONFIG}

BOS = "<|endoftext|>"
TRIGGER, CUE, TARGET_WORD = "wizard", "spell", "magic"
FILLERS = (
    "people walked along river near old town where small houses stood beside green fields and quiet roads "
    "under bright morning light while children played games after school with friends from every street"
).split()


@dataclass(frozen=True)
class PlantedCircuit:
    """Where the plant is, as the pipeline will report it."""

    model_dir: str
    corpus_path: str
    planted: bool
    head_layer: int
    head: int
    layer: int
    neuron: int
    target_token: str  # with its leading space, as the catalog shows it
    trigger_documents: int
    cue_documents: int

    @property
    def key(self) -> tuple[int, int, int, int]:
        """(layer, neuron, head_layer, head) of the planted pair."""
        return (self.layer, self.neuron, self.head_layer, self.head)

    def run_config(self) -> dict:
        """Run config of the `lookups` job that analyses this circuit (every other setting at its default)."""
        return {
            "ops": {
                "model": {"config": {"name": self.model_dir}},
                "corpus": {"config": {"source": self.corpus_path}},
                **{op: {"config": dict(values)} for op, values in RUN_SETTINGS.items()},
            }
        }


def planted_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(FILLERS) | {TRIGGER, CUE, TARGET_WORD})
    vocab = {BOS: 0, "<unk>": 1}
    for word in words:
        for form in (word, "Ġ" + word):  # sentence-initial and word-start forms, as byte-level BPE spells them
            vocab[form] = len(vocab)
    vocab["."] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, unk_token="<unk>", pad_token=BOS)


def build_planted_model(folder: str | Path, planted: bool = True, seed: int = 0):
    """Write a Hugging Face GPT-2 checkpoint and tokenizer to ``folder``; the planted weights as described
    above when ``planted``, the same random weights without the head's plant otherwise (the control)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    tokenizer = planted_tokenizer()
    vocab = tokenizer.get_vocab()
    config = GPT2Config(
        vocab_size=len(vocab), n_positions=N_CTX, n_embd=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS, n_inner=D_MLP,
        activation_function="gelu_new", bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    d_head = D_MODEL // N_HEADS
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
        wte = model.transformer.wte.weight  # [vocab, d_model], tied to the unembedding
        wte.normal_(0.0, 0.3)
        wte[:, :4] = 0.0
        wte[:, CONST] = 2.0
        for form in (TRIGGER, "Ġ" + TRIGGER):
            wte[vocab[form], TRIG] = 3.0
        for form in (CUE, "Ġ" + CUE):
            wte[vocab[form], NEUR] = 3.0
        wte[vocab["Ġ" + TARGET_WORD], TARGET] = 3.0
        model.transformer.wpe.weight.normal_(0.0, 0.02)

        head_layer, head = PLANTED_HEAD
        attn = model.transformer.h[head_layer].attn
        cols = slice(head * d_head, (head + 1) * d_head)
        if planted:
            w = attn.c_attn.weight  # Conv1D [d_model, 3 d_model]: x @ w = [q | k | v]
            w[:, cols] = 0.0
            w[:, D_MODEL:][:, cols] = 0.0
            w[:, 2 * D_MODEL :][:, cols] = 0.0
            w[CONST, head * d_head] = 1.5  # query: constant
            w[TRIG, D_MODEL + head * d_head] = 1.5  # key: the trigger
            w[TRIG, 2 * D_MODEL + head * d_head] = 1.0  # value: the trigger feature
            o = attn.c_proj.weight  # Conv1D [d_model (heads concatenated), d_model]
            o[cols, :] = 0.0
            o[head * d_head, NEUR] = 0.55  # output: the neuron's input direction

        layer, neuron = PLANTED_NEURON
        mlp = model.transformer.h[layer].mlp
        mlp.c_fc.weight[:, neuron] = 0.0
        mlp.c_fc.weight[NEUR, neuron] = 1.0
        mlp.c_fc.bias[neuron] = -2.0
        mlp.c_proj.weight[neuron, :] = 0.0
        mlp.c_proj.weight[neuron, TARGET] = 1.0
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def planted_corpus(n_each: int = 24, seed: int = 0) -> list[str]:
    """``n_each`` documents with the trigger somewhere (never the cue) and ``n_each`` with the cue (never the
    trigger), every one distinct."""
    rng = random.Random(seed)
    docs: set[str] = set()
    out = []
    while len(out) < 2 * n_each:
        kind = TRIGGER if len(out) % 2 == 0 else CUE
        words = [rng.choice(FILLERS) for _ in range(rng.randint(10, 18))]
        words.insert(rng.randint(1, 6), kind)
        text = " ".join(words) + "."
        if text not in docs:
            docs.add(text)
            out.append(text)
    return out


def build_planted_circuit(folder: str | Path, planted: bool = True, n_each: int = 24, seed: int = 0) -> PlantedCircuit:
    """The model (in ``folder/model``) and its corpus (``folder/corpus.jsonl``), ready for the pipeline."""
    folder = Path(folder)
    build_planted_model(folder / "model", planted=planted, seed=seed)
    texts = planted_corpus(n_each, seed)
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "id": f"doc{i}"}) + "\n" for i, t in enumerate(texts)))
    circuit = PlantedCircuit(
        str(folder / "model"), str(corpus), planted, *PLANTED_HEAD, *PLANTED_NEURON, " " + TARGET_WORD,
        sum(TRIGGER in t for t in texts), sum(CUE in t for t in texts),
    )
    (folder / "circuit.json").write_text(json.dumps(asdict(circuit), indent=1))
    return circuit


def planted_folder() -> Path:
    return cache_dir() / PLANTED_KEY


def ensure_planted_circuit() -> PlantedCircuit:
    """The planted circuit of the ``planted`` keys, built once under the cache folder (into a staging folder
    renamed into place, so a parallel run never reads half of it). The build is seeded: every machine
    builds the same weights."""
    folder = planted_folder()
    meta = folder / "circuit.json"
    if not meta.exists():
        staging = folder.with_name(f".{PLANTED_KEY}-{uuid.uuid4().hex[:8]}")
        built = build_planted_circuit(staging)
        placed = {**asdict(built), "model_dir": str(folder / "model"), "corpus_path": str(folder / "corpus.jsonl")}
        (staging / "circuit.json").write_text(json.dumps(placed, indent=1))
        try:
            os.replace(staging, folder)
        except OSError:  # another run placed it a moment before
            shutil.rmtree(staging, ignore_errors=True)
    return PlantedCircuit(**json.loads(meta.read_text()))
