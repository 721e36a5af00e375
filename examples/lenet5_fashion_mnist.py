"""Deep Compression end to end on LeNet-5 / Fashion-MNIST, the way a user runs it.

Train, prune (Han et al.'s per-layer levels, prune/retrain rounds), share weights (conv 8
bits, dense 5 bits, k-means with linear init), fine-tune the centroids, export the TFLite
model with its sidecar, decode skeleton + sidecar again with the C decoder (the Python one if
gcc is missing), check the decoded model's accuracy in the TFLite interpreter, and print the
report. Writes ``out/lenet5.*`` and ``out/lenet5.png``: each layer's weight histogram with its
centroids (as in Deep Compression's figure) and the size after each stage.

    python examples/lenet5_fashion_mnist.py [--epochs 4] [--out out]
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import subprocess
import tempfile
from pathlib import Path

import keras
import numpy as np

import keras_compress as kc
from keras_compress.deploy import convert

HAN_LEVELS = {"conv1": 0.34, "conv2": 0.88, "fc1": 0.92, "fc2": 0.81}
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
C_SOURCE = Path(__file__).resolve().parent.parent / "tflite_export" / "c"


def compiled(model, lr):
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    return model


def decode_with_c(prefix: Path) -> bytes:
    """Build the C decoder and run it on the skeleton and sidecar (Python decoder as fallback)."""
    skeleton, sidecar = prefix.with_suffix(".skeleton"), prefix.with_suffix(".kcz")
    gcc = shutil.which("gcc")
    if gcc is None:
        print("gcc not found: decoding with the Python decoder instead")
        return kc.deploy.sidecar.join(skeleton.read_bytes(), sidecar.read_bytes())
    work = Path(tempfile.mkdtemp())
    binary, out = work / "kcz_cli", work / "decoded.tflite"
    sources = [str(C_SOURCE / "kcz_decode.c"), str(C_SOURCE / "kcz_cli.c")]
    subprocess.run([gcc, "-std=c99", "-O2", "-o", str(binary), *sources], check=True)
    subprocess.run([str(binary), str(skeleton), str(sidecar), str(out)], check=True)
    data = out.read_bytes()
    shutil.rmtree(work)
    return data


def tflite_accuracy(model_bytes: bytes, x, y) -> float:
    (logits,) = kc.deploy.litert.run(model_bytes, x.astype("float32"))
    return float(np.mean(np.argmax(logits, axis=1) == y))


def plot(shared, report, stages, path: Path) -> None:
    """Per layer: the non-zero weights before sharing and the centroids; the size per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wrappers = [layer for layer in shared.layers if isinstance(layer, kc.WeightSharingWrapper)]
    fig, axes = plt.subplots(1, len(wrappers) + 1, figsize=(4 * (len(wrappers) + 1), 3.6))
    for ax, wrapper in zip(axes, wrappers):
        values = wrapper.shared_weights()[0]
        before = wrapper.layer.weights[0].numpy()  # the frozen pre-sharing kernel
        used = np.unique(wrapper.indices[0].numpy()[wrapper.nonzero[0].numpy()])
        ax.hist(before[before != 0].ravel(), bins=120, color="tab:blue", alpha=0.7)
        for c in wrapper.centroids[0].numpy()[used]:
            ax.axvline(c, color="tab:red", lw=0.5)
        ax.set(title=f"{wrapper.layer.name}: {(values != 0).sum()} non-zeros, {used.size} values",
               xlabel="weight (red: centroids)", ylabel="count")  # fmt: skip
    names, sizes = zip(*stages)
    bar = axes[-1]
    bar.bar(names, [s / 1024 for s in sizes], color=["gray", "tab:orange", "tab:green"])
    for i, s in enumerate(sizes):
        bar.text(i, s / 1024, f"{s / 1024:.1f} KiB", ha="center", va="bottom", fontsize=8)
    bar.set(title=f"deployable size ({report.totals['ratio']:.1f}x smaller)", ylabel="KiB")
    bar.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="epochs of plain training")
    parser.add_argument("--out", default="out", help="output folder")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = kc.examples.fashion_mnist()
    x, xt = x[..., None].astype("float32") / 255.0, xt[..., None].astype("float32") / 255.0
    steps = int(np.ceil(len(x) / 128))

    print("== 1/5 training LeNet-5 (Caffe) on Fashion-MNIST")
    model = compiled(kc.examples.lenet5(), 1e-3)
    model.fit(x, y, batch_size=128, epochs=args.epochs, validation_data=(xt, yt))
    float_accuracy = model.evaluate(xt, yt, verbose=0)[1]

    print("== 2/5 pruning to Han et al.'s levels in 3 prune/retrain rounds")
    rounds = kc.IterativeRounds([0.92 * f for f in (0.5, 0.8, 1.0)], steps_per_round=steps)
    pruned = compiled(kc.make_prunable(model), 5e-4)
    pruning = kc.MagnitudePruning(schedule=rounds, layer_targets=HAN_LEVELS)
    pruned.fit(x, y, batch_size=128, epochs=4, validation_data=(xt, yt), callbacks=[pruning])

    pruned_gzip = len(gzip.compress(convert(kc.strip(pruned)), 9))

    print("== 3/5 weight sharing (conv 8 bits, dense 5 bits) and centroid fine-tuning")
    shared = compiled(kc.share_weights(pruned, bits={"conv": 8, "dense": 5}), 1e-4)
    shared.fit(x, y, batch_size=128, epochs=2, validation_data=(xt, yt))

    print("== 4/5 export: .tflite + skeleton + Huffman-coded sidecar")
    out = Path(args.out)
    report = kc.export(shared, out / "lenet5")
    print(report.markdown())

    print("== 5/5 decode skeleton + sidecar and check the decoded model")
    decoded = decode_with_c(out / "lenet5")
    assert decoded == (out / "lenet5.tflite").read_bytes(), "decoded model differs"
    accuracy = tflite_accuracy(decoded, xt, yt)
    t = report.totals
    stages = [("float32 .tflite", t["tflite_bytes"]), ("pruned, gzip -9", pruned_gzip),
              ("skeleton + sidecar", t["deployable_bytes"])]  # fmt: skip
    plot(shared, report, stages, out / "lenet5.png")
    print(kc.summary(shared))
    print(f"float Keras accuracy {float_accuracy:.4f}; decoded TFLite accuracy {accuracy:.4f}")
    print(f"{t['tflite_bytes']} bytes -> {t['deployable_bytes']} bytes ({t['ratio']:.1f}x); "
          f"plots in {out / 'lenet5.png'}")  # fmt: skip


if __name__ == "__main__":
    main()
