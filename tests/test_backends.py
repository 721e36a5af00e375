"""Keras 3's backends: the same pruning and sharing on TensorFlow, JAX and PyTorch.

CI runs this module (with every ``backends``-marked test) under each backend
(``tests/backends.sh``). The cross-backend test runs ``backend_recipe.py`` with the Python of
``.venv-jax`` / ``.venv-torch`` (or ``KC_JAX_PYTHON`` / ``KC_TORCH_PYTHON``).
"""

import importlib.util
import os
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import mlp, toy_xy

import keras_compress as kc

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
HERE = Path(__file__).parent


class ZerosChecker(keras.callbacks.Callback):
    """After every step: each pruned weight is +0.0 (never -0.0) in the model's variables."""

    def __init__(self):
        super().__init__()
        self.checked = 0

    def on_train_batch_end(self, batch, logs=None):
        for wrapper in kc.pruning_wrappers(self.model):  # self.model syncs JAX's state
            for variable, mask in zip(wrapper.compressed_variables, wrapper.masks):
                w = keras.ops.convert_to_numpy(variable)
                pruned = ~keras.ops.convert_to_numpy(mask)
                assert np.all(w[pruned] == 0) and not np.any(np.signbit(w[pruned]))
                self.checked += int(pruned.sum())


@pytest.mark.parametrize(
    "optimizer",
    [
        pytest.param(lambda: keras.optimizers.Adam(0.01), id="adam"),
        pytest.param(
            lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),
            id="adamw",
            marks=pytest.mark.slow,
        ),  # fmt: skip
        pytest.param(
            lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
            id="sgd-nesterov",
            marks=pytest.mark.slow,
        ),  # fmt: skip
        pytest.param(
            lambda: keras.optimizers.RMSprop(0.01, momentum=0.5),
            id="rmsprop",
            marks=pytest.mark.slow,
        ),  # fmt: skip
        pytest.param(lambda: keras.optimizers.Lion(0.001), id="lion", marks=pytest.mark.slow),
    ],
)
def test_pruned_weights_stay_exactly_zero_after_every_step(toy_data, optimizer):
    # Under JAX the optimizer step cannot read the masks: the masked forward pass (zero
    # gradients) and the callback's zeroed optimizer slots keep pruned weights at +0.0.
    x, y = toy_data
    model = kc.make_prunable(mlp())
    model.compile(optimizer(), LOSS)
    checker = ZerosChecker()
    pruning = kc.MagnitudePruning(0.8, end_step=20, frequency=5)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[pruning, checker])
    assert kc.sparsity(model)["total"] == pytest.approx(0.8, abs=0.01)
    assert checker.checked > 0


def test_the_mask_constraint_overwrites_only_the_variable_the_optimizer_hands_it():
    """Called by the optimizer on its variable it may work in place (PyTorch does); called on
    anything else (a tensor, a variable with a constraint of its own) it leaves it as it was."""
    from keras_compress.pruning.wrapper import _MaskConstraint

    mask = keras.Variable([True, False, True, False], dtype="bool", trainable=False)
    start = np.float32([1.5, -2.0, -3.0, 4.0])
    expected = np.float32([1.5, 0.0, -3.0, 0.0])
    tensor = keras.ops.convert_to_tensor(start)
    for constraint, given in [
        (_MaskConstraint(mask), tensor),
        (_MaskConstraint(mask, keras.constraints.MaxNorm(100.0)), keras.Variable(start)),
    ]:
        out = keras.ops.convert_to_numpy(constraint(given))
        np.testing.assert_array_equal(out, expected)
        assert not np.any(np.signbit(out[1::2]))  # +0.0, never -0.0
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(given), start)
    variable = keras.Variable(start)
    given = keras.ops.convert_to_tensor(start)
    with keras.StatelessScope(state_mapping=[(variable, given)]):  # as stateless_apply runs it
        out = keras.ops.convert_to_numpy(_MaskConstraint(mask)(variable))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(given), start)
    variable.assign(_MaskConstraint(mask)(variable))  # what the optimizer does
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), expected)
    assert not np.any(np.signbit(keras.ops.convert_to_numpy(variable)[1::2]))


