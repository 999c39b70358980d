"""Reference computations for tests, independent of ``pipeline.attribution``: a head's direct effect on a
neuron's pre-activation, measured by intervening on the model (TransformerLens hooks for the families the
bridge's own hooks cover; plain Hugging Face hooks for every family)."""

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


def _frozen_norm(module: torch.nn.Module, x_clean: torch.Tensor, y_clean: torch.Tensor):
    """A forward hook that replaces a norm's output by its linearization at the clean input with the clean
    scale: ``y_clean + gain ⊙ center?(x - x_clean) / s_clean``, the norm's type, gain and epsilon read from
    the module itself (LayerNorm: centred; RMSNorm: not; Gemma's RMSNorm scales by ``1 + w``)."""
    name = type(module).__name__
    centered = "LayerNorm" in name and "RMS" not in name
    eps = next((float(getattr(module, a)) for a in ("eps", "variance_epsilon", "epsilon") if hasattr(module, a)), 1e-5)  # OLMo's is fixed
    weight = getattr(module, "weight", None)
    gain = torch.ones(x_clean.shape[-1]) if weight is None else (1.0 + weight.detach() if name.startswith("Gemma") else weight.detach())
    x = x_clean.double()
    s = (x.var(-1, unbiased=False, keepdim=True) if centered else x.pow(2).mean(-1, keepdim=True)).add(eps).sqrt()

    def hook(module, args, output):
        delta = args[0].double() - x
        if centered:
            delta = delta - delta.mean(-1, keepdim=True)
        return (y_clean.double() + gain.double() * delta / s).to(output.dtype)

    return hook


def direct_effect_hf(
    arch, tokens: torch.Tensor, layer: int, neuron: int, head_layer: int, head: int, z_delta: torch.Tensor | None = None
) -> dict[str, float]:
    """The same measurement on the plain Hugging Face model, for every family: set the head's slice of its
    attention output projection's input at the last position to its value bias (the head's z with no input;
    zeroing the rest); freeze at that position every later attention
    output and every MLP output from ``head_layer`` on; freeze the scales of the norms the head's path passes
    (its post-attention norm, if any, and the MLP's norm). Returns the drops ``{'in': ..., 'gate': ...}``
    (``gate`` for gated MLPs) of the neuron's pre-activations. With ``z_delta`` ``[d_head]`` the head's slice
    is lowered by it instead (one source position's part of the head's output). Module paths come from
    ``arch``; what happens at each module is measured, not derived from it."""
    model = arch.model
    spec = arch.layers[layer]
    frozen = [arch.layers[lay].attn_out for lay in range(head_layer + 1, layer + 1)]
    frozen += [arch.layers[lay].mlp_out for lay in range(head_layer, layer)]
    norms = [n.path for n in (arch.layers[head_layer].post_attn_norm, spec.mlp_norm) if n is not None]
    reads = {"in": spec.mlp_in, **({"gate": spec.mlp_gate} if spec.mlp_gate else {})}
    clean: dict[str, torch.Tensor] = {}
    handles = []

    def keep(path, with_input=False):
        def hook(module, args, output):
            clean[path] = output.detach().clone()
            if with_input:
                clean[path + ".input"] = args[0].detach().clone()

        return hook

    for path in set(frozen) | set(reads.values()) | set(norms):
        handles.append(model.get_submodule(path).register_forward_hook(keep(path, path in norms)))
    with torch.no_grad():
        model(tokens)
    for handle in handles:
        handle.remove()

    def zero_head(module, args):
        z = args[0].clone()
        part = slice(head * arch.d_head, (head + 1) * arch.d_head)
        last = z.reshape(-1, z.shape[-1])[-1]
        if z_delta is None:
            last[part] = arch.layers[head_layer].value_bias[part]  # checked against TransformerLens in test_families
        else:
            last[part] = last[part] - z_delta.to(last)
        return (z,) + tuple(args[1:])

    def freeze(path):
        def hook(module, args, output):
            out = output.clone()
            out.reshape(-1, out.shape[-1])[-1] = clean[path].reshape(-1, out.shape[-1])[-1]
            return out

        return hook

    after: dict[str, torch.Tensor] = {}

    def read(key):
        def hook(module, args, output):
            after[key] = output.reshape(-1, output.shape[-1])[-1, neuron].detach().clone()

        return hook

    hooks = [_frozen_norm(model.get_submodule(p), clean[p + ".input"], clean[p]) for p in norms]  # before any is registered
    handles = [model.get_submodule(arch.layers[head_layer].attn_out).register_forward_pre_hook(zero_head)]
    try:
        handles += [model.get_submodule(path).register_forward_hook(freeze(path)) for path in frozen]
        handles += [model.get_submodule(p).register_forward_hook(hook) for p, hook in zip(norms, hooks, strict=True)]
        handles += [model.get_submodule(path).register_forward_hook(read(key)) for key, path in reads.items()]
        with torch.no_grad():
            model(tokens)
    finally:
        for handle in handles:
            handle.remove()
    return {key: float(clean[path].reshape(-1, clean[path].shape[-1])[-1, neuron] - after[key]) for key, path in reads.items()}
