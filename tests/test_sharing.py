"""Weight sharing with centroid fine-tuning inside fit (Deep Compression, section 3)."""

import keras
import numpy as np
import pytest
from helpers import mlp

import keras_compress as kc
from keras_compress.sharing.wrapper import _lookup

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _trained(toy_data, prune=None):
    x, y = toy_data
    model = mlp()
    model.compile("adam", LOSS)
    model.fit(x, y, epochs=3, verbose=0)
    if prune:
        model = kc.make_prunable(model)
        model.compile("adam", LOSS)
        model.fit(x, y, epochs=1, verbose=0, callbacks=[kc.MagnitudePruning(prune, "constant")])
    return model


def _distinct(model):
    return {r["weight"]: r["distinct"] for r in kc.weight_rows(model)}


@pytest.mark.slow
@pytest.mark.parametrize("prune", [None, 0.7])
def test_at_most_two_to_the_bits_values_after_fine_tuning(toy_data, prune):
    x, y = toy_data
    model = _trained(toy_data, prune)
    zeros_before = {k: v for k, v in kc.sparsity(model).items()}
    shared = kc.share_weights(model, bits={"fc1": 3, "dense": 2})
    shared.compile(keras.optimizers.Adam(1e-2), LOSS)
    centroids_before = [c.numpy().copy() for w in _sharing(shared) for c in w.centroids]
    shared.fit(x, y, epochs=2, verbose=0)
    distinct = _distinct(shared)
    assert distinct["fc1/kernel"] <= 8 and distinct["fc2/kernel"] <= 4
    assert distinct["out/kernel"] <= 4
    moved = [c.numpy() for w in _sharing(shared) for c in w.centroids]
    assert any(not np.allclose(a, b) for a, b in zip(centroids_before, moved))
    assert kc.sparsity(shared) == pytest.approx(zeros_before)  # zeros stay zero
    plain = kc.strip(shared)
    np.testing.assert_allclose(plain.predict(x, verbose=0), shared.predict(x, verbose=0), atol=1e-5)
    for w in _sharing(shared):
        for value, centroids in zip(w.shared_weights(), w.centroids):
            assert set(np.unique(value)) <= set(centroids.numpy()) | {0.0}


def _sharing(model):
    return [layer for layer in model.layers if isinstance(layer, kc.WeightSharingWrapper)]


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_fine_tuning_lowers_the_loss_on_a_fixed_batch(toy_data):
    x, y = toy_data
    shared = kc.share_weights(_trained(toy_data), bits=2)
    shared.compile(keras.optimizers.SGD(0.05), LOSS)
    before = shared.evaluate(x, y, verbose=0)
    shared.fit(x, y, batch_size=256, epochs=20, verbose=0)
    assert shared.evaluate(x, y, verbose=0) < before


@pytest.mark.parametrize(
    "rule,prune", [("sum", None), ("mean", None), pytest.param("sum", 0.6, marks=pytest.mark.slow)]
)
def test_centroid_gradient_is_the_sum_or_mean_of_member_gradients(tf, toy_data, rule, prune):
    x, y = toy_data
    shared = kc.share_weights(_trained(toy_data, prune), bits=3, gradient=rule)
    wrapper = _sharing(shared)[0]
    # Where at least half the weights are zeros, share_weights records where the non-zeros are,
    # and only their gradients are summed.
    if prune:
        np.testing.assert_array_equal(
            wrapper.positions[0].numpy(), np.flatnonzero(wrapper.nonzero[0].numpy())
        )
    else:
        assert wrapper.positions[0] is None
    with tf.GradientTape() as tape:
        loss = LOSS(y, shared(x))
    grad_c = tape.gradient(loss, wrapper.centroids[0].value).numpy()
    # Oracle: the gradient w.r.t. the dense kernel of the equivalent plain model.
    plain = kc.strip(shared)
    kernel = plain.get_layer("fc1").kernel
    with tf.GradientTape() as tape:
        loss = LOSS(y, plain(x))
    grad_w = tape.gradient(loss, kernel.value).numpy()
    idx, nz = wrapper.indices[0].numpy(), wrapper.nonzero[0].numpy()
    expected = np.bincount(idx[nz], weights=grad_w[nz], minlength=8)
    if rule == "mean":
        expected /= np.maximum(np.bincount(idx[nz], minlength=8), 1)
    np.testing.assert_allclose(grad_c, expected, rtol=1e-4, atol=1e-7)


