"""Reading a plain Hugging Face model's intermediate values with forward hooks, stopping the forward pass once
the last needed value is read (nothing after it, and never the unembedding, is computed). Every step that reads
activations, attention patterns or components of the residual stream does it through ``capture``: see
docs/method.md, "Every model family".

An intervention (a head zero-ablated, an attention edge knocked out) changes nothing below the layer it edits,
so ``capture`` can also *resume* a forward pass at a block from the stream a clean pass cached there
(``Resume``): the blocks below are not run. With ``edits`` a module's input is rewritten on the way (the
intervention itself). Both are tested equal to the full forward pass on every model family
(tests/integration/science/test_resume.py).

An intervention at position j changes nothing *before* j either: a pass can run only the positions from j on, the
earlier positions' keys and values taken from a clean pass's key/value cache (``prefix_cache``): the knockout
(one position) and the substitution test (the positions after the substituted token) do, each tested equal to its
full-sequence pass on every family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers import DynamicCache


class StopForward(Exception):
    """Raised by the last needed hook: nothing after it is computed."""


def batch_positions(value: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``value`` as ``[batch, pos, ...]`` for tokens of ``shape``: OPT flattens (batch, pos) around its MLP."""
    return value.view(*shape, -1) if value.dim() == 2 and value.shape[0] == shape[0] * shape[1] else value


@dataclass(frozen=True)
class Resume:
    """Start a forward pass at block ``layer`` of the block list at module path ``blocks`` (``model.layers``,
    ``transformer.h``), with ``hidden`` ``[batch, pos, d_model]`` as that block's input: the stream a pass over the
    same tokens cached there (``block_input``). The blocks below are not run; the embedding, masks and rotary
    tables are still formed from the tokens (they cost almost nothing)."""

    blocks: str
    layer: int
    hidden: torch.Tensor

    @staticmethod
    def blocks_of(first_block: str) -> str:
        """The block list's path from its first block's (``model.layers.0`` -> ``model.layers``)."""
        return first_block.rsplit(".", 1)[0]


def block_input(blocks: str, layer: int) -> tuple[str, str]:
    """What ``capture`` reads to cache a ``Resume`` point: block ``layer``'s input, every position."""
    return (f"{blocks}.{layer}", "input")


def prefix_cache(clean: DynamicCache, b: torch.Tensor, start: torch.Tensor, queries: torch.Tensor | None = None, layer: int = 0) -> dict:
    """The forward arguments of a pass that runs positions ``start[r]..start[r] + queries[r] - 1`` (default: one) of
    the clean pass's row ``b[r]`` (``clean``: its whole ``DynamicCache``), the tokens right-padded to the most
    queries: a new cache (the pass appends to it; the clean one is kept) holding the keys and values of that row's
    positions ``0..start[r]-1``, left-padded to the longest (zeros, masked out by ``attention_mask`` ``[rows,
    width + queries]``), and ``position_ids`` ``[rows, queries]``. Left padding keeps every key's distance to the
    query, so sliding windows (Mistral, Gemma 2/3), which the model counts from cache slots, stay exact. Padding
    queries come after a row's last one, so causality hides them from it, as ``pad_right``'s; they repeat its last
    position id (learned position tables stay in range) and attend to the row (no query is fully masked: no NaN).
    The layers below ``layer`` (a pass resumed there) are never run; they keep one row, only to tell the model the
    cache's width."""
    queries = torch.ones_like(start) if queries is None else queries
    width, n_queries = int(start.max()), int(queries.max())
    slot = torch.arange(width)[None] - (width - start)[:, None]  # [rows, width]: the prefix position in each slot, < 0: padding
    valid = slot >= 0

    def take(states: torch.Tensor) -> torch.Tensor:  # [batch, kv_heads, pos, d_head] -> [rows, kv_heads, width, d_head]
        picked = states[b[:, None].to(states.device), :, slot.clamp_min(0).to(states.device)]  # [rows, width, kv_heads, d_head]
        return picked.transpose(1, 2) * valid.to(states.device)[:, None, :, None].to(states.dtype)

    layers = [(take(keys), take(values)) if index >= layer else (keys[:1, :, :width], values[:1, :, :width])
              for index, (keys, values, _) in enumerate(clean)]
    device = clean.layers[layer].keys.device
    mask = torch.cat([valid, torch.ones(len(b), n_queries, dtype=torch.bool)], dim=1).long()
    positions = start[:, None] + torch.minimum(torch.arange(n_queries)[None], (queries - 1)[:, None])
    return {"cache": DynamicCache(layers), "attention_mask": mask.to(device), "position_ids": positions.to(device)}


