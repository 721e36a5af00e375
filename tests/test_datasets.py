import gzip

import numpy as np
import pytest

from keras_compress.examples.datasets import fashion_mnist, read_idx

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


def test_fashion_mnist_loads_debian_package_files(fashion):
    (x_train, y_train), (x_test, y_test) = fashion
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert set(np.unique(y_test)) == set(range(10))
    assert np.bincount(y_train).tolist() == [6000] * 10


def test_missing_folder_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(tmp_path)


def test_idx_round_trip_and_truncation_names_offset(tmp_path):
    data = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    header = bytes([0, 0, 0x08, 3]) + np.array([2, 3, 4], ">u4").tobytes()
    path = tmp_path / "a-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(header + data.tobytes()))
    np.testing.assert_array_equal(read_idx(path), data)
    bad = tmp_path / "b-idx3-ubyte"
    bad.write_bytes(header + data.tobytes()[:-1])
    with pytest.raises(ValueError, match="byte offset 4"):
        read_idx(bad)
    worse = tmp_path / "c-idx3-ubyte"
    worse.write_bytes(b"\x01\x02")
    with pytest.raises(ValueError, match="bad magic at byte offset 0"):
        read_idx(worse)