def test_lookup_gradient_is_the_same_with_or_without_positions(tf):
    rng = np.random.default_rng(0)
    centroids = tf.Variable(rng.standard_normal(8).astype("float32"))
    indices = rng.integers(0, 8, (30, 20)).astype("int32")
    nonzero = rng.random((30, 20)) < 0.3
    upstream = rng.standard_normal((30, 20)).astype("float32")
    grads = []
    for positions in (None, np.flatnonzero(nonzero).astype("int32")):
        with tf.GradientTape() as tape:
            value = _lookup(centroids, indices, nonzero, positions)
            loss = tf.reduce_sum(value * upstream)
        np.testing.assert_array_equal(
            value.numpy(), np.where(nonzero, centroids.numpy()[indices], 0)
        )
        grads.append(tape.gradient(loss, centroids).numpy())
    expected = np.bincount(indices[nonzero], weights=upstream[nonzero], minlength=8)
    np.testing.assert_allclose(grads[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[1], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_assign_clusters_rejects_another_nonzero_count(toy_data):
    wrapper = _sharing(kc.share_weights(_trained(toy_data, 0.5), bits=2))[0]
    shape = wrapper.indices[0].shape
    with pytest.raises(
        ValueError, match=r"fc1/kernel has \d+ non-zeros, but the wrapper was built"
    ):
        wrapper.assign_clusters(0, np.zeros(3), np.zeros(shape), np.ones(shape, bool))
    with pytest.raises(ValueError, match="nonzero_counts has 2 entries for 1 shared weights"):
        kc.WeightSharingWrapper(keras.layers.Dense(2), 2, nonzero_counts=[1, 2]).build((None, 3))


@pytest.mark.slow
def test_save_load_keeps_codebooks_and_training_continues(toy_data, tmp_path):
    x, y = toy_data
    shared = kc.share_weights(_trained(toy_data, prune=0.5), bits=3)
    shared.compile("adam", LOSS)
    shared.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "shared.keras"
    shared.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), shared.predict(x, verbose=0))
    for a, b in zip(_sharing(shared), _sharing(loaded)):
        for ca, cb in zip(a.centroids, b.centroids):
            np.testing.assert_array_equal(ca.numpy(), cb.numpy())
    loaded.fit(x, y, epochs=1, verbose=0)
    assert max(_distinct(loaded).values()) <= 8


@pytest.mark.slow
def test_mirrored_strategy_keeps_replicas_identical(toy_data, mirrored):
    x, y = toy_data
    model = _trained(toy_data)
    strategy = mirrored
    with strategy.scope():
        shared = kc.share_weights(model, bits=3)
        shared.compile(keras.optimizers.Adam(1e-2), LOSS)
    shared.fit(x, y, batch_size=32, epochs=2, verbose=0)
    for wrapper in _sharing(shared):
        for c in wrapper.centroids:
            values = [v.numpy() for v in c.value.values]
            assert len(values) == 2
            np.testing.assert_array_equal(values[0], values[1])
    assert max(_distinct(shared).values()) <= 8


@pytest.mark.slow
def test_embedding_and_lstm_kernels_are_shared():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 50, size=(64, 7)).astype("int32")
    y = rng.integers(0, 2, size=64)
    model = keras.Sequential(
        [keras.Input((7,), dtype="int32"), keras.layers.Embedding(50, 8, name="emb"),
         keras.layers.LSTM(8, name="lstm"), keras.layers.Dense(2, name="out")]
    )  # fmt: skip
    shared = kc.share_weights(model, bits={"embedding": 2, "rnn": 3, "out": 4})
    shared.compile("adam", LOSS)
    shared.fit(x, y, epochs=1, verbose=0)
    distinct = _distinct(shared)
    assert distinct["emb/embeddings"] <= 4
    assert (
        distinct["lstm/lstm_cell/kernel"] <= 8 and distinct["lstm/lstm_cell/recurrent_kernel"] <= 8
    )
    assert distinct["out/kernel"] <= 16