@contextlib.contextmanager
def _resumed(model: torch.nn.Module, resume: Resume) -> Iterator[None]:
    """The model with its blocks below ``resume.layer`` taken out, and the first block left fed ``resume.hidden``.
    Families that look up a block's attention kind by its index (``config.layer_types``: Qwen2/3, Gemma 2/3)
    get that list cut the same way; both are restored after."""
    parent_path, _, name = resume.blocks.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    blocks = getattr(parent, name)
    config = model.config
    layer_types = getattr(config, "layer_types", None)
    first = blocks[resume.layer]

    def feed(module, args, kwargs):
        if args:
            return (resume.hidden.to(args[0]),) + tuple(args[1:]), kwargs
        return args, {**kwargs, "hidden_states": resume.hidden.to(kwargs["hidden_states"])}

    handle = first.register_forward_pre_hook(feed, with_kwargs=True, prepend=True)  # before any capture of its input
    setattr(parent, name, torch.nn.ModuleList(list(blocks)[resume.layer:]))
    if isinstance(layer_types, list):
        config.layer_types = layer_types[resume.layer:]
    try:
        yield
    finally:
        setattr(parent, name, blocks)
        if isinstance(layer_types, list):
            config.layer_types = layer_types
        handle.remove()


def capture(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    wanted: dict[str, tuple[str, str]],
    stop_after: str | None = None,
    pick: Callable[[torch.Tensor], torch.Tensor] | None = None,
    picks: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    resume: Resume | None = None,
    edits: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    forward: dict | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``tokens`` ``[batch, pos]`` through the Hugging Face model's base (no unembedding) and keep, for each
    ``key: (module path, 'input' | 'output' | 'weights')``, ``pick(value)`` (default: the whole ``[batch, pos,
    ...]``; ``picks[key]`` for that key instead). 'weights' is an attention module's second output, its
    pattern ``[batch, heads, query, key]`` (eager attention only: see ``eager_attention``). The forward
    stops once the key ``stop_after`` has been captured. ``resume`` starts it at a block from a cached stream;
    ``edits`` maps a module path to a function of its first input that replaces it (an intervention, applied
    before any capture of that input). ``forward`` adds keyword arguments of the model's forward: ``cache`` (a
    ``transformers`` ``Cache``: filled in place, or holding the keys and values of positions before ``tokens``),
    with it ``attention_mask`` (``[batch, cached + pos]``) and ``position_ids``; without a cache none is kept."""
    pick = pick or (lambda value: value)
    picks = picks or {}
    captured: dict[str, torch.Tensor] = {}
    handles = []
    for path, edit in (edits or {}).items():
        def edit_hook(module, args, kwargs, edit=edit):
            if args:
                return (edit(args[0]),) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": edit(kwargs["hidden_states"])}

        handles.append(model.get_submodule(path).register_forward_pre_hook(edit_hook, with_kwargs=True))

    def keep(key: str, value: torch.Tensor) -> None:
        if value is None:
            raise ValueError(f"{wanted[key][0]} returned no attention weights: run the capture inside eager_attention(model)")
        value = batch_positions(value.detach(), tokens.shape)
        captured[key] = picks.get(key, pick)(value).clone()
        if key == stop_after:
            raise StopForward

    for key, (path, side) in wanted.items():
        module = model.get_submodule(path)
        if side == "input":
            def pre_hook(module, args, kwargs, key=key):
                keep(key, args[0] if args else kwargs["hidden_states"])

            handles.append(module.register_forward_pre_hook(pre_hook, with_kwargs=True))
        else:
            def hook(module, args, output, key=key, index=1 if side == "weights" else 0):
                keep(key, output[index] if isinstance(output, tuple) else output)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad(), _resumed(model, resume) if resume else contextlib.nullcontext():
            extra = forward or {}
            model.base_model(tokens.to(next(model.parameters()).device), use_cache="cache" in extra, **extra)
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return captured


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module):
    """Run ``model`` with eager attention inside the block (its attention modules then return their weights),
    restoring the implementation it had after."""
    before = model.config._attn_implementation
    if before == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)
