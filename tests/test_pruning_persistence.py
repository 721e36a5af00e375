"""Pruning state lives in the model: save/load, BackupAndRestore and strip keep it."""

import json
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from helpers import mlp

import keras_compress as kc

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


def _callback():
    return kc.MagnitudePruning(0.8, end_step=24, frequency=4)


def _compiled(model):
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _state(model):
    wrappers = kc.pruning_wrappers(model)
    masks = [m.numpy() for w in wrappers for m in w.masks]
    return int(wrappers[0].step.numpy()), masks


def test_save_load_mid_pruning_then_fit_continues(toy_data, tmp_path):
    x, y = toy_data
    model = _compiled(kc.make_prunable(mlp()))
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[_callback()])  # 16 steps
    step, masks = _state(model)
    assert step == 16 and 0.0 < kc.sparsity(model)["total"] < 0.8
    path = tmp_path / "pruning.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    loaded_step, loaded_masks = _state(loaded)
    assert loaded_step == 16
    # make_prunable lets only the first wrapper count steps; the flag survives the save.
    counting = [w.counts_steps for w in kc.pruning_wrappers(loaded)]
    assert counting == [True] + [False] * (len(counting) - 1)
    for a, b in zip(masks, loaded_masks):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    # The loaded optimizer state is used: the next fit continues the schedule at step 16.
    loaded.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[_callback()])
    final_step, final_masks = _state(loaded)
    assert final_step == 32
    for before, after in zip(masks, final_masks):
        assert not np.any(after & ~before)  # nothing pruned before grew back
    assert kc.sparsity(loaded)["total"] == pytest.approx(0.8, abs=2e-3)
    for wrapper in kc.pruning_wrappers(loaded):
        for var, mask in zip(wrapper.compressed_variables, wrapper.masks):
            assert np.all(var.numpy()[~mask.numpy()] == 0)


class Interrupt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_backup_and_restore_resumes_an_interrupted_pruning_run(toy_data, tmp_path):
    x, y = toy_data
    reference = _compiled(kc.make_prunable(mlp()))
    model = _compiled(kc.make_prunable(mlp()))
    model.set_weights(reference.get_weights())
    reference.fit(x, y, batch_size=32, epochs=4, verbose=0, shuffle=False, callbacks=[_callback()])
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        model.fit(x, y, batch_size=32, epochs=4, verbose=0, shuffle=False,
                  callbacks=[_callback(), backup, Interrupt(2)])  # fmt: skip
    assert _state(model)[0] == 16
    # A fresh process would rebuild the model: do the same here, then resume.
    resumed = _compiled(kc.make_prunable(mlp()))
    resumed.fit(x, y, batch_size=32, epochs=4, verbose=0, shuffle=False,
                callbacks=[_callback(), backup])  # fmt: skip
    step, masks = _state(resumed)
    ref_step, ref_masks = _state(reference)
    assert step == ref_step == 32
    for got, want in zip(masks, ref_masks):
        np.testing.assert_array_equal(got, want)
    for a, b in zip(resumed.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_strip_gives_a_plain_model_that_loads_without_keras_compress(toy_data, tmp_path):
    x, y = toy_data
    model = _compiled(kc.make_prunable(mlp()))
    model.fit(x, y, epochs=3, verbose=0, callbacks=[_callback()])
    plain = kc.strip(model)
    assert not any(isinstance(layer, kc.PruningWrapper) for layer in plain.layers)
    assert all(v.constraint is None for v in plain.trainable_variables)
    np.testing.assert_allclose(plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    assert kc.sparsity(plain)["total"] == pytest.approx(kc.sparsity(model)["total"])
    path = tmp_path / "plain.keras"
    plain.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "keras_compress" not in archive.read("config.json").decode()
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, json, numpy as np, keras\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "assert 'keras_compress' not in sys.modules\n"
        "k = m.get_layer('fc1').kernel.numpy()\n"
        "print(json.dumps({'zeros': float((k == 0).mean()),"
        " 'out': m.predict(np.load(sys.argv[2]), verbose=0).tolist()}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "x.npy")],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert got["zeros"] == pytest.approx(kc.sparsity(model)["fc1/kernel"])
    np.testing.assert_allclose(got["out"], plain.predict(x, verbose=0), atol=1e-5)


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_attention_wrappers_save_and_load(toy_data, tmp_path):
    """MultiHeadAttention builds from two shapes; wrapped, it must rebuild from the saved file."""
    x, y = toy_data
    tokens = keras.Input(x.shape[1:])
    sequence = keras.layers.Reshape((4, -1))(tokens)
    attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(sequence, sequence)
    logits = keras.layers.Dense(int(y.max()) + 1)(keras.layers.Flatten()(attended))
    model = _compiled(kc.make_prunable(keras.Model(tokens, logits)))
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[_callback()])
    shared = kc.share_weights(model, bits=2)
    for stage, wrapped in (("pruned", model), ("shared", shared)):
        path = tmp_path / f"{stage}.keras"
        wrapped.save(path)
        loaded = keras.models.load_model(path)
        np.testing.assert_array_equal(wrapped.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert {k for k in kc.sparsity(model) if k.startswith("mha/")} == {
        f"mha/{part}/kernel" for part in ("query", "key", "value", "attention_output")
    }