@pytest.mark.parametrize(
    "quantizer",
    [pytest.param(q, marks=pytest.mark.slow) for q in ("hessian_kmeans", "uniform")] + ["ecsq"],
)
def test_other_quantizers_share_weights(toy_data, quantizer):
    x, y = toy_data
    model = _trained(toy_data)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, 256, 64)]
    hessian = kc.core.hessian.fisher_diagonal(model, batches, LOSS)
    shared = kc.share_weights(model, bits=3, quantizer=quantizer, hessian=hessian, lam=1e-4)
    assert max(_distinct(shared).values()) <= 8


def test_adam_second_moments_are_a_hessian_estimate(toy_data):
    model = _trained(toy_data)
    v = kc.core.hessian.adam_second_moments(model)
    assert set(v) == {"fc1/kernel", "fc2/kernel", "out/kernel"}
    assert all(np.all(a >= 0) and np.any(a > 0) for a in v.values())


def test_bad_input_is_rejected(toy_data):
    model = _trained(toy_data)
    with pytest.raises(ValueError, match="from 1 to 16"):
        kc.share_weights(model, bits=17)
    with pytest.raises(ValueError, match="from 1 to 16"):
        kc.share_weights(model, bits=0)
    with pytest.raises(ValueError, match="unknown quantizer"):
        kc.share_weights(model, quantizer="lloyd-max")
    with pytest.raises(ValueError, match="needs hessian"):
        kc.share_weights(model, quantizer="hessian_kmeans")
    functional = keras.Model(model.inputs, model.outputs)  # its layers include the input
    for m in (model, functional):
        with pytest.raises(
            ValueError, match="'conv' selects no layer; the model has: fc1, fc2, out$"
        ):
            kc.share_weights(m, bits={"conv": 4, "dense": 3})
    kernel, bias = model.get_layer("fc2").get_weights()
    kernel[0, :2] = [np.nan, np.inf]  # a diverged model
    model.get_layer("fc2").set_weights([kernel, bias])
    with pytest.raises(ValueError, match="fc2/kernel holds 2 NaN or infinite value"):
        kc.share_weights(model, bits=3)


@pytest.mark.slow
def test_a_tensor_with_fewer_values_than_clusters_keeps_them_exactly(toy_data):
    model = _trained(toy_data)
    out = model.get_layer("out")
    kernel = out.get_weights()[0]
    kernel[np.abs(kernel) < np.quantile(np.abs(kernel), 0.75)] = 0.0  # 8 of 32 left
    out.set_weights([kernel, out.get_weights()[1]])
    with pytest.warns(UserWarning, match=r"out/kernel \(8 values\)"):
        shared = kc.share_weights(model, bits=4)  # 15 clusters allowed beside the zero
    shared_kernel = kc.strip(shared).get_layer("out").get_weights()[0]
    np.testing.assert_array_equal(shared_kernel, kernel)  # every value kept, bit for bit
    assert _distinct(shared)["fc1/kernel"] <= 16


def test_a_kernel_constraint_is_said_not_to_act_on_shared_centroids(toy_data):
    # Sharing fine-tunes centroids, each shared across the kernel: a MaxNorm(0.5) Dense reached
    # column norms of 1.21 after two epochs, without a word.
    x, y = toy_data
    inputs = keras.Input((x.shape[1],))
    capped = keras.layers.Dense(8, kernel_constraint=keras.constraints.MaxNorm(0.5), name="fc")
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(capped(inputs)))
    with pytest.warns(UserWarning, match=r"constraints of fc/kernel do not act"):
        shared = kc.share_weights(model, bits=2)
    assert isinstance(kc.strip(shared).get_layer("fc").kernel_constraint, keras.constraints.MaxNorm)
