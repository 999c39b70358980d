"""One description of a model's residual stream, read by every step that decomposes it or intervenes on it
(attribution, ablation, exemplar reading, the catalog): see docs/method.md, "Every model family".

For the MLP of layer L it says which components add up to the stream the MLP reads, and through which norm:

- serial blocks (GPT-2, Llama, Gemma, OPT, OLMo): the embedding, every head of layers 0..L and every MLP of
  layers < L, through the MLP's own norm (``ln2``);
- parallel blocks (GPT-NeoX with ``use_parallel_residual``, every Pythia model; GPT-J; Phi): attention and
  MLP read the same block input, so only heads of layers < L feed layer L's MLP, through the norm the MLP
  uses (GPT-J and Phi share one norm between attention and MLP);
- post-norms (Gemma 2 and 3: after attention and after the MLP; OLMo 2: post-norms only, the MLP reads the
  raw stream): each component passes the post-norm with its frozen scale before it joins the stream.

Everything is read from a plain Hugging Face model with forward hooks, by module paths taken from the
TransformerLens bridge's component mapping. The description is *verified*, not assumed: one probe forward
pass fits every norm (centred or not, gain ``w`` or ``1 + w``, bias) to the module's actual input and output,
checks that the named components sum to each MLP's input and that the activation function reproduces the
MLP's activation. A model that fails any of it, or whose family is not among those tested, is refused here
with a message, before any step computes a number.

It also describes each attention's query and key side, for QK attribution: the norm the attention reads the stream
through (fitted like the MLP's), the q and k projections (separate or fused), q/k norms, the rotary embedding (its
tables are recorded from what each layer hands its attention module), the scaling, soft-capping and sliding window.
A second, eager probe pass checks that each attention input is the embedding plus what earlier layers add and that
the description reproduces every attention weight. Where it does not, only QK attribution refuses the model
(``Architecture.qk_refusal``): the MLP-input description, which every other step reads, stands.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from lookups.pipeline.inputs import models
from lookups.pipeline.inputs.capture import capture, eager_attention
from lookups.pipeline.inputs.checkpoints import ModelError

#: Hugging Face ``model_type``s whose every step is tested exact on a tiny random checkpoint (tests/tiny_models.py).
SUPPORTED_FAMILIES = {
    "gpt2": "GPT-2", "gpt_neox": "GPT-NeoX / Pythia (parallel or serial)", "gptj": "GPT-J", "llama": "Llama, SmolLM2",
    "mistral": "Mistral", "qwen2": "Qwen2 / Qwen2.5", "qwen3": "Qwen3", "gemma": "Gemma", "gemma2": "Gemma 2",
    "gemma3_text": "Gemma 3 (text)", "phi": "Phi-1/1.5/2", "opt": "OPT (pre-LayerNorm)", "olmo": "OLMo", "olmo2": "OLMo 2",
}
PROBE_TOLERANCE = 1e-4  # relative; fp32 rounding is ~1e-6


def activation_and_slope(act_fn: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) and f'(x) for the MLP's activation function (by TransformerLens ``cfg.act_fn`` name)."""
    fns = {
        "silu": torch.nn.functional.silu,
        "swish": torch.nn.functional.silu,
        "gelu": torch.nn.functional.gelu,
        "gelu_new": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "gelu_fast": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "gelu_pytorch_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
        "relu": torch.relu,
    }
    if act_fn not in fns:
        raise ValueError(f"No slope for activation '{act_fn}': add it to architecture.activation_and_slope.")
    with torch.enable_grad():
        leaf = x.detach().double().requires_grad_(True)
        y = fns[act_fn](leaf)
        (slope,) = torch.autograd.grad(y.sum(), leaf)
    return y.detach().to(x.dtype), slope.to(x.dtype)


class UnsupportedModel(ModelError):
    """The model's MLP inputs cannot be decomposed exactly by this description."""


def _refuse(model_type: str, why: str) -> UnsupportedModel:
    families = ", ".join(SUPPORTED_FAMILIES.values())
    return UnsupportedModel(f"Model family '{model_type}' is not supported: {why}. Supported families: {families}.")


def weight_in_out(module: torch.nn.Module) -> torch.Tensor:
    """A projection's weight as ``[in, out]`` (``nn.Linear`` stores ``[out, in]``, GPT-2's ``Conv1D`` ``[in, out]``)."""
    return module.weight.detach() if type(module).__name__ == "Conv1D" else module.weight.detach().T


