"""Tolerances for tests that compare two computations, from the arithmetic rather than from one machine's
results (docs/quality.md, "Tolerances"): a test holds on any CPU or GPU when its tolerance covers the worst
rounding the computation can have, and still fails on a logic error, which is orders of magnitude larger.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

#: The unit roundoff of float32 (2^-24): one rounding changes a value by at most this, relatively.
U32 = float(torch.finfo(torch.float32).eps) / 2

#: Batched against one at a time, on float64 copies of the tiny models, relative to each column's largest
#: magnitude. float64 leaves only what the Hugging Face code computes in float32 whatever the model's dtype
#: (the eager attention's softmax, RMSNorm's statistics, rotary tables), whose vectorized reductions may round
#: differently with the padded length: a few U32 at most (measured: at most 2e-15 on every family but GPT-J, on
#: three CPU kernel paths). A batching error (a wrong row, padding read) moves values by a large fraction.
BATCHED_REL = 1e-6
#: GPT-J computes its attention scores in float32 too (``GPTJAttention._attn`` upcasts q and k), and a score
#: of magnitude s moves the softmax by s·U32: measured 5e-7 of the scale on look-ups, so one decade more.
BATCHED_REL_FAMILY = {"gptj": 1e-5}


#: Two fp32 forward passes with different kernels (eager attention against the model's default, other batch
#: shapes) differ by forward rounding, which no bound covers as tightly as one pass; relative to the most the
#: head could contribute (Cauchy-Schwarz, lookups.Part.magnitude). Measured at most 2.4e-6 on the tiny models
#: and 1.6e-6 on SmolLM2 on three CPU kernel paths; a wrong prompt, head or bias moves it by a large fraction.
ACROSS_KERNELS_REL = 1e-4


def rounding_bound(n_operations: int) -> float:
    """The worst relative rounding of ``n_operations`` float32 additions or products in sequence (the
    classic γ_n = n·u / (1 - n·u)), relative to the sum of the magnitudes involved."""
    nu = n_operations * U32
    return nu / (1.0 - nu)


def pre_activation_bound(n_layers: int, d_model: int) -> float:
    """The worst relative rounding of a neuron's pre-activation in one fp32 forward pass, relative to its rounding
    scale (``scale_in``/``scale_gate``, attribution._decompose): one addition per vector the stream adds (two per
    layer, the embedding, biases), the norm, and the neuron's dot product over ``d_model``."""
    return rounding_bound(2 * n_layers + 4 + d_model)


def activation_tolerance(act_fn: str, totals: pd.DataFrame, pre_bound: float) -> np.ndarray:
    """Per row of ``totals`` (attribution totals: ``pre_gate``, ``pre_in``, ``act``, ``scale_gate``, ``scale_in``), how
    far two fp32 computations of the neuron's activation may differ when each rounds its pre-activations by at most
    ``pre_bound`` of their rounding scales: to first order through the activation function, plus the few roundings of
    the activation itself."""
    from lookups.pipeline.inputs.architecture import activation_and_slope

    gated = totals["pre_gate"].notna().all()
    pre = torch.tensor(totals["pre_gate" if gated else "pre_in"].to_numpy(float), dtype=torch.float64)
    value, slope = (t.numpy() for t in activation_and_slope(act_fn, pre))
    if gated:
        moved = np.abs(slope * totals["pre_in"]) * totals["scale_gate"] + np.abs(value) * totals["scale_in"]
    else:
        moved = np.abs(slope) * totals["scale_in"]
    return (2 * pre_bound * moved + 8 * U32 * np.abs(totals["act"])).to_numpy(float)


def assert_frames_close(actual: pd.DataFrame, expected: pd.DataFrame, rel: float, exclude: tuple[str, ...] = ()) -> None:
    """Same columns and rows; every float column within ``rel`` of ``expected``'s largest magnitude in that
    column, every other column equal. ``exclude``: columns not compared (measurements of rounding itself)."""
    assert list(actual.columns) == list(expected.columns) and len(actual) == len(expected)
    for column in actual.columns:
        if column in exclude:
            continue
        a, e = actual[column].to_numpy(), expected[column].to_numpy()
        if actual[column].dtype.kind == "f":
            scale = np.nanmax(np.abs(e)) if np.isfinite(e).any() else 0.0
            assert np.array_equal(np.isnan(a), np.isnan(e)), column
            worst = float(np.nanmax(np.abs(a - e))) if len(a) and not np.isnan(a).all() else 0.0
            assert worst <= rel * scale, f"{column}: differs by {worst:.3g}, more than {rel:g} of its scale {scale:.3g}"
        else:
            assert (a == e).all(), column
