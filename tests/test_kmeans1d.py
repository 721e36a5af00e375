import numpy as np
import pytest
from sklearn.cluster import KMeans

from keras_compress.sharing.kmeans1d import BinnedData, initial_centroids, kmeans1d

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


@pytest.mark.parametrize("init", ["linear", "density", "forgy", "kmeans++"])
@pytest.mark.parametrize("k", [4, 32])
def test_inertia_is_no_worse_than_sklearn_from_the_same_init(init, k):
    rng = np.random.default_rng(k)
    x = np.concatenate([rng.normal(0, 0.05, 3000), rng.laplace(0.1, 0.02, 2000)])
    start = initial_centroids(x, k, init, seed=3)
    ours = kmeans1d(x, k, init=start)
    ref = KMeans(k, init=start.reshape(-1, 1), n_init=1, max_iter=300).fit(x.reshape(-1, 1))
    assert ours.inertia <= ref.inertia_ * (1 + 1e-4)
    np.testing.assert_allclose(ours.inertia, np.sum((x - ours.values()) ** 2), rtol=1e-9)


def test_assignment_is_the_nearest_centroid_brute_force():
    rng = np.random.default_rng(0)
    for trial in range(20):
        x = rng.normal(size=rng.integers(5, 60))
        k = int(rng.integers(1, min(8, x.size) + 1))
        result = kmeans1d(x, k, init="forgy", seed=trial)
        dist = np.abs(x[:, None] - result.centroids[None, :])
        assert np.all(dist[np.arange(x.size), result.labels] <= dist.min(axis=1) + 1e-12)
        # At convergence every used centroid is the mean of its members.
        for j in np.unique(result.labels):
            assert result.centroids[j] == pytest.approx(x[result.labels == j].mean())


def test_labels_keep_the_input_shape():
    x = np.random.default_rng(1).normal(size=(7, 5, 3))
    result = kmeans1d(x, 6)
    assert result.labels.shape == x.shape
    assert np.all(np.diff(result.centroids) >= 0)


def test_hessian_weighting_lowers_the_weighted_distortion():
    rng = np.random.default_rng(2)
    x = rng.normal(size=5000)
    h = np.exp(rng.normal(scale=2.0, size=x.size))  # importances spread over decades
    plain = kmeans1d(x, 8, "linear")
    weighted = kmeans1d(x, 8, "linear", sample_weight=h)
    weighted_distortion = lambda c: np.sum(h * (x - c.values()) ** 2)  # noqa: E731
    assert weighted_distortion(weighted) < weighted_distortion(plain)
    assert weighted.inertia == pytest.approx(weighted_distortion(weighted))


def test_initialisations_follow_han_et_al():
    x = np.random.default_rng(3).normal(size=1001)
    np.testing.assert_allclose(initial_centroids(x, 5, "linear"), np.linspace(x.min(), x.max(), 5))
    np.testing.assert_allclose(
        initial_centroids(x, 4, "density"), np.quantile(x, [0.125, 0.375, 0.625, 0.875])
    )
    forgy = initial_centroids(x, 10, "forgy", seed=1)
    assert np.all(np.isin(forgy, x)) and np.unique(forgy).size == 10
    assert np.all(np.isin(initial_centroids(x, 10, "kmeans++", seed=1), x))


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="integer >= 1"):
        kmeans1d(np.ones(4), 0)
    with pytest.raises(ValueError, match="needs 3 distinct values, the data has 2"):
        kmeans1d(np.array([1.0, 1.0, 2.0]), 3, init="forgy")
    with pytest.raises(ValueError, match="NaN"):
        kmeans1d(np.array([1.0, np.nan]), 1)
    with pytest.raises(ValueError, match="unknown k-means init"):
        kmeans1d(np.ones(4), 2, init="random")
    with pytest.raises(ValueError, match="sample_weight"):
        kmeans1d(np.ones(4), 2, sample_weight=-np.ones(4))


def heavy_tailed(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.laplace(0, 0.02, n // 2), rng.normal(0, 0.05, n - n // 2)])


@pytest.mark.parametrize("weighted", [False, True])
def test_binned_path_is_exact_and_no_worse_than_sklearn(weighted):
    # More values than bins: iterations on the binned sums, empty tail clusters relocated.
    x = heavy_tailed(100_000, 5).astype(np.float32)
    h = np.random.default_rng(6).uniform(0.5, 2.0, x.size) if weighted else None
    start = initial_centroids(x, 32, "linear")
    ours = kmeans1d(x, 32, init=start, sample_weight=h)
    ref = KMeans(32, init=start.reshape(-1, 1), n_init=1).fit(x.reshape(-1, 1), sample_weight=h)
    assert ours.inertia <= ref.inertia_ * (1 + 1e-4)
    x64 = x.astype(np.float64)
    dist = np.abs(x64[:, None] - ours.centroids[None, :])
    assert np.all(dist[np.arange(x.size), ours.labels] <= dist.min(axis=1))
    error = (x64 - ours.values()) ** 2 * (1.0 if h is None else h)
    np.testing.assert_allclose(ours.inertia, np.sum(error), rtol=1e-9)


def test_farthest_with_more_empty_clusters_than_filled_bins():
    # 33 values within 0.002 of zero and 3 far ones fill 4 bins; 23 clusters leave >4 empty.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1e-3, 33), [0.21, 0.36, -0.65]])
    data = BinnedData(x)
    centroids = np.array([-0.65, 0.0, 0.36])
    error = np.abs(x[:, None] - centroids[None, :]).min(axis=1)
    found = np.abs(data.farthest(centroids, 11)[:, None] - centroids[None, :]).min(axis=1)
    np.testing.assert_array_equal(np.sort(found), np.sort(error)[-11:])
    result = kmeans1d(x, 23, "linear")
    assert np.unique(result.centroids).size == 23


def test_farthest_values_match_a_full_search():
    x = heavy_tailed(200_000, 7)
    data = BinnedData(x)
    rng = np.random.default_rng(8)
    for count in (1, 5, 40):
        centroids = np.sort(rng.normal(0, 0.03, 16))
        error = np.abs(x[:, None] - centroids[None, :]).min(axis=1)
        expected = np.sort(error)[-count:]
        found = np.abs(data.farthest(centroids, count)[:, None] - centroids[None, :]).min(axis=1)
        np.testing.assert_array_equal(np.sort(found), expected)
