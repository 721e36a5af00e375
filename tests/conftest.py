"""Fixtures shared by the test modules; plain helpers are in helpers.py."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from helpers import build_c, mlp, toy_xy  # noqa: E402

import keras_compress as kc  # noqa: E402

# Two logical CPU devices for the tf.distribute tests; must happen before TF starts its runtime.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(_cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield
    # Fresh layer names per test; free_memory=False skips a full gc.collect(), 0.2 s a test.
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(scope="session")
def mirrored():
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
@pytest.fixture(scope="session", params=["-O2", "-Os", "-O2 -DKCZ_LUT_BITS=0"])
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
