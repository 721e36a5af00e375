"""One weight key everywhere: Hessians, sharing, pruning classes and reports agree on names."""

import keras
import numpy as np
import pytest

import keras_compress as kc

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


def _time_distributed():
    return keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.TimeDistributed(keras.layers.Dense(8, name="fc"), name="td"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, name="out"),
        ]
    )


def _bidirectional():
    return keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.Bidirectional(keras.layers.LSTM(6), name="bi"),
            keras.layers.Dense(2, name="out"),
        ]
    )


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param(_time_distributed, {"td/fc/kernel", "out/kernel"}, marks=pytest.mark.slow),
        pytest.param(
            _bidirectional,
            {
                "bi/forward_lstm/lstm_cell/kernel",
                "bi/forward_lstm/lstm_cell/recurrent_kernel",
                "bi/backward_lstm/lstm_cell/kernel",
                "bi/backward_lstm/lstm_cell/recurrent_kernel",
                "out/kernel",
            },
            marks=pytest.mark.slow,
        ),
    ],
)
def test_hessian_keys_are_the_keys_sharing_pruning_and_reports_use(build, expected):
    model = build()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 5, 3)).astype("float32"), rng.integers(0, 2, 16)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    hessian = kc.core.hessian.fisher_diagonal(model, [(x, y)], loss)
    assert set(hessian) == expected
    assert {name for name, _ in kc.core.compressed_weights(model)} == expected

    # The regression: hessian_kmeans looked up "td/fc/kernel" while the Hessian said "fc/kernel".
    shared = kc.share_weights(model, bits=3, quantizer="hessian_kmeans", hessian=hessian)
    assert {name for name, _ in kc.core.compressed_weights(shared)} == expected
    for name, value in kc.core.compressed_weights(shared):
        assert np.unique(value).size <= 8, name

    pruned = kc.make_prunable(model)
    assert set(kc.sparsity(pruned)) == expected | {"total"}
    targets = {key: 0.5 for key in expected}
    pruned.compile("adam", loss)
    pruned.fit(x, y, epochs=1, verbose=0,
               callbacks=[kc.MagnitudePruning(0.5, "constant", layer_targets=targets)])  # fmt: skip
    for name, level in kc.sparsity(pruned).items():
        assert level == pytest.approx(0.5, abs=0.02), name


def test_weight_key_sees_through_our_wrappers_only():
    td = keras.layers.TimeDistributed(keras.layers.Dense(2, name="fc"), name="td")
    wrapped = kc.PruningWrapper(td)
    wrapped.build((None, 4, 3))
    assert kc.core.is_wrapper(wrapped) and not kc.core.is_wrapper(td)
    assert kc.core.unwrap(wrapped) is td and kc.core.unwrap(td) is td
    assert kc.core.weight_key(wrapped, td.layer.kernel) == "td/fc/kernel"