@dataclass(frozen=True)
class Norm:
    """``y = gain ⊙ (x - centered·mean(x)) / s + bias`` with ``s`` per position (read from the model's own input
    and output, so epsilon conventions never matter)."""

    path: str
    centered: bool  # LayerNorm; RMSNorm is not centred
    gain: torch.Tensor  # [d_model]: w, 1 + w (Gemma) or ones (OLMo's LayerNorm has no weight)
    bias: torch.Tensor | None  # [d_model]

    @property
    def kind(self) -> str:
        return "LayerNorm" if self.centered else "RMSNorm"

    def inverse_scale(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``1/s`` per row from the norm's input ``x`` and output ``y`` (``[..., d_model]``), least squares."""
        u, t = self._parts(x, y)
        return (u * t).sum(-1) / (u * u).sum(-1).clamp_min(1e-30)

    def fit_error(self, x: torch.Tensor, y: torch.Tensor) -> float:
        u, t = self._parts(x, y)
        k = self.inverse_scale(x, y)[..., None]
        return float(((t - k * u).norm(dim=-1) / t.norm(dim=-1).clamp_min(1e-30)).max())

    def _parts(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = x.double(), y.double()
        u = self.gain.to(x) * (x - x.mean(-1, keepdim=True) if self.centered else x)
        return u, y - (self.bias.to(y) if self.bias is not None else 0.0)

    def through(self, directions: torch.Tensor, inverse_scale: torch.Tensor) -> torch.Tensor:
        """Directions ``[rows, ..., d_model]`` read after the norm -> the directions a component must be
        projected on before it: ``center(gain ⊙ d) / s`` (``inverse_scale`` ``[rows]``)."""
        out = directions * self.gain.to(directions)
        if self.centered:
            out = out - out.mean(-1, keepdim=True)
        return out * inverse_scale.to(directions).reshape(-1, *([1] * (directions.dim() - 1)))


@dataclass(frozen=True)
class Layer:
    attn_out: str  # the attention output projection: its input is every head's z, concatenated
    mlp_in: str  # the MLP's input projection (up_proj, c_fc, fc1): its output is the (linear) pre-activation
    mlp_gate: str | None  # gated MLPs: the gate projection
    mlp_out: str  # the output projection: its input is the activation
    mlp_norm: Norm | None  # what the MLP reads the stream through (None: the raw stream, OLMo 2)
    post_attn_norm: Norm | None
    post_mlp_norm: Norm | None
    # [n_heads * d_head]: what each head's z is when its values carry only their bias. Attention weights sum
    # to 1, so this part is the same on every prompt: it is a bias, not a look-up (TransformerLens folds it
    # into the output bias the same way), and zero-ablating a head leaves it.
    value_bias: torch.Tensor = field(repr=False, compare=False, default=None)
    attention: str | None = None  # the attention module: with eager attention its output is (z projected, weights)
    value: str | None = None  # the projection whose output holds the values (v_proj, or the fused qkv)
    value_layout: str = "separate"  # 'separate' (v_proj), 'thirds' (GPT-2's c_attn: q|k|v), 'per_head' (NeoX: per head q|k|v)
    # The query and key side (QK attribution), verified on the probe like the rest (``_describe_attention``). The
    # fused layouts are ``value_layout``'s: q and k sit in the same module as the values.
    attn_norm: Norm | None = None  # what the attention reads the stream through (None: the raw stream, OLMo 2)
    query: str | None = None  # the projection whose output holds the queries (q_proj, or the fused qkv)
    key: str | None = None
    q_norm: Norm | None = None  # RMSNorm per head (Qwen3, Gemma 3: width d_head) or over the projection (OLMo 2)
    k_norm: Norm | None = None
    rotary_dim: int = 0  # the leading dims of each head the rotary embedding turns (0: none, GPT-2 and OPT)
    rotary_interleaved: bool = False  # GPT-J turns pairs (0, 1), (2, 3)...; the others halves (i, i + rotary_dim / 2)
    scaling: float = 0.0  # score = q·k·scaling (OPT scales its q_proj output inside the module: the same product)
    softcap: float | None = None  # Gemma 2: scores are soft-capped, cap·tanh(score / cap), after the scaling
    sliding_window: int | None = None  # query t sees key p when p <= t and t - p < sliding_window
    # How the q/k norm's input and output are laid out: 'pos_heads' [batch, pos, heads, d_head] (Qwen3),
    # 'heads_pos' [batch, heads, pos, d_head] (Gemma 3), 'flat' [batch, pos, heads * d_head] (OLMo 2's norm over
    # the whole projection).
    qk_norm_layout: str = "pos_heads"


@dataclass(frozen=True)
class Architecture:
    model_type: str
    parallel: bool
    first_block: str  # its input is the embedding (token, position, any scale)
    layers: tuple[Layer, ...]
    final_norm: Norm
    n_heads: int
    d_head: int
    gated: bool
    act_fn: str
    final_logit_softcap: float | None
    model: torch.nn.Module = field(repr=False, compare=False)
    n_kv_heads: int = 0  # grouped-query attention: query head h reads value head h // (n_heads // n_kv_heads)
    clip_qkv: float | None = None  # OLMo: q, k and v are clamped after their projections
    pos_embed: str | None = None  # learned absolute positions (GPT-2, OPT): the module whose output the embedding adds
    # Why QK attribution cannot decompose this model's attention scores (its query/key description failed on the
    # probe); None when it can. Only QK attribution refuses such a model: its MLP inputs are still exact.
    qk_refusal: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def heads_feeding(self, layer: int) -> range:
        """The attention layers whose heads write into layer ``layer``'s MLP input."""
        return range(layer) if self.parallel else range(layer + 1)

    def module(self, path: str) -> torch.nn.Module:
        return self.model.get_submodule(path)

    def weight(self, path: str) -> torch.Tensor:
        """A projection's weight as ``[in, out]`` whatever the module."""
        return weight_in_out(self.module(path))

    def bias(self, path: str) -> torch.Tensor | None:
        bias = getattr(self.module(path), "bias", None)
        return bias.detach() if isinstance(bias, torch.Tensor) else None

    def head_values(self, layer: int, projected: torch.Tensor) -> torch.Tensor:
        """The value vectors every query head of ``layer`` reads, ``[batch, pos, n_heads, d_head]``, from the
        output of its value projection (``Layer.value``) ``[batch, pos, ...]``: the value heads repeated for
        grouped-query attention, clamped where the model clamps them."""
        spec = self.layers[layer]
        batch, pos = projected.shape[:2]
        if spec.value_layout == "thirds":
            values = projected.chunk(3, dim=-1)[2].reshape(batch, pos, self.n_heads, self.d_head)
        elif spec.value_layout == "per_head":
            values = projected.reshape(batch, pos, self.n_heads, 3 * self.d_head)[..., 2 * self.d_head:]
        else:
            n_kv = self.n_kv_heads or self.n_heads
            values = projected.reshape(batch, pos, n_kv, self.d_head).repeat_interleave(self.n_heads // n_kv, dim=2)
        if self.clip_qkv:
            values = values.clamp(-self.clip_qkv, self.clip_qkv)
        return values

    def kv_head(self, head: int) -> int:
        """The key/value head query head ``head`` reads (grouped-query attention)."""
        return head // (self.n_heads // (self.n_kv_heads or self.n_heads))

    def qk_heads(self, layer: int, projected: torch.Tensor, side: str) -> torch.Tensor:
        """The queries (``side`` 'query') or keys ('key') ``[batch, pos, heads, d_head]`` in the output ``[batch,
        pos, ...]`` of their projection (or of a norm over it), before clamping, q/k norm and rotary; key heads are
        not repeated for grouped-query attention (``kv_head``)."""
        spec = self.layers[layer]
        batch, pos = projected.shape[:2]
        index = 0 if side == "query" else 1
        if spec.value_layout == "thirds":
            return projected.chunk(3, dim=-1)[index].reshape(batch, pos, self.n_heads, self.d_head)
        if spec.value_layout == "per_head":
            return projected.reshape(batch, pos, self.n_heads, 3 * self.d_head)[..., index * self.d_head: (index + 1) * self.d_head]
        return projected.reshape(batch, pos, -1, self.d_head)

    def qk_projection(self, layer: int, side: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The query or key projection of ``layer`` as ``(weight [d_model, heads, d_head], bias [heads, d_head] or
        None)``: the columns of the fused module that ``qk_heads`` reads."""
        spec = self.layers[layer]
        path = spec.query if side == "query" else spec.key
        weight, bias = self.weight(path), self.bias(path)
        heads = self.qk_heads(layer, weight[None], side)[0]  # [d_model, heads, d_head]
        return heads, (self.qk_heads(layer, bias[None, None], side)[0, 0] if bias is not None else None)

    def logits(self, final_hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits from the final (normed) hidden state, with the model's soft-capping."""
        logits = self.model.get_output_embeddings()(final_hidden).float()
        if self.final_logit_softcap:
            logits = torch.tanh(logits / self.final_logit_softcap) * self.final_logit_softcap
        return logits

    def congruence_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W_out [n_layers, d_mlp, d_model], W_U [d_model, d_vocab])`` whose product is each neuron's direct
        effect on the logits, up to a positive factor per (layer, position) and a constant per (neuron,
        position) that no softmax sees: a post-MLP norm's gain is applied to ``W_out`` (its scale is common to
        a layer's neurons), the final norm's gain to ``W_U``, rows of ``W_out`` are centred where the final norm
        is a LayerNorm (it removes the mean anyway), and ``W_U`` is centred over the vocabulary. Soft-capping
        is monotonic, so it changes no neuron's token ranking."""
        w_out = []
        for layer in self.layers:
            w = self.weight(layer.mlp_out).float()  # [d_mlp, d_model]
            post = layer.post_mlp_norm
            if post:
                w = (w - w.mean(-1, keepdim=True) if post.centered else w) * post.gain.to(w)
            if self.final_norm.centered:
                w = w - w.mean(-1, keepdim=True)
            w_out.append(w)
        w_u = self.model.get_output_embeddings().weight.detach().float().T * self.final_norm.gain.to(w_out[0])[:, None]
        return torch.stack(w_out), w_u - w_u.mean(-1, keepdim=True)

    def summary(self) -> str:
        first = self.layers[0]
        norm = first.mlp_norm.kind if first.mlp_norm else "no norm"
        parts = ["parallel attention and MLP" if self.parallel else "serial blocks", f"MLP reads through {norm}"]
        if first.post_attn_norm or first.post_mlp_norm:
            parts.append("post-norms")
        parts.append(f"{'gated' if self.gated else 'ungated'} {self.act_fn} MLP")
        if self.final_logit_softcap:
            parts.append(f"logits soft-capped at {self.final_logit_softcap:g}")
        return f"{SUPPORTED_FAMILIES.get(self.model_type, self.model_type)}: " + ", ".join(parts)


#: The keyword argument through which a decoder layer hands its attention module the rotary tables (cos, sin), as
#: every rotary family in ``transformers`` does; recorded by ``recording_rotary``.
ROTARY_KWARG = "position_embeddings"
#: Families whose rotary embedding turns interleaved pairs of dims (GPT-J), its tables a pair's half width.
INTERLEAVED_ROTARY = {"gptj"}


@contextlib.contextmanager
def recording_rotary(model: torch.nn.Module, attention: dict[int, str]) -> Iterator[dict[int, tuple[torch.Tensor, ...]]]:
    """Within the block, keep the rotary tables each attention module (``attention``: layer -> path) is handed
    (``ROTARY_KWARG``), by layer: Gemma 3's local and global layers have their own."""
    recorded: dict[int, tuple[torch.Tensor, ...]] = {}

    def record(layer: int):
        def hook(module, args, kwargs):
            tables = kwargs.get(ROTARY_KWARG)
            if tables is not None and layer not in recorded:
                recorded[layer] = tuple(t.detach().clone() for t in tables)

        return hook

    handles = [model.get_submodule(path).register_forward_pre_hook(record(layer), with_kwargs=True) for layer, path in attention.items()]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


def rotary_tables(spec: Layer, recorded: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` ``[pos, rotary_dim]`` from the tables a layer's attention was handed (positions are 0..n-1 in
    every batch row: right padding). Which is which is read, not assumed: sin is 0 at position 0 (GPT-J hands
    (sin, cos), the others (cos, sin)); GPT-J's tables hold one value per pair of dims."""
    first, second = (t[0] if t.dim() == 3 else t for t in recorded)  # [pos, width]
    cos, sin = (second, first) if bool((first[0] == 0).all()) else (first, second)
    if spec.rotary_interleaved:
        cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    return cos, sin


def rotate(spec: Layer, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Queries or keys ``x`` ``[..., d_head]`` turned by the rotary embedding at their positions (``cos``, ``sin``
    ``[..., rotary_dim]``, broadcast against ``x``'s leading dims): linear in ``x``, so it turns each component
    alike. Dims past ``rotary_dim`` pass unchanged (partial rotary: NeoX, GPT-J, Phi)."""
    if not spec.rotary_dim:
        return x
    d = spec.rotary_dim
    part, rest = x[..., :d], x[..., d:]
    if spec.rotary_interleaved:
        turned = torch.stack((-part[..., 1::2], part[..., ::2]), dim=-1).flatten(-2)
    else:
        turned = torch.cat((-part[..., d // 2:], part[..., : d // 2]), dim=-1)
    return torch.cat((part * cos.to(x) + turned * sin.to(x), rest), dim=-1)


def qk_norm_scale(spec: Layer, norm: Norm, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A q or k norm's ``1/s`` from its input ``x`` and output ``y`` (``qk_norm_layout``), as ``[batch, pos, heads]``
    (per-head norms) or ``[batch, pos, 1]`` (one over the whole projection: the same for every head)."""
    scale = norm.inverse_scale(x, y)
    if spec.qk_norm_layout == "flat":
        return scale[..., None]
    return scale.transpose(1, 2) if spec.qk_norm_layout == "heads_pos" else scale


def qk_norm_heads(spec: Layer, value: torch.Tensor, d_head: int) -> torch.Tensor:
    """A q or k norm's input or output (``qk_norm_layout``) as ``[batch, pos, heads, d_head]``."""
    if spec.qk_norm_layout == "flat":
        return value.reshape(*value.shape[:2], -1, d_head)
    return value.transpose(1, 2) if spec.qk_norm_layout == "heads_pos" else value


def qk_norm_gain(norm: Norm, d_head: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A q or k norm's gain and bias as ``[heads or 1, d_head]`` (one row per head for a norm over the projection)."""
    bias = norm.bias.reshape(-1, d_head) if norm.bias is not None else None
    return norm.gain.reshape(-1, d_head), bias


def seen(spec: Layer, query_positions: torch.Tensor, n_keys: int) -> torch.Tensor:
    """``[..., n_keys]``: which key positions each query (positions ``[...]``) attends to: causal, and within the
    layer's sliding window."""
    keys = torch.arange(n_keys, device=query_positions.device)
    t = query_positions[..., None]
    allowed = keys <= t
    if spec.sliding_window:
        allowed = allowed & (t - keys < spec.sliding_window)
    return allowed


def attention_weights(spec: Layer, scores: torch.Tensor, query_positions: torch.Tensor) -> torch.Tensor:
    """The attention pattern ``[..., keys]`` from pre-softmax scores ``q·k·scaling`` ``[..., keys]`` of queries at
    ``query_positions`` ``[...]``: the layer's soft-capping, causal mask and sliding window, softmax."""
    if spec.softcap:
        scores = torch.tanh(scores / spec.softcap) * spec.softcap
    return torch.softmax(scores.masked_fill(~seen(spec, query_positions, scores.shape[-1]), float("-inf")), dim=-1)


def _join(*names: str | None) -> str:
    return ".".join(n for n in names if n)


def _component(block, name: str):
    module = block._modules.get(name)
    return module if module is not None and getattr(module, "name", None) else None


def _norm_candidates(path: str, module: torch.nn.Module) -> Iterable[Norm]:
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    bias = bias.detach() if isinstance(bias, torch.Tensor) else None
    if isinstance(weight, torch.Tensor):
        gains = [weight.detach(), 1.0 + weight.detach()]
    else:
        d = int(getattr(module, "normalized_shape", [0])[0]) if getattr(module, "normalized_shape", None) else None
        gains = [torch.ones(d)] if d else []
    for centered in (True, False):
        for gain in gains:
            yield Norm(path, centered, gain, bias)


def _fit_norm(model_type: str, path: str, module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> Norm:
    """The norm model that reproduces the module's output from its input on the probe."""
    if x.shape[-1] != y.shape[-1]:
        raise _refuse(model_type, f"the norm {path} changes the width of the stream")
    best = min(_norm_candidates(path, module), key=lambda n: n.fit_error(x, y), default=None)
    if best is None or best.fit_error(x, y) > PROBE_TOLERANCE:
        raise _refuse(model_type, f"the norm {path} ({type(module).__name__}) is neither a LayerNorm nor an RMSNorm")
    return best


def _value_biases(
    model: torch.nn.Module, probe: torch.Tensor, attention: list[tuple[str, torch.Tensor | None]], attn_out_paths: list[str]
) -> list[torch.Tensor]:
    """Each layer's z when its attention reads only its norm's bias (the normalized stream set to zero): every
    value is then the same vector, so every head's z is that vector, its value bias (``b_V`` plus the norm's bias
    through ``W_V``), whatever the layout (fused, grouped-query, interleaved). ``attention``: per layer, the
    attention module's path and the bias of the norm before it. Read from the model, not from its weights."""
    handles = []

    def constant_input(norm_bias):
        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]
            value = torch.zeros_like(x) if norm_bias is None else norm_bias.to(x).expand_as(x).clone()
            if args:
                return (value,) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": value}

        return hook

    for path, norm_bias in attention:
        handles.append(model.get_submodule(path).register_forward_pre_hook(constant_input(norm_bias), with_kwargs=True))
    try:
        got = capture(model, probe, {f"z{i}": (path, "input") for i, path in enumerate(attn_out_paths)})
    finally:
        for handle in handles:
            handle.remove()
    return [got[f"z{i}"][0, 0].clone() for i in range(len(attn_out_paths))]


def _check_family(model_type: str, config) -> None:
    """Refuse a family whose blocks are not tested exact (``SUPPORTED_FAMILIES``), and post-LayerNorm OPT."""
    if model_type not in SUPPORTED_FAMILIES:
        raise _refuse(model_type, "its blocks have not been tested for an exact decomposition of the MLP input")
    if model_type == "opt" and not getattr(config, "do_layer_norm_before", True):
        raise _refuse(model_type, "post-LayerNorm OPT (opt-350m) normalizes the stream itself after every block, so no component adds to it linearly")


def _module_paths(bridge, model_type: str, parallel: bool) -> list[dict[str, str | None]]:
    """Per layer, the Hugging Face module path of each part ``Layer`` names (norms unfitted), from the bridge's mapping."""
    attn_paths = models.attention_output_paths(bridge)
    in_paths, out_paths = models.mlp_input_paths(bridge), models.mlp_output_paths(bridge)
    gate_paths = models.mlp_gate_paths(bridge)
    raw = []
    for i, block in enumerate(bridge.blocks):
        ln1, ln2 = _component(block, "ln1"), _component(block, "ln2")
        attention = _join(block.name, block.attn.name)
        fused = _component(block.attn, "qkv")
        value = _join(attention, (fused or _component(block.attn, "v")).name)
        mlp_norm = ln2 or (ln1 if parallel else None)
        if mlp_norm is None and not (_component(block, "ln1_post") or _component(block, "ln2_post")):
            raise _refuse(model_type, f"layer {i} has no norm before its MLP and no post-norms")
        raw.append(
            {
                "attn_out": attn_paths[i], "mlp_in": in_paths[i], "mlp_gate": gate_paths[i], "mlp_out": out_paths[i],
                "mlp_norm": _join(block.name, mlp_norm.name) if mlp_norm else None,
                "post_attn_norm": _join(block.name, _component(block, "ln1_post").name) if _component(block, "ln1_post") else None,
                "post_mlp_norm": _join(block.name, _component(block, "ln2_post").name) if _component(block, "ln2_post") else None,
                "attention": attention, "value": value,
            }
        )
    return raw


def _check_modules(model: torch.nn.Module, model_type: str, paths: list[str], attn_out: str, n_heads: int, d_head: int) -> None:
    """Refuse when a module the bridge names is not in the Hugging Face model, or when the attention output
    projection ``attn_out`` does not read the heads' outputs concatenated."""
    for path in paths:
        try:
            model.get_submodule(path)
        except AttributeError:
            raise _refuse(model_type, f"the module {path} named by TransformerLens is not in the Hugging Face model") from None
    if weight_in_out(model.get_submodule(attn_out)).shape[0] != n_heads * d_head:
        raise _refuse(model_type, "the attention output projection does not read n_heads x d_head concatenated head outputs")


def _probe_hooks(first_block: str, final_path: str, raw: list[dict[str, str | None]]) -> dict[str, tuple[str, str]]:
    """What the probe captures: the embedding, the final norm's input and output, and per layer the attention and
    MLP outputs, the MLP's input, pre-activations and activation, and every norm's input and output."""
    wanted = {"embed": (first_block, "input"), "final_in": (final_path, "input"), "final_out": (final_path, "output")}
    for i, layer in enumerate(raw):
        wanted[f"attn{i}"] = (layer["attn_out"], "output")
        wanted[f"pre_in{i}"] = (layer["mlp_in"], "output")
        wanted[f"mlp_read{i}"] = (layer["mlp_in"], "input")
        wanted[f"act{i}"] = (layer["mlp_out"], "input")
        wanted[f"mlp{i}"] = (layer["mlp_out"], "output")
        if layer["mlp_gate"]:
            wanted[f"pre_gate{i}"] = (layer["mlp_gate"], "output")
        for kind in ("mlp_norm", "post_attn_norm", "post_mlp_norm"):
            if layer[kind]:
                wanted[f"{kind}_in{i}"] = (layer[kind], "input")
                wanted[f"{kind}_out{i}"] = (layer[kind], "output")
    return wanted


def _attention_inputs(bridge, model: torch.nn.Module) -> list[tuple[str, torch.Tensor | None]]:
    """Per layer, the attention module's path and the bias of the norm before it (``_value_biases``' ``attention``)."""
    attention = []
    for block in bridge.blocks:
        ln1 = _component(block, "ln1")
        norm_bias = getattr(model.get_submodule(_join(block.name, ln1.name)), "bias", None) if ln1 else None
        attention.append((_join(block.name, block.attn.name), norm_bias.detach() if isinstance(norm_bias, torch.Tensor) else None))
    return attention


def _fit_layers(
    model_type: str, model: torch.nn.Module, raw: list[dict[str, str | None]], got: dict[str, torch.Tensor], value_bias: list[torch.Tensor]
) -> tuple[Layer, ...]:
    """Each layer's description: its paths, its norms fitted to their input and output on the probe (``got``)."""

    def norm(kind: str, i: int) -> Norm | None:
        path = raw[i][kind]
        return _fit_norm(model_type, path, model.get_submodule(path), got[f"{kind}_in{i}"], got[f"{kind}_out{i}"]) if path else None

    # Fused projections: GPT-2's c_attn is q|k|v along its output; NeoX's query_key_value is q|k|v within each head.
    value_layout = {"gpt2": "thirds", "gpt_neox": "per_head"}.get(model_type, "separate")
    return tuple(
        Layer(
            raw[i]["attn_out"], raw[i]["mlp_in"], raw[i]["mlp_gate"], raw[i]["mlp_out"],
            norm("mlp_norm", i), norm("post_attn_norm", i), norm("post_mlp_norm", i), value_bias[i],
            attention=raw[i]["attention"], value=raw[i]["value"], value_layout=value_layout,
        )
        for i in range(len(raw))
    )


def _check_mlp_input(arch: Architecture, got: dict[str, torch.Tensor], i: int, added_attn: list[torch.Tensor], added_mlp: list[torch.Tensor]) -> None:
    """Refuse unless layer ``i``'s MLP input on the probe is the embedding plus what the named attention layers and MLPs
    add to the stream (``added_*``), and, through a norm, the MLP reads that norm's output."""
    layer = arch.layers[i]
    stream = got[f"mlp_norm_in{i}"] if layer.mlp_norm else got[f"mlp_read{i}"]
    total = got["embed"].double() + sum(added_attn[j].double() for j in arch.heads_feeding(i)) + sum(m.double() for m in added_mlp[:i])
    error = float((total - stream.double()).norm() / stream.double().norm().clamp_min(1e-30))
    if error > PROBE_TOLERANCE:
        raise _refuse(arch.model_type, f"layer {i}'s MLP input is not the sum of the embedding, attention and MLP outputs (relative error {error:.2g})")
    if layer.mlp_norm and float((got[f"mlp_norm_out{i}"] - got[f"mlp_read{i}"]).abs().max()) > 0:
        raise _refuse(arch.model_type, f"layer {i}'s MLP does not read its norm's output directly")


def _check_activation(arch: Architecture, got: dict[str, torch.Tensor], i: int) -> None:
    """Refuse unless ``arch.act_fn`` of the pre-activation (times the up projection, gated) reproduces layer ``i``'s
    MLP activation on the probe."""
    pre = got[f"pre_gate{i}"] if arch.gated else got[f"pre_in{i}"]
    f_pre, _ = activation_and_slope(arch.act_fn, pre.double())
    act = f_pre * got[f"pre_in{i}"].double() if arch.gated else f_pre
    error = float((act - got[f"act{i}"].double()).norm() / got[f"act{i}"].double().norm().clamp_min(1e-30))
    if error > PROBE_TOLERANCE:
        raise _refuse(arch.model_type, f"layer {i}'s MLP activation is not {arch.act_fn}{'(gate) * up' if arch.gated else ''} (relative error {error:.2g})")


def _verify(arch: Architecture, got: dict[str, torch.Tensor]) -> None:
    """Check the description on the probe, layer by layer: the MLP input (``_check_mlp_input``), then the activation."""
    added_attn = [got[f"post_attn_norm_out{i}"] if layer.post_attn_norm else got[f"attn{i}"] for i, layer in enumerate(arch.layers)]
    added_mlp = [got[f"post_mlp_norm_out{i}"] if layer.post_mlp_norm else got[f"mlp{i}"] for i, layer in enumerate(arch.layers)]
    for i in range(len(arch.layers)):
        _check_mlp_input(arch, got, i, added_attn, added_mlp)
        _check_activation(arch, got, i)


def _qk_paths(bridge) -> list[dict[str, str | None]]:
    """Per layer, the Hugging Face paths of the attention module, the norm before it, the projections holding its
    queries and keys (the fused qkv where there is one) and its q/k norms, from the bridge's mapping."""
    raw = []
    for block in bridge.blocks:
        attention = _join(block.name, block.attn.name)
        fused, ln1 = _component(block.attn, "qkv"), _component(block, "ln1")

        def path(part: str, attention=attention, block=block) -> str | None:
            found = _component(block.attn, part)
            return _join(attention, found.name) if found else None

        raw.append(
            {
                "attention": attention, "attn_norm": _join(block.name, ln1.name) if ln1 else None,
                "query": _join(attention, fused.name) if fused else path("q"), "key": _join(attention, fused.name) if fused else path("k"),
                "q_norm": path("q_norm"), "k_norm": path("k_norm"),
            }
        )
    return raw


def _attention_hooks(arch: Architecture, raw: list[dict[str, str | None]]) -> dict[str, tuple[str, str]]:
    """What the attention probe captures: the embedding (and learned positions), what each layer adds to the stream,
    and per layer its attention's input (and its norm's), q and k projections, q/k norms and eager pattern."""
    wanted = {"embed": (arch.first_block, "input")}
    if arch.pos_embed:
        wanted["pos_embed"] = (arch.pos_embed, "output")
    for i, (layer, paths) in enumerate(zip(arch.layers, raw, strict=True)):
        wanted[f"attn{i}"] = (layer.post_attn_norm.path if layer.post_attn_norm else layer.attn_out, "output")
        wanted[f"mlp{i}"] = (layer.post_mlp_norm.path if layer.post_mlp_norm else layer.mlp_out, "output")
        wanted[f"attn_read{i}"] = (paths["attention"], "input")
        wanted[f"query{i}"], wanted[f"key{i}"] = (paths["query"], "output"), (paths["key"], "output")
        wanted[f"pattern{i}"] = (paths["attention"], "weights")
        for kind in ("attn_norm", "q_norm", "k_norm"):
            if paths[kind]:
                wanted[f"{kind}_in{i}"], wanted[f"{kind}_out{i}"] = (paths[kind], "input"), (paths[kind], "output")
    return wanted


def _qk_norm(arch: Architecture, i: int, side: str, path: str, got: dict[str, torch.Tensor]) -> tuple[Norm, str]:
    """Layer ``i``'s q or k norm fitted on the probe, and its layout (``Layer.qk_norm_layout``), found by matching its
    input to the projection's output."""
    kind = f"{side[0]}_norm"
    x = got[f"{kind}_in{i}"]
    norm = _fit_norm(arch.model_type, path, arch.module(path), x, got[f"{kind}_out{i}"])
    if norm.centered:
        raise _refuse(arch.model_type, f"the {side} norm {path} is a LayerNorm: only RMSNorms over q and k are described")
    heads = arch.qk_heads(i, got[f"{side}{i}"], side)  # [batch, pos, heads, d_head]
    for layout, view in (("flat", heads.flatten(2)), ("pos_heads", heads), ("heads_pos", heads.transpose(1, 2))):
        if x.shape == view.shape and torch.equal(x, view):
            return norm, layout
    raise _refuse(arch.model_type, f"the {side} norm {path} does not read the {side} projection's output")


def _attention_fields(arch: Architecture, i: int, paths: dict[str, str | None], got: dict, tables: tuple | None) -> dict:
    """Layer ``i``'s query and key side (``Layer``'s fields), read from its attention module and fitted on the probe."""
    module = arch.module(paths["attention"])
    scaling = getattr(module, "scaling", None)
    if scaling is None:
        raise _refuse(arch.model_type, f"the attention module {paths['attention']} has no 'scaling'")
    config = arch.model.config
    window = module.sliding_window if hasattr(module, "sliding_window") else getattr(config, "sliding_window", None)
    fields = {
        "query": paths["query"], "key": paths["key"], "scaling": float(scaling), "sliding_window": int(window) if window else None,
        "softcap": getattr(module, "attn_logit_softcapping", None) or None,
    }
    if paths["attn_norm"]:
        fields["attn_norm"] = _fit_norm(arch.model_type, paths["attn_norm"], arch.module(paths["attn_norm"]), got[f"attn_norm_in{i}"], got[f"attn_norm_out{i}"])
    layouts = set()
    for side in ("query", "key"):
        path = paths[f"{side[0]}_norm"]
        if path:
            fields[f"{side[0]}_norm"], layout = _qk_norm(arch, i, side, path, got)
            layouts.add(layout)
    if len(layouts) > 1:
        raise _refuse(arch.model_type, f"layer {i}'s q and k norms read their projections differently")
    fields["qk_norm_layout"] = layouts.pop() if layouts else "pos_heads"
    if tables is not None:
        interleaved = arch.model_type in INTERLEAVED_ROTARY
        fields["rotary_interleaved"] = interleaved
        fields["rotary_dim"] = int(tables[0].shape[-1]) * (2 if interleaved else 1)
        if fields["rotary_dim"] > arch.d_head:
            raise _refuse(arch.model_type, f"layer {i}'s rotary tables are wider than a head")
    return fields


def _probe_pattern(arch: Architecture, i: int, got: dict, recorded: dict) -> torch.Tensor:
    """Layer ``i``'s attention pattern ``[batch, heads, query, key]`` on the probe from its description: the captured
    projections, clamped, through the q/k norms at their fitted scales, turned, scaled, capped, masked."""
    spec = arch.layers[i]
    sides = []
    for side in ("query", "key"):
        x = arch.qk_heads(i, got[f"{side}{i}"].double(), side)  # [batch, pos, heads, d_head]
        if arch.clip_qkv:
            x = x.clamp(-arch.clip_qkv, arch.clip_qkv)
        norm = spec.q_norm if side == "query" else spec.k_norm
        if norm:
            gain, bias = qk_norm_gain(norm, arch.d_head)
            kind = f"{side[0]}_norm"
            x = x * gain.to(x) * qk_norm_scale(spec, norm, got[f"{kind}_in{i}"], got[f"{kind}_out{i}"])[..., None] + (bias.to(x) if bias is not None else 0.0)
        if spec.rotary_dim:
            cos, sin = rotary_tables(spec, recorded[i])
            x = rotate(spec, x, cos[None, :, None], sin[None, :, None])
        sides.append(x)
    q, k = sides
    k = k.repeat_interleave(arch.n_heads // k.shape[2], dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * spec.scaling
    return attention_weights(spec, scores, torch.arange(q.shape[1], device=q.device))


def _check_attention(arch: Architecture, got: dict, recorded: dict, probe: torch.Tensor) -> None:
    """Refuse unless, on the probe, each layer's attention input is the embedding plus what earlier layers add, the
    attention reads its norm's output, the learned positions split off the embedding leave the token embedding
    (scaled), and the description reproduces every attention weight the model computed (eager)."""
    embed = got["embed"].double()
    if arch.pos_embed:
        tokens = (embed - got["pos_embed"].double()).flatten(1)
        looked_up = arch.model.get_input_embeddings()(probe.to(arch.device)).double().flatten(1)
        scale = (tokens * looked_up).sum() / (looked_up * looked_up).sum()
        if float((tokens - scale * looked_up).norm() / tokens.norm()) > PROBE_TOLERANCE:
            raise _refuse(arch.model_type, f"the embedding less {arch.pos_embed} is not the token embedding")
    for i, spec in enumerate(arch.layers):
        stream = got[f"attn_norm_in{i}" if spec.attn_norm else f"attn_read{i}"].double()
        total = embed + sum(got[f"attn{s}"].double() + got[f"mlp{s}"].double() for s in range(i))
        error = float((total - stream).norm() / stream.norm().clamp_min(1e-30))
        if error > PROBE_TOLERANCE:
            raise _refuse(arch.model_type, f"layer {i}'s attention input is not the embedding plus the earlier layers' outputs (relative error {error:.2g})")
        if spec.attn_norm and not torch.equal(got[f"attn_norm_out{i}"], got[f"attn_read{i}"]):
            raise _refuse(arch.model_type, f"layer {i}'s attention does not read its norm's output directly")
        error = float((_probe_pattern(arch, i, got, recorded) - got[f"pattern{i}"].double()).abs().max())
        if error > PROBE_TOLERANCE:
            raise _refuse(arch.model_type, f"layer {i}'s attention pattern is not the softmax of its described q·k scores (error {error:.2g})")


def _describe_attention(arch: Architecture, bridge, probe: torch.Tensor) -> Architecture:
    """``arch`` with each layer's query and key side described (``Layer``'s fields) and checked on one eager probe pass."""
    raw = _qk_paths(bridge)
    pos = _component(bridge, "pos_embed")
    arch = dataclasses.replace(arch, pos_embed=pos.name if pos else None)
    for path in [p for layer in raw for p in layer.values() if p] + ([arch.pos_embed] if arch.pos_embed else []):
        try:
            arch.module(path)
        except AttributeError:
            raise _refuse(arch.model_type, f"the module {path} named by TransformerLens is not in the Hugging Face model") from None
    with eager_attention(arch.model), recording_rotary(arch.model, {i: paths["attention"] for i, paths in enumerate(raw)}) as recorded:
        got = capture(arch.model, probe, _attention_hooks(arch, raw))
    layers = tuple(dataclasses.replace(layer, **_attention_fields(arch, i, raw[i], got, recorded.get(i))) for i, layer in enumerate(arch.layers))
    arch = dataclasses.replace(arch, layers=layers)
    _check_attention(arch, got, recorded, probe)
    return arch


def _with_attention(arch: Architecture, bridge, probe: torch.Tensor) -> Architecture:
    """``arch`` with its query and key side described and verified on the probe or, where that fails, with
    ``qk_refusal`` saying why: only QK attribution refuses such a model, the MLP-input description stands."""
    try:
        return _describe_attention(arch, bridge, probe)
    except UnsupportedModel as error:
        return dataclasses.replace(arch, qk_refusal=str(error))
    except Exception as error:  # noqa: BLE001 - an unforeseen module layout must not stop the steps that do not read q and k
        return dataclasses.replace(arch, qk_refusal=str(_refuse(arch.model_type, f"its attention could not be described ({type(error).__name__}: {error})")))


def describe(bridge, model: torch.nn.Module) -> Architecture:
    """Build the description from the bridge's component mapping and verify it on one probe forward pass of
    the plain Hugging Face ``model``. Raises ``UnsupportedModel`` with what is supported otherwise."""
    config = model.config
    model_type = str(getattr(config, "model_type", type(model).__name__))
    _check_family(model_type, config)
    cfg = bridge.cfg
    parallel = bool(getattr(cfg, "parallel_attn_mlp", False))
    n_heads, d_head = int(cfg.n_heads), int(cfg.d_head)
    raw = _module_paths(bridge, model_type, parallel)
    final_path, first_block = bridge.ln_final.name, bridge.blocks[0].name
    paths = [first_block, final_path] + [p for layer in raw for p in layer.values() if p]
    _check_modules(model, model_type, paths, raw[0]["attn_out"], n_heads, d_head)

    # The probe: every position of one short prompt, every hook the description names.
    vocab = int(config.vocab_size)
    probe = (torch.arange(1, 25) * 7919 % max(vocab - 1, 1) + 1).clamp_max(vocab - 1)[None]
    got = capture(model, probe, _probe_hooks(first_block, final_path, raw))
    value_bias = _value_biases(model, probe, _attention_inputs(bridge, model), [layer["attn_out"] for layer in raw])
    layers = _fit_layers(model_type, model, raw, got, value_bias)
    final_norm = _fit_norm(model_type, final_path, model.get_submodule(final_path), got["final_in"], got["final_out"])
    arch = Architecture(
        model_type=model_type, parallel=parallel, first_block=first_block, layers=layers, final_norm=final_norm, n_heads=n_heads,
        d_head=d_head, gated=bool(getattr(cfg, "gated_mlp", False)), act_fn=str(cfg.act_fn),
        final_logit_softcap=getattr(config, "final_logit_softcapping", None) or None, model=model,
        n_kv_heads=int(getattr(cfg, "n_key_value_heads", None) or n_heads), clip_qkv=getattr(config, "clip_qkv", None) or None,
    )
    _verify(arch, got)
    return _with_attention(arch, bridge, probe)


def load_architecture(local_dir: str, device: str = "cpu") -> Architecture:
    """The verified description of the checkpoint in ``local_dir``, over its plain Hugging Face model on
    ``device``: the model runtime's (``runtime.load_runtime``, loaded once per process)."""
    from lookups.pipeline.inputs.runtime import load_runtime  # the runtime builds on this module

    return load_runtime(local_dir, device).arch
