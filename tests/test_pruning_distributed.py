"""MirroredStrategy over two logical CPU devices (set up in conftest.py)."""

import keras
import numpy as np
import pytest
from helpers import mlp

import keras_compress as kc


def _replica_values(variable):
    inner = getattr(variable, "value", variable)
    return [np.asarray(v.numpy()) for v in getattr(inner, "values", [inner])]


def test_mirrored_strategy_gives_the_same_masks_on_every_replica(toy_data, mirrored):
    x, y = toy_data
    strategy = mirrored
    with strategy.scope():
        model = kc.make_prunable(mlp())
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = kc.MagnitudePruning(0.75, end_step=12, frequency=3)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[callback])
    assert kc.sparsity(model)["total"] == pytest.approx(0.75, abs=2e-3)
    for wrapper in kc.pruning_wrappers(model):
        steps = _replica_values(wrapper.step)  # one wrapper counts: the callback reads that one
        assert len(steps) == 2 and all(int(s) == 24 * wrapper.counts_steps for s in steps)
        for var, mask in zip(wrapper.compressed_variables, wrapper.masks):
            masks, weights = _replica_values(mask), _replica_values(var)
            assert len(masks) == 2 and len(weights) == 2
            np.testing.assert_array_equal(masks[0], masks[1])
            np.testing.assert_array_equal(weights[0], weights[1])
            assert round(0.75 * masks[0].size) == (~masks[0]).sum()
            assert np.all(weights[0][~masks[0]] == 0)


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_load_balanced_pruning_under_mirrored_strategy_and_after_save(toy_data, mirrored, tmp_path):
    x, y = toy_data
    with mirrored.scope():
        model = kc.make_prunable(mlp())
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = kc.MagnitudePruning(0.75, end_step=12, frequency=3, load_balance=4)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    model.save(tmp_path / "m.keras")
    restored = keras.models.load_model(tmp_path / "m.keras")
    again = kc.MagnitudePruning(**callback.get_config())
    assert again.load_balance == 4
    restored.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[again])
    for before, after in zip(kc.pruning_wrappers(model), kc.pruning_wrappers(restored)):
        for mask, kept in zip(before.masks, after.masks):
            replicas = _replica_values(mask)
            np.testing.assert_array_equal(replicas[0], replicas[1])
            m = np.asarray(kept.numpy())
            np.testing.assert_array_equal(m, replicas[0])  # pruned stays pruned, none revived
            counts = np.bincount(kc.pruning.masks.pe_groups(m.shape, 4).ravel(), m.ravel())
            assert counts.max() - counts.min() <= 1


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_block_structure_under_mirrored_strategy(toy_data, mirrored):
    x, y = toy_data
    with mirrored.scope():
        model = kc.make_prunable(mlp())
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = kc.MagnitudePruning(0.5, end_step=8, frequency=2, structure="1x4")
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    for wrapper in kc.pruning_wrappers(model):
        masks = _replica_values(wrapper.masks[0])
        np.testing.assert_array_equal(masks[0], masks[1])
        runs = masks[0][: masks[0].shape[0] // 4 * 4].reshape(-1, 4, masks[0].shape[1]).sum(1)
        assert np.all((runs == 0) | (runs == 4))
        assert (runs == 0).mean() == pytest.approx(0.5, abs=0.1)


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_attention_under_mirrored_strategy_matches_one_device(mirrored, tf):
    """MultiHeadAttention's wrappers build from two shapes: also per replica, the same masks."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(128, 6, 8)).astype("float32"), rng.integers(0, 2, 128)

    def trained(strategy):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            tokens = keras.Input((6, 8))
            attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(tokens, tokens)
            logits = keras.layers.Dense(2)(keras.layers.Flatten()(attended))
            model = kc.make_prunable(keras.Model(tokens, logits))
            model.compile(keras.optimizers.SGD(0.05),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
        model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False,
                  callbacks=[kc.MagnitudePruning(0.7, end_step=6, frequency=2)])  # fmt: skip
        return [_replica_values(m) for w in kc.pruning_wrappers(model) for m in w.masks]

    one, two = trained(tf.distribute.get_strategy()), trained(mirrored)
    assert len(one) == 5  # query, key, value, output projections and the Dense
    for single, replicas in zip(one, two):
        np.testing.assert_array_equal(replicas[0], replicas[1])
        np.testing.assert_array_equal(single[0], replicas[0])
        assert (~single[0]).mean() == pytest.approx(0.7, abs=0.05)
