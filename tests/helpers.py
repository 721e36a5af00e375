"""Small models and synthetic files shared by the tests (fixtures live in conftest.py)."""

import shutil
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
C_SOURCE = ROOT / "tflite_export" / "c"
JAVA_SOURCE = ROOT / "tflite_export" / "java"
GCC = shutil.which("gcc")


def mlp(name="mlp"):
    """A 12-32-16-2 ReLU MLP named fc1, fc2, out."""
    return keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(32, activation="relu", name="fc1"),
            keras.layers.Dense(16, activation="relu", name="fc2"),
            keras.layers.Dense(2, name="out"),
        ],
        name=name,
    )


def toy_xy(n=256, seed=0):
    """Inputs for ``mlp`` and labels a small model learns: the sign of three features' sum."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12)).astype("float32")
    return x, (x[:, :3].sum(axis=1) > 0).astype("int32")


def synthetic_model_bytes(seed=0):
    """A fake ``.tflite``: bytes around five cut tensors of every kind the sidecar codes.

    The fifth is a per-channel int8 kernel (24 output channels, each with one of four tables of
    7 values: coded with shared per-channel tables); repeated names make the skeleton worth
    DEFLATE-coding.

    Returns ``(model, cuts)`` with ``cuts`` as ``sidecar.split`` takes them.
    """
    rng = np.random.default_rng(seed)
    header = rng.integers(0, 256, 100, dtype=np.uint8).tobytes()
    sparse = np.where(rng.random(4000) < 0.1, rng.choice([-0.5, 0.25, 1.5, -0.0], 4000), 0.0)
    dense_shared = rng.choice(np.float32([0.1, 0.2, -0.3]), size=3000)
    unshared = rng.normal(size=500).astype(np.float32)  # does not gain: stays in the skeleton
    int8 = np.where(rng.random(2000) < 0.2, rng.integers(-127, 128, 2000), 0).astype(np.int8)
    # Four tables of 7 values, as channels quantized with four scales: 6 channels each.
    books = np.sort(rng.choice(np.arange(-127, 128), (4, 7), replace=False), axis=1)[
        np.arange(24) % 4
    ]
    channel = np.take_along_axis(books, rng.integers(0, 7, (24, 300)), 1).astype(np.int8)
    channel[rng.random(channel.shape) < 0.7] = 0
    names = b"".join(b"model/block_%d/conv;model/block_%d/bn\x00\x00" % (i, i) for i in range(60))
    parts = [header, sparse.astype(np.float32).tobytes(), b"\x07" * 12, dense_shared.tobytes(),
             unshared.tobytes(), int8.tobytes(), names, channel.tobytes(), b"tail"]  # fmt: skip
    offsets = np.cumsum([0] + [len(p) for p in parts])
    cuts = [(int(offsets[1]), 16000, 4), (int(offsets[3]), 12000, 4), (int(offsets[4]), 2000, 4),
            (int(offsets[5]), 2000, 1),
            (int(offsets[7]), channel.size, 1, channel.shape)]  # fmt: skip
    return b"".join(parts), cuts


def scaled_copy_model(seed=0):
    """A fake ``.tflite`` whose float32 vectors include others times a factor (format v5).

    As a per-channel int8 model stores a layer's bias scales: its kernel scales times the
    input scale. The factors make the decoders round ties (1.5, 0.75, 3: products of 25
    significant bits) and reach both ends of the normal range (products in ``[2**-126,
    2**-125)`` and ``[2**127, 2**128)``); zeros stay zeros; a coded tensor between a source
    and its copy makes skeleton and model distances differ, and one vector is one element off
    its product (no copy).

    Returns ``(model, cuts, links)`` as ``sidecar.split`` takes them.
    """
    from keras_compress.deploy.sidecar import scaled_copy

    rng = np.random.default_rng(seed)
    parts, links = [rng.integers(0, 256, 40, dtype=np.uint8).tobytes()], []
    cuts = []
    at = len(parts[0])
    specs = [(1.5, -20, 20), (0.75, -20, 20), (3.0, -20, 20), (2.0**-100, -26, -26),
             (2.0**100, 27, 27), (float(rng.uniform(1e-3, 1e-2)), -8, 8), (1.25, 0, 4)]  # fmt: skip
    for i, (factor, low, high) in enumerate(specs):
        n = int(rng.integers(12, 400))
        source = rng.uniform(1, 2, n) * 2.0 ** rng.integers(low, high + 1, n)
        source = np.where(rng.random(n) < 0.1, 0, source).astype(np.float32)
        bits = int(np.float32(factor).view(np.uint32))
        target = bytearray(scaled_copy(source.tobytes(), bits))
        if i == len(specs) - 1:
            target[4:8] = np.float32(7).tobytes()  # no longer the product
        between = [bytes(int(rng.integers(0, 200)))]
        if i == 2:  # a coded tensor between source and copy
            between.append(rng.choice(np.float32([0, 0, 0.5, -0.25]), 600).tobytes())
            cuts.append((at + source.nbytes + len(between[0]), 2400, 4))
        links.append((at + source.nbytes + sum(map(len, between)), at, source.nbytes, bits))
        for part in (source.tobytes(), *between, bytes(target)):
            parts.append(part)
            at += len(part)
    return b"".join(parts) + b"tail", cuts, links


def far_match_model() -> bytes:
    """32,767 random bytes repeated once: each byte of the copy matches 32,767 bytes back.

    zlib's encoder stops at 32,506 (its skeleton stays about 64 KB); zopfli's reaches it
    (about 33 KB), DEFLATE allows 32,768: a decoder with a window short of 32 KB fails here.
    """
    block = np.random.default_rng(7).integers(0, 256, 32767, np.uint8).tobytes()
    return block + block


def build_c(tmp_path_factory, name, flags, sources=("kcz_decode.c", "kcz_cli.c")):
    """Compile the C decoder (and the CLI) with gcc, warnings as errors; skip without gcc."""
    if GCC is None:
        pytest.skip("gcc is not installed (apt-get install gcc)")
    out = tmp_path_factory.mktemp("c") / name
    cmd = [GCC, "-std=c99", "-Wall", "-Wextra", "-Werror", *flags, "-o", str(out),
           *(str(C_SOURCE / s) for s in sources)]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out