def test_weights_drawn_by_numpy_give_the_same_masks_and_codebooks_on_every_backend():
    # What each backend computes from the same numpy weights, against numpy itself.
    model = kc.make_prunable(kc.examples.numpy_start(mlp()))
    model.compile(keras.optimizers.SGD(0.0), LOSS)
    x, y = toy_xy(32)
    model.fit(x, y, batch_size=32, verbose=0,
              callbacks=[kc.MagnitudePruning(0.75, schedule="constant")])  # fmt: skip
    for wrapper in kc.pruning_wrappers(model):
        w = keras.ops.convert_to_numpy(wrapper.layer.kernel)
        mask = keras.ops.convert_to_numpy(wrapper.masks[0])
        start = kc.examples.numpy_start(mlp()).get_layer(wrapper.layer.name).kernel
        kept = np.abs(keras.ops.convert_to_numpy(start))
        threshold = np.sort(kept.ravel())[round(0.75 * kept.size) - 1]
        np.testing.assert_array_equal(mask, kept > threshold)
        assert np.all(w[~mask] == 0)
    shared = kc.share_weights(model, bits=2)
    state = [keras.ops.convert_to_numpy(c) for c in shared.get_layer("shared_fc1").centroids]
    values = keras.ops.convert_to_numpy(kc.strip(shared).get_layer("fc1").kernel)
    assert set(np.unique(values)) <= {0.0, *state[0].tolist()}


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None, reason="runs where TensorFlow is absent"
)
def test_export_without_tensorflow_says_what_to_install_and_how_to_export():
    with pytest.raises(ImportError, match="needs TensorFlow and LiteRT .*docs/backends.md"):
        kc.export  # noqa: B018 (the lazy attribute's import is what is tested)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="keras.distribution under JAX")
def test_data_parallel_under_jax_gives_the_masks_and_codebooks_of_one_device():
    if len(keras.distribution.list_devices("cpu")) < 2:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=2 (conftest.py)")
    x, y = toy_xy(256)

    def run(distribution):
        keras.distribution.set_distribution(distribution)
        try:
            model = kc.make_prunable(kc.examples.numpy_start(mlp()))
            model.compile(keras.optimizers.Adam(0.01), LOSS)
            model.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False,
                      callbacks=[kc.MagnitudePruning(0.75, end_step=12, frequency=4)])  # fmt: skip
            masks = [w.masks[0].value for w in kc.pruning_wrappers(model)]
            shared = kc.share_weights(model, bits=3)
            codebooks = [
                keras.ops.convert_to_numpy(c) for c in shared.get_layer("shared_fc1").centroids
            ]
            shared.compile(keras.optimizers.Adam(0.003), LOSS)
            shared.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
            tuned = keras.ops.convert_to_numpy(shared.get_layer("shared_fc1").centroids[0])
            return masks, codebooks, tuned
        finally:
            keras.distribution.set_distribution(None)

    one = run(None)
    two = run(keras.distribution.DataParallel(devices=keras.distribution.list_devices("cpu")))
    for single, parallel in zip(one[0], two[0]):
        shards = [np.asarray(s.data) for s in parallel.addressable_shards]
        assert len(shards) == 2  # replicated on both devices, identical
        np.testing.assert_array_equal(shards[0], shards[1])
        np.testing.assert_array_equal(np.asarray(single), shards[0])
    # Training summed the two halves' gradients in another order, so the weights, their
    # cluster means and the fine-tuned centroids equal one device's to rounding.
    for single, parallel in zip(one[1], two[1]):
        np.testing.assert_allclose(single, parallel, atol=1e-6)
    np.testing.assert_allclose(one[2], two[2], atol=1e-6)


def _other_backends():
    found = []
    for backend in ("jax", "torch"):
        venv = HERE.parent / f".venv-{backend}" / "bin" / "python"
        python = os.environ.get(f"KC_{backend.upper()}_PYTHON") or (venv.exists() and str(venv))
        reason = f"no {backend} Python: run `bash tests/backends.sh setup` (or set KC_*_PYTHON)"
        found.append(
            pytest.param(backend, python, marks=pytest.mark.skipif(not python, reason=reason))
        )
    return found


@pytest.mark.slow  # another backend's process and two exports: 15 s
@pytest.mark.parametrize(("backend", "python"), _other_backends())
def test_a_model_compressed_on_another_backend_exports_the_same_sidecar(
    tmp_path, backend, python, tf
):
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(HERE)}
    subprocess.run([python, str(HERE / "backend_recipe.py"), str(tmp_path)], env=env,
                   check=True, timeout=600)  # fmt: skip
    # Its saved model exports here byte for byte as its weights loaded into a plain model
    # (compile=False: a PyTorch model's optimizer does not load on TensorFlow).
    loaded = keras.models.load_model(tmp_path / "model.keras", compile=False)
    plain = mlp()
    plain.set_weights(list(np.load(tmp_path / "weights.npz").values()))
    kc.export(loaded, tmp_path / "from_keras")
    kc.export(plain, tmp_path / "from_weights")
    for suffix in (".kcz", ".skeleton", ".tflite"):
        a = (tmp_path / f"from_keras{suffix}").read_bytes()
        assert a == (tmp_path / f"from_weights{suffix}").read_bytes()
    # The masks the other backend computed from the starting weights are TensorFlow's.
    from backend_recipe import recipe

    (tmp_path / "tf").mkdir()
    recipe(tmp_path / "tf")
    theirs, ours = np.load(tmp_path / "masks.npz"), np.load(tmp_path / "tf" / "masks.npz")
    for name in ours.files:
        np.testing.assert_array_equal(theirs[name], ours[name])
    assert kc.sparsity(plain)["total"] == pytest.approx(0.75, abs=0.01)
