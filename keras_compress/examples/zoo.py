"""Reference models used by the examples, tests and benchmarks (plain Keras 3 models)."""

from __future__ import annotations

import keras
import numpy as np


def lenet_300_100(input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """LeNet-300-100: a 784-300-100-10 fully connected network (LeCun et al. 1998).

    Han et al. 2015 and Deep Compression prune it by about 92%; it has 266,610 parameters
    on 28x28 inputs.

    Args:
        input_shape: shape of one input image; flattened before the first Dense layer.
        num_classes: number of output classes.

    Returns:
        An uncompiled ``keras.Sequential`` that outputs logits.

    Example:
        >>> model = lenet_300_100()
        >>> model.count_params()
        266610
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(300, activation="relu", name="fc1"),
            keras.layers.Dense(100, activation="relu", name="fc2"),
            keras.layers.Dense(num_classes, name="fc3"),
        ],
        name="lenet_300_100",
    )


def lenet5(input_shape: tuple[int, ...] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """The Caffe LeNet-5: conv20 5x5 - maxpool - conv50 5x5 - maxpool - fc500 - fc10.

    This is Caffe's ``lenet_train_test.prototxt`` (the model Han et al. and Deep Compression
    call LeNet-5): 'valid' convolutions without activation, 2x2 max pooling with stride 2,
    and a ReLU only after the 500-unit layer. 431,080 parameters on 28x28 inputs.

    Args:
        input_shape: shape of one input image (height, width, channels).
        num_classes: number of output classes.

    Returns:
        An uncompiled ``keras.Sequential`` that outputs logits.

    Example:
        >>> model = lenet5()
        >>> model.count_params()
        431080
    """
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(20, 5, name="conv1"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            keras.layers.Conv2D(50, 5, name="conv2"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(500, activation="relu", name="fc1"),
            keras.layers.Dense(num_classes, name="fc2"),
        ],
        name="lenet5",
    )


def numpy_start(model: keras.Model, seed: int = 0) -> keras.Model:
    """Set ``model``'s weights from numpy, in place: the same start on every Keras backend.

    Each backend's initializers draw different numbers from the same seed, so comparing
    backends needs a start drawn outside them: Glorot-uniform for every weight of rank >= 2
    (fans from the last two axes, times the receptive field), zeros for the rest.

    Example:
        >>> kernel, bias = numpy_start(lenet_300_100()).get_weights()[:2]
        >>> bool(abs(kernel).max() <= np.sqrt(6 / (784 + 300))), bool((bias == 0).all())
        (True, True)
        >>> bool((numpy_start(lenet_300_100()).get_weights()[0] == kernel).all())
        True
    """
    rng = np.random.default_rng(seed)
    values = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if len(shape) >= 2:
            receptive = int(np.prod(shape[:-2]))
            limit = np.sqrt(6.0 / ((shape[-2] + shape[-1]) * receptive))
            values.append(rng.uniform(-limit, limit, shape).astype(variable.dtype))
        else:
            values.append(np.zeros(shape, variable.dtype))
    model.set_weights(values)
    return model
