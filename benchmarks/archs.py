"""The modern CNNs of ``benchmarks/modern.py``, built the same way in Keras 3 and legacy Keras.

Each builder takes the Keras module (``keras`` or ``tf_keras``) so that keras-compress and
tensorflow-model-optimization (``tfmot_baseline.py``, legacy Keras) train identical networks
whose weights are exchanged in ``get_weights`` order.
"""

from __future__ import annotations

INPUT = (32, 32, 3)  # Fashion-MNIST padded to 32x32, the gray channel repeated three times


def resnet20(keras, classes: int = 10):
    """He et al.'s CIFAR ResNet-20 (0.27 M weights).

    Three stages of three basic blocks (16, 32, 64 filters), BatchNorm after every
    convolution, 1x1 projection shortcuts where the shape changes.
    """
    layers = keras.layers
    inputs = keras.Input(INPUT)
    h = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv0")(inputs)
    h = layers.ReLU(name="relu0")(layers.BatchNormalization(name="bn0")(h))
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            name = f"s{stage}b{block}"
            stride = 2 if stage and not block else 1
            r = layers.Conv2D(filters, 3, stride, "same", use_bias=False, name=f"{name}_conv1")(h)
            r = layers.ReLU(name=f"{name}_relu1")(layers.BatchNormalization(name=f"{name}_bn1")(r))
            r = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(r)
            r = layers.BatchNormalization(name=f"{name}_bn2")(r)
            if stride != 1 or h.shape[-1] != filters:
                h = layers.Conv2D(filters, 1, stride, use_bias=False, name=f"{name}_proj")(h)
                h = layers.BatchNormalization(name=f"{name}_proj_bn")(h)
            h = layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([h, r]))
    h = layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.Model(inputs, layers.Dense(classes, name="logits")(h), name="resnet20")


def mobilenet_v2(keras, classes: int = 10, alpha: float = 0.35):
    """``keras.applications.MobileNetV2`` at 32x32 with logits (no softmax), random weights.

    BatchNorm momentum 0.9 instead of the application's 0.999, whose moving statistics lag
    behind the weights for thousands of steps: more than this benchmark trains.
    """
    model = keras.applications.MobileNetV2(
        input_shape=INPUT, alpha=alpha, weights=None, classes=classes, classifier_activation=None
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


BUILDERS = {"resnet20": resnet20, "mobilenet_v2": mobilenet_v2}
