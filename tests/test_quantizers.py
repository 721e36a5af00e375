import numpy as np
import pytest

from keras_compress.coding.entropy import entropy_bits
from keras_compress.sharing.kmeans1d import kmeans1d
from keras_compress.sharing.quantizers import ecsq, linear_quantize, uniform_quantize

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


def test_uniform_bins_have_equal_width_and_mean_representatives():
    x = np.random.default_rng(0).normal(size=4000)
    q = uniform_quantize(x, 16)
    edges = np.linspace(x.min(), x.max(), 17)
    bins = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, 15)
    for j, c in enumerate(q.centroids):
        members = x[q.labels == j]
        assert c == pytest.approx(members.mean())
        assert np.unique(bins[q.labels == j]).size == 1  # each cluster is one bin


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_ecsq_has_lower_entropy_than_kmeans_at_no_more_distortion():
    x = np.random.default_rng(1).laplace(size=20000)
    km = kmeans1d(x, 8, "linear")
    km_entropy = entropy_bits(km.labels)
    wins = []
    for lam in (0.05, 0.1, 0.15, 0.2):
        q = ecsq(x, 64, lam)
        if q.inertia <= km.inertia:
            wins.append(entropy_bits(q.labels))
    assert wins and min(wins) < km_entropy - 0.05, (wins, km_entropy)


def test_ecsq_with_zero_lambda_is_a_kmeans_fixed_point():
    x = np.random.default_rng(2).normal(size=3000)
    q = ecsq(x, 8, 0.0, max_iter=500, tol=0.0)
    for j, c in enumerate(q.centroids):
        assert c == pytest.approx(x[q.labels == j].mean())
    dist = np.abs(x[:, None] - q.centroids[None, :])
    assert np.all(dist[np.arange(x.size), q.labels] <= dist.min(axis=1) + 1e-12)


@pytest.mark.parametrize("bits", [2, 8, 12, 16])
@pytest.mark.parametrize("axis", [None, 1])
def test_linear_quantization_error_within_half_a_step(bits, axis):
    x = np.random.default_rng(bits).normal(size=(64, 10)) * np.arange(1, 11)
    q, scale = linear_quantize(x, bits, axis=axis)
    assert np.all(np.abs(q) <= 2 ** (bits - 1) - 1)
    assert np.all(np.abs(q * scale - x) <= scale / 2 + 1e-12)
    levels = (
        np.unique(q, axis=None).size
        if axis is None
        else max(np.unique(q[:, c]).size for c in range(10))
    )
    assert levels <= 2**bits
    if axis is not None:
        assert scale.shape == (1, 10)


def test_power_of_two_scales_are_fixed_point():
    x = np.random.default_rng(3).normal(size=100)
    q, scale = linear_quantize(x, 12, power_of_two=True)
    assert np.log2(scale) == np.round(np.log2(scale))
    assert np.all(np.abs(q * scale - x) <= scale / 2)


def test_bad_bits_and_lambda_are_rejected():
    with pytest.raises(ValueError, match="from 2 to 16"):
        linear_quantize(np.ones(3), 1)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        ecsq(np.ones(3), 2, -1.0)
