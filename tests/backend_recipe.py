"""Prune, share and fine-tune the test MLP on whatever backend ``KERAS_BACKEND`` names.

Run as ``python tests/backend_recipe.py OUT_DIR`` (by ``tests/test_backends.py``, in a process
of another backend); writes ``masks.npz`` (the masks computed from the starting weights),
``model.keras`` (the shared model) and ``weights.npz`` (its stripped weights).
"""

import sys
from pathlib import Path

import keras
import numpy as np
from helpers import mlp, toy_xy

import keras_compress as kc


def recipe(out: Path) -> None:
    """The same steps, from the same numpy-drawn weights, on the current backend."""
    x, y = toy_xy(256)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = kc.make_prunable(kc.examples.numpy_start(mlp()))
    model.compile(keras.optimizers.SGD(0.0), loss)  # masks from the starting weights
    model.fit(x[:32], y[:32], batch_size=32, verbose=0,
              callbacks=[kc.MagnitudePruning(0.75, schedule="constant")])  # fmt: skip
    masks = {
        w.layer.name: keras.ops.convert_to_numpy(w.masks[0]) for w in kc.pruning_wrappers(model)
    }
    np.savez(out / "masks.npz", **masks)
    model.compile(keras.optimizers.Adam(0.01), loss)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False,
              callbacks=[kc.MagnitudePruning(0.75, schedule="constant")])  # fmt: skip
    shared = kc.share_weights(model, bits=3)
    shared.compile(keras.optimizers.Adam(0.003), loss)
    shared.fit(x, y, batch_size=32, epochs=1, verbose=0, shuffle=False)
    shared.save(out / "model.keras")
    np.savez(out / "weights.npz", *kc.strip(shared).get_weights())


if __name__ == "__main__":
    recipe(Path(sys.argv[1]))
