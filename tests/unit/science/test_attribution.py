"""Head attribution's formulas without a model: the active-head threshold, and the activation functions' values
and slopes (on the planted-circuit model: tests/integration/science/test_attribution.py)."""

import numpy as np
import pytest
import torch

from lookups.pipeline.inputs import architecture
from lookups.pipeline.science import attribution


def test_active_threshold_is_mean_plus_sigma_sample_std():
    scores = np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 8.0], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]])
    threshold = attribution.active_threshold(scores, 2.0)
    np.testing.assert_allclose(threshold, scores.mean(1) + 2 * scores.std(1, ddof=1))
    assert (scores[0] > threshold[0]).tolist() == [False] * 7 + [True]  # one outlier among 8 heads is active
    assert not (scores[1] > threshold[1]).any()  # an even spread has no active head


def test_slope_of_silu_and_gelu_matches_finite_differences():
    x = torch.linspace(-4, 4, 33, dtype=torch.float64)
    for name, fn in [("silu", torch.nn.functional.silu), ("gelu_new", lambda t: torch.nn.functional.gelu(t, approximate="tanh"))]:
        value, slope = architecture.activation_and_slope(name, x)
        torch.testing.assert_close(value, fn(x))
        torch.testing.assert_close(slope, (fn(x + 1e-6) - fn(x - 1e-6)) / 2e-6, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="add it"):
        architecture.activation_and_slope("softplus", x)
