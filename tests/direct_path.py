"""Reference computations for tests, independent of ``pipeline.attribution``: a head's direct effect on a
neuron's pre-activation, measured by intervening on the model (TransformerLens hooks)."""

import warnings

import torch


def direct_effect_of_head(bridge, tokens: torch.Tensor, layer: int, neuron: int, head_layer: int, head: int) -> dict[str, float]:
    """Zero the head's output at the last position only, freeze every other path to layer ``layer``'s MLP
    input at that position (later attention and MLP outputs) and freeze ``ln2``'s scale; return how much the
    neuron's pre-activation(s) drop: ``{'pre': ..., 'pre_linear': ...}`` (the latter for gated MLPs)."""
    frozen = [f"blocks.{block}.hook_mlp_out" for block in range(head_layer, layer)]
    frozen += [f"blocks.{block}.hook_attn_out" for block in range(head_layer + 1, layer + 1)]
    frozen.append(f"blocks.{layer}.ln2.hook_scale")
    reads = [f"blocks.{layer}.mlp.hook_pre", f"blocks.{layer}.mlp.hook_pre_linear"]
    _, clean = bridge.run_with_cache(tokens, names_filter=lambda n: n in set(frozen) | set(reads))

    def zero_head(z, hook):
        z = z.clone()
        z[:, -1, head] = 0.0
        return z

    def freeze(value, hook):
        value = value.clone()
        value[:, -1] = clean[hook.name][:, -1]
        return value

    after = {}

    def read(value, hook):
        after[hook.name] = value[:, -1, neuron].clone()
        return value

    hooks = [(f"blocks.{head_layer}.attn.hook_z", zero_head)] + [(name, freeze) for name in frozen]
    hooks += [(name, read) for name in reads if name in clean.cache_dict]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")  # freezing the scale is the point
        bridge.run_with_hooks(tokens, fwd_hooks=hooks)
    return {name.rsplit(".", 1)[-1].replace("hook_", ""): float(clean[name][0, -1, neuron] - after[name][0]) for name in after}
