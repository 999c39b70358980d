"""Reading a plain Hugging Face model's intermediate values with forward hooks, stopping the forward pass once
the last needed value is read (nothing after it, and never the unembedding, is computed). Every step that reads
activations, attention patterns or components of the residual stream does it through ``capture``: see
docs/method.md, "Every model family".
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch


class StopForward(Exception):
    """Raised by the last needed hook: nothing after it is computed."""


def batch_positions(value: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``value`` as ``[batch, pos, ...]`` for tokens of ``shape``: OPT flattens (batch, pos) around its MLP."""
    return value.view(*shape, -1) if value.dim() == 2 and value.shape[0] == shape[0] * shape[1] else value


def capture(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    wanted: dict[str, tuple[str, str]],
    stop_after: str | None = None,
    pick: Callable[[torch.Tensor], torch.Tensor] | None = None,
    picks: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``tokens`` ``[batch, pos]`` through the Hugging Face model's base (no unembedding) and keep, for each
    ``key: (module path, 'input' | 'output' | 'weights')``, ``pick(value)`` (default: the whole ``[batch, pos,
    ...]``; ``picks[key]`` for that key instead). 'weights' is an attention module's second output, its
    pattern ``[batch, heads, query, key]`` (eager attention only: see ``eager_attention``). The forward
    stops once the key ``stop_after`` has been captured."""
    pick = pick or (lambda value: value)
    picks = picks or {}
    captured: dict[str, torch.Tensor] = {}
    handles = []

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
        with torch.no_grad():
            model.base_model(tokens.to(next(model.parameters()).device), use_cache=False)
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
