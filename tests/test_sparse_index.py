import numpy as np
import pytest

from keras_compress.coding.sparse_index import absolute_positions, relative_gaps

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.08, 0.5, 1.0])
@pytest.mark.parametrize("max_gap", [1, 7, 255])
def test_round_trip_and_filler_count(density, max_gap):
    rng = np.random.default_rng(int(density * 100) + max_gap)
    mask = rng.random(5000) < density
    gaps, real = relative_gaps(mask, max_gap)
    assert gaps.max(initial=0) <= max_gap
    positions = absolute_positions(gaps, size=mask.size)
    np.testing.assert_array_equal(positions[real], np.flatnonzero(mask))
    assert not np.any(mask[positions[~real]])  # fillers sit on zeros
    skipped = np.diff(np.flatnonzero(mask), prepend=-1) - 1
    assert (~real).sum() == np.sum(skipped // (max_gap + 1))


def test_positions_beyond_the_tensor_are_rejected():
    with pytest.raises(ValueError, match="beyond the tensor's 5 values"):
        absolute_positions(np.array([1, 3]), size=5)
    with pytest.raises(ValueError, match="max_gap"):
        relative_gaps(np.ones(3, bool), 0)
