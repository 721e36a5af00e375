"""Fixtures shared by the test modules; plain helpers are in helpers.py."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Two CPU devices for keras.distribution under JAX; must happen before JAX starts.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import build_c, mlp, toy_xy  # noqa: E402

import keras_compress as kc  # noqa: E402

BACKEND = keras.backend.backend()

if BACKEND == "tensorflow":
    import tensorflow as tf

    # Two logical CPU devices for the tf.distribute tests, before TF starts its runtime.
    _cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
    )


def pytest_ignore_collect(collection_path, config):
    """On JAX or PyTorch, test modules with no ``backends`` mark are not even imported."""
    if BACKEND == "tensorflow" or not collection_path.name.startswith("test_"):
        return None
    return "pytest.mark.backends" not in collection_path.read_text()


def pytest_collection_modifyitems(config, items):
    """On JAX or PyTorch, tests not marked ``backends`` need TensorFlow: skip them."""
    if BACKEND == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"needs the TensorFlow backend (running on {BACKEND})")
    for item in items:
        if "backends" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    # Fresh layer names per test; free_memory=False skips a full gc.collect(), 0.2 s a test.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, for tests of a ``backends`` module that need it; a skip on other backends."""
    if BACKEND != "tensorflow":
        pytest.skip(f"needs the TensorFlow backend (running on {BACKEND})")
    import tensorflow

    return tensorflow


@pytest.fixture(scope="session")
def mirrored(tf):
    # One strategy per process: several MirroredStrategy objects in one process can reuse
    # collective instance keys and abort with shape mismatches.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    return strategy


@pytest.fixture
def toy_data():
    return toy_xy()


@pytest.fixture(scope="session")
def fashion():
    """Fashion-MNIST from Debian's package, or a skip saying how to install it."""
    try:
        return kc.examples.fashion_mnist()
    except FileNotFoundError as err:
        pytest.skip(f"Fashion-MNIST is not installed ({err})")


# -O2 builds decode through lookup tables; -Os (microcontroller) builds bit by bit, and so does
# an -O2 build told so with KCZ_LUT_BITS=0 (what IAR/Keil/MSVC size builds must pass).
# The -Os build keeps a 32 KB DEFLATE window here (its default is 1 KB) to decode kc.export's
# default files; tests/test_c_decoder.py checks the 1 KB default on its own.
@pytest.fixture(scope="session", params=["-O2", "-Os -DKCZ_WINDOW_BITS=15", "-O2 -DKCZ_LUT_BITS=0"])
def cli(tmp_path_factory, request):
    """The C decoder's command-line program in a fast and two bit-by-bit builds."""
    return build_c(tmp_path_factory, "kcz_cli", request.param.split())


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """A pruned (80%) and shared (3 bits) MLP exported with kc.export: the path prefix."""
    x, y = toy_xy()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = kc.make_prunable(mlp())
    model.compile("adam", loss)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[kc.MagnitudePruning(0.8, end_step=10)])
    shared = kc.share_weights(model, bits={"fc.*": 3})
    path = tmp_path_factory.mktemp("export") / "mlp"
    kc.export(shared, path)
    return path


@pytest.fixture(scope="session")
def exported_bn(tmp_path_factory):
    """A small BatchNorm CNN, pruned 70%, folded, shared (4 bits), exported in full int8.

    Its per-channel int8 kernels, its bias scales (scaled copies) and its skeleton are what
    format versions 3 to 5 code.
    """
    keras.utils.set_random_seed(3)
    layers = keras.layers
    inputs = keras.Input((12, 12, 3))
    # Wide enough that cutting its kernels beats DEFLATE of the whole file (at 32 and 48
    # channels it does not, and kc.export then cuts nothing).
    h = layers.Conv2D(64, 3, use_bias=False, name="conv")(inputs)
    h = layers.ReLU()(layers.BatchNormalization(name="bn")(h))
    h = layers.DepthwiseConv2D(3, name="dw")(h)
    h = layers.ReLU(6.0)(layers.BatchNormalization(name="dw_bn")(h))
    h = layers.Conv2D(128, 1, name="pw")(h)
    h = layers.GlobalAveragePooling2D()(layers.BatchNormalization(name="pw_bn")(h))
    model = keras.Model(inputs, layers.Dense(4, name="fc")(h))
    rng = np.random.default_rng(0)
    x = rng.random((64, 12, 12, 3)).astype("float32")
    model = kc.make_prunable(model)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, rng.integers(0, 4, 64), epochs=2, batch_size=16, verbose=0,
              callbacks=[kc.MagnitudePruning(0.7, schedule="constant")])  # fmt: skip
    shared = kc.share_weights(kc.fold_batchnorm(kc.strip(model)), bits=4)
    path = tmp_path_factory.mktemp("export_bn") / "bn_cnn"
    kc.export(shared, path, "int8", lambda: (x[i : i + 1] for i in range(16)))
    return path
