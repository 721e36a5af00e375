"""Offline loaders for the data sets the examples, tests and benchmarks use.

Nothing here downloads: Fashion-MNIST comes from Debian's ``dataset-fashion-mnist`` package.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEFAULT_FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"

# IDX type codes (http://yann.lecun.com/exdb/mnist/): the third byte of the magic number.
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    numpy has no IDX reader, and the format is a 4-byte magic, one big-endian uint32 per
    dimension and the raw data, so it is read here by hand with full bounds checks.

    Args:
        path: the ``.idx*-ubyte`` or ``.idx*-ubyte.gz`` file.

    Returns:
        The array with the dtype and shape the header declares.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the header is malformed or the data is shorter or longer than declared;
            the message names the file and the byte offset.

    Example:
        >>> labels = read_idx("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
        >>> labels.shape
        (10000,)
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(f"{path}: not an IDX file (bad magic at byte offset 0)")
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type 0x{code:02x} at byte offset 2")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header (need {header} bytes, got {len(raw)})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: IDX data size mismatch: header at byte offset 4 declares shape {shape} "
            f"({expected} bytes in all), file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def fashion_mnist(
    path: str | os.PathLike | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load Fashion-MNIST from local IDX files, shaped like ``keras.datasets.fashion_mnist``.

    Args:
        path: folder holding ``train-images-idx3-ubyte(.gz)`` and the three other files.
            Defaults to ``$KERAS_COMPRESS_FASHION_MNIST`` or Debian's
            ``/usr/share/datasets/fashion-mnist``.

    Returns:
        ``(x_train, y_train), (x_test, y_test)``: uint8 images of shape ``(n, 28, 28)`` and
        uint8 labels 0-9 (60000 train, 10000 test).

    Raises:
        FileNotFoundError: a file is missing; the message says how to install the data.
        ValueError: a file is malformed, or image and label counts disagree.

    Example:
        >>> (x_train, y_train), (x_test, y_test) = fashion_mnist()
        >>> x_train.shape, y_test.shape
        ((60000, 28, 28), (10000,))
    """
    folder = Path(
        path or os.environ.get("KERAS_COMPRESS_FASHION_MNIST", DEFAULT_FASHION_MNIST_PATH)
    )
    parts = []
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # fmt: skip
        candidates = [folder / f"{stem}.gz", folder / stem]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(
                f"Fashion-MNIST file {stem}(.gz) not found in {folder}. On Debian/Ubuntu install "
                "it with `apt-get install dataset-fashion-mnist`, or pass path= (or set "
                "KERAS_COMPRESS_FASHION_MNIST) to the folder holding the IDX files."
            )
        parts.append(read_idx(found))
    x_train, y_train, x_test, y_test = parts
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"Fashion-MNIST {split} split in {folder}: images {x.shape} and labels {y.shape} "
                "do not match"
            )
    return (x_train, y_train), (x_test, y_test)
