import numpy as np
import pytest

from keras_compress.pruning import masks as pm

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


def _weights(rng, shapes=((30, 20), (50,), (7, 7, 3))):
    return [rng.normal(scale=s + 1, size=shape) for s, shape in enumerate(shapes)]


def _ones(ws):
    return [np.ones(w.shape, bool) for w in ws]


def test_class_blind_uses_one_global_threshold():
    rng = np.random.default_rng(1)
    ws = _weights(rng)
    masks = pm.class_blind_masks(ws, _ones(ws), 0.6)
    flat = np.concatenate([np.abs(w).ravel() for w in ws])
    n = round(0.6 * flat.size)
    threshold = np.sort(flat)[n - 1]  # oracle: the n-th smallest magnitude overall
    for w, m in zip(ws, masks):
        np.testing.assert_array_equal(m, np.abs(w) > threshold)
    assert sum((~m).sum() for m in masks) == n


def test_class_uniform_prunes_each_class_to_its_own_fraction():
    rng = np.random.default_rng(2)
    ws = _weights(rng)
    targets = [0.5, 0.9, 0.25]
    masks = pm.class_uniform_masks(ws, _ones(ws), targets)
    for w, m, s in zip(ws, masks, targets):
        n = round(s * w.size)
        assert (~m).sum() == n
        threshold = np.sort(np.abs(w).ravel())[n - 1]
        np.testing.assert_array_equal(m, np.abs(w) > threshold)


def test_class_distribution_threshold_is_lambda_times_std():
    rng = np.random.default_rng(3)
    ws = _weights(rng)
    masks = pm.class_distribution_masks(ws, _ones(ws), 0.7)
    total = sum(w.size for w in ws)
    assert sum((~m).sum() for m in masks) == round(0.7 * total)
    # Oracle: the same lambda works as a threshold on |w| / std for every class.
    ratios = [np.abs(w) / w.std() for w in ws]
    lam = max(r[~m].max() for r, m in zip(ratios, masks))
    for r, m in zip(ratios, masks):
        np.testing.assert_array_equal(m, r > lam)


def test_class_blind_and_uniform_differ_when_scales_differ():
    rng = np.random.default_rng(4)
    ws = [rng.normal(scale=0.1, size=1000), rng.normal(scale=10, size=1000)]
    blind = pm.class_blind_masks(ws, _ones(ws), 0.5)
    uniform = pm.class_uniform_masks(ws, _ones(ws), [0.5, 0.5])
    assert (~blind[0]).mean() > 0.95 and (~blind[1]).mean() < 0.05
    assert (~uniform[0]).mean() == 0.5 and (~uniform[1]).mean() == 0.5


def test_lamp_scores_match_their_definition_and_ignore_scale():
    rng = np.random.default_rng(7)
    w = rng.normal(size=200)
    keep = rng.random(200) < 0.8
    scores = pm.lamp_scores(w, keep)
    for u in np.flatnonzero(keep):  # oracle: the definition, weight by weight
        larger = keep & (np.abs(w) >= np.abs(w[u]))
        assert scores[u] == pytest.approx(w[u] ** 2 / np.sum(w[larger] ** 2))
    assert np.all(scores[~keep] == -1.0)
    assert scores.max() == 1.0  # the largest kept weight
    np.testing.assert_allclose(pm.lamp_scores(w * 1e3, keep), scores)  # BatchNorm'd kernels


def test_lamp_prunes_large_classes_more_and_empties_none():
    rng = np.random.default_rng(8)
    # Scales as different as a kernel before a BatchNorm can have; sizes 1:10:100.
    ws = [rng.normal(scale=1e-3, size=100), rng.normal(size=1000), rng.normal(scale=50, size=10000)]
    masks = pm.lamp_masks(ws, _ones(ws), 0.95)
    assert sum((~m).sum() for m in masks) == round(0.95 * 11100)
    pruned = [(~m).mean() for m in masks]
    assert pruned[0] < pruned[1] < pruned[2] < 1.0
    # A class rescaled keeps its mask: the allocation does not follow magnitudes across classes.
    rescaled = pm.lamp_masks([ws[0] * 1e6, ws[1], ws[2] * 1e-4], _ones(ws), 0.95)
    for a, b in zip(masks, rescaled):
        np.testing.assert_array_equal(a, b)
    # 3 of 11,100 kept: the largest weight of each class (its score is 1).
    assert [m.sum() for m in pm.lamp_masks(ws, _ones(ws), 0.9997)] == [1, 1, 1]


@pytest.mark.parametrize(
    "criterion", ["class_blind", "class_uniform", "class_distribution", "lamp"]
)
def test_pruned_weights_are_never_revived(criterion):
    rng = np.random.default_rng(5)
    ws = _weights(rng)
    first = pm.compute_masks(criterion, ws, _ones(ws), [0.5] * 3)
    # Shuffle magnitudes so that the old pruned positions would now be large.
    ws2 = [rng.permutation(w.ravel()).reshape(w.shape) * 3 for w in ws]
    second = pm.compute_masks(criterion, ws2, first, [0.6] * 3)
    for a, b in zip(first, second):
        assert not np.any(b & ~a)
    lower = pm.compute_masks(criterion, ws2, first, [0.1] * 3)
    for a, b in zip(first, lower):
        np.testing.assert_array_equal(a, b)


def test_std_rule_prunes_below_quality_times_std_of_kept():
    rng = np.random.default_rng(6)
    w = rng.normal(size=500)
    keep = np.abs(w) < 2.0
    (m,) = pm.std_masks([w], [keep], [0.7])
    np.testing.assert_array_equal(m, keep & (np.abs(w) > 0.7 * w[keep].std()))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval_is_rejected(bad):
    w = [np.ones(4)]
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        pm.class_blind_masks(w, _ones(w), bad)


def test_unknown_criterion_and_shape_mismatch_are_rejected():
    w = [np.ones(4)]
    with pytest.raises(ValueError, match="unknown pruning criterion"):
        pm.compute_masks("random", w, _ones(w), [0.5])
    with pytest.raises(ValueError, match="differ in shape"):
        pm.class_blind_masks(w, [np.ones(5, bool)], 0.5)


@pytest.mark.parametrize("criterion", ["class_blind", "class_uniform", "lamp"])
def test_levels_are_exact_with_ties_and_nans(criterion):
    # Equal magnitudes are pruned first come first served; NaNs (a diverged run) rank last.
    w = [np.array([1.0, -1.0, np.nan, 1.0, 0.5, np.nan, -1.0, 2.0], np.float32)]
    for level in (0.125, 0.25, 0.5, 0.75, 0.875):
        mask = pm.compute_masks(criterion, w, [np.ones(8, bool)], [level])[0]
        assert np.count_nonzero(~mask) == round(level * 8)
        if level >= 0.25:
            assert not mask[4]  # the smallest magnitude goes first
        if level < 0.75:
            assert mask[2] and mask[5]  # NaNs go only after every number
    tied = pm.compute_masks(criterion, [np.ones(4, np.float32)], [np.ones(4, bool)], [0.5])[0]
    assert tied.tolist() == [False, False, True, True]
