"""Shared by the Fashion-MNIST benchmarks: data, training settings, Han et al.'s pruning levels."""

from __future__ import annotations

import keras
import numpy as np

import keras_compress as kc

# Han et al. 2015, Tables 1 and 2: fraction of weights pruned per layer.
HAN_LEVELS = {
    "lenet_300_100": {"fc1": 0.92, "fc2": 0.91, "fc3": 0.74},
    "lenet5": {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81},
}
BATCH = 128
PRUNE_LR = 5e-4  # Adam's rate while pruning and retraining
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def data(quick: bool = False):
    """((x, y), (x_test, y_test)) as float32 images in [0, 1]; a subset when ``quick``."""
    (x, y), (xt, yt) = kc.examples.fashion_mnist()
    x, xt = x[..., None].astype("float32") / 255.0, xt[..., None].astype("float32") / 255.0
    if quick:
        return (x[:6000], y[:6000]), (xt[:2000], yt[:2000])
    return (x, y), (xt, yt)


def vgg_style() -> keras.Model:
    """Two VGG blocks (conv-BN-ReLU x2, max pooling) and a 256-unit ReLU layer, 28x28 inputs."""
    layers = keras.layers
    body = [keras.Input((28, 28, 1))]
    for block, filters in enumerate((32, 64), 1):
        for i in (1, 2):
            tag = f"{block}_{i}"
            body += [layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{tag}"),
                     layers.BatchNormalization(name=f"bn{tag}"),
                     layers.ReLU(name=f"relu{tag}")]  # fmt: skip
        body.append(layers.MaxPooling2D(2, name=f"pool{block}"))
    body += [layers.Flatten(name="flatten"), layers.Dense(256, "relu", name="fc1"),
             layers.Dropout(0.3), layers.Dense(10, name="fc2")]  # fmt: skip
    return keras.Sequential(body, name="vgg_style")


def compiled(model: keras.Model, lr: float) -> keras.Model:
    """``model`` compiled with Adam at ``lr``, the benchmarks' loss and accuracy."""
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    return model


def accuracy(model: keras.Model, x, y) -> float:
    """Test accuracy of the stripped (plain) model."""
    return float(compiled(kc.strip(model), 1e-3).evaluate(x, y, batch_size=1000, verbose=0)[1])


def overall_level(model: keras.Model, levels: dict) -> float:
    """The fraction of all of ``levels``' layers' kernel weights that ``levels`` prunes.

    Example: Han et al.'s LeNet-5 levels prune 91.6% of its 430,500 kernel weights.
    """
    sizes = {name: int(np.prod(model.get_layer(name).kernel.shape)) for name in levels}
    return sum(levels[n] * sizes[n] for n in levels) / sum(sizes.values())


def pruning_callback(
    levels: dict | float, schedule: kc.pruning.PruningSchedule | None = None, **options
) -> kc.MagnitudePruning:
    """``kc.MagnitudePruning`` to per-layer ``levels`` (a dict) or to one overall level.

    A float is the fraction of all kernel weights pruned, spread over the layers by LAMP
    (``criterion="lamp"``, Lee et al. 2021) instead of set by hand per layer. ``options`` go to
    the callback (``begin_step``, ``end_step``, ``frequency``) with the polynomial schedule
    when ``schedule`` is None.
    """
    kwargs = {"layer_targets": levels} if isinstance(levels, dict) else {"criterion": "lamp"}
    if schedule is not None:
        return kc.MagnitudePruning(schedule=schedule, **options, **kwargs)
    return kc.MagnitudePruning(top_level(levels), **options, **kwargs)


def top_level(levels: dict | float) -> float:
    """The highest level of per-layer ``levels``, or the one overall level."""
    return max(levels.values()) if isinstance(levels, dict) else float(levels)


def prune_to_han_levels(
    model: keras.Model, name: str, x, y, retrain: int, levels: dict | float | None = None
) -> keras.Model:
    """Han's iterative pruning: 3 one-epoch rounds to 50/80/100% of the levels, then retrain.

    ``levels`` (layer name -> fraction pruned) defaults to Han et al.'s for the model; a
    float is one overall level that LAMP allocates (``pruning_callback``).
    """
    steps = int(np.ceil(len(x) / BATCH))
    levels = HAN_LEVELS[name] if levels is None else levels
    rounds = kc.IterativeRounds([top_level(levels) * f for f in (0.5, 0.8, 1.0)], steps)
    pruned = compiled(kc.make_prunable(model), PRUNE_LR)
    callback = pruning_callback(levels, rounds)
    pruned.fit(x, y, batch_size=BATCH, epochs=3 + retrain, verbose=0, callbacks=[callback])
    return pruned


def prune_gradually(
    model: keras.Model,
    name: str,
    x,
    y,
    epochs: int = 5,
    ramp: int = 3,
    lam: float = 0.0,
    bits: dict | None = None,
    levels: dict | float | None = None,
) -> keras.Model:
    """Gradual pruning to Han et al.'s levels, optionally training for the rate from step 0.

    The schedule is tensorflow-model-optimization's (``tfmot_baseline.py``): from the first
    step the sparsity rises polynomially to each layer's level over ``ramp`` epochs, the
    masks are updated every 10 steps, and training goes on to ``epochs`` with the level held.
    With ``lam`` > 0, ``kc.rate_regularize(lam, bits)`` adds the estimated coded size to the
    loss in every one of those steps, so the weights that survive pruning settle on the grid
    the sharing step uses. Measured on LeNet-300-100 (``benchmarks/README.md``): better than
    adding the rate term only after Han's rounds, at fewer bytes. ``levels`` as in
    ``prune_to_han_levels`` (a float: one overall level allocated by LAMP).
    """
    steps = int(np.ceil(len(x) / BATCH))
    levels = HAN_LEVELS[name] if levels is None else levels
    pruned = kc.make_prunable(model)
    if lam:
        kc.rate_regularize(pruned, lam, bits=bits)
    callback = pruning_callback(levels, begin_step=0, end_step=ramp * steps, frequency=10)
    compiled(pruned, PRUNE_LR).fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0,
                                   callbacks=[callback])  # fmt: skip
    return pruned
