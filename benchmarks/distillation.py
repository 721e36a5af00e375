"""Distilling a VGG-style teacher into LeNet-300-100 on Fashion-MNIST, then compressing the student.

Teachers: two VGG-style CNNs (``fashion.vgg_style``, seeds 0 and 1, ``--teacher-epochs``).
Students: LeNet-300-100 trained ``--epochs`` epochs from the same seed, four ways: alone (labels
only); Hinton et al.'s soft targets from teacher 0 (``kc.distillation.hinton``, T = 4,
``student_loss_weight`` 0.1); Sau et al.'s noisy teacher (teacher 0's logits times ``1 + xi``,
``xi ~ N(0, 0.2^2)``, on half the batches); and both teachers (the average of their softened
distributions). Each student then goes through the compression pipeline (Han et al.'s pruning
levels in 3 prune/retrain rounds + 2 epochs, k-means to 3 bits with 2 epochs of centroid
fine-tuning, export) and is measured again: the decoded ``.tflite``'s accuracy in the TFLite
interpreter and its deployable bytes. No goal is set by the issue: the table reports what is
measured, including where noise does not help.

    python benchmarks/distillation.py            # about 30 minutes on 2 cores
    python benchmarks/distillation.py --quick    # subset smoke run
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import keras
import results_io
from fashion import BATCH, LOSS, compiled, data, prune_to_han_levels, vgg_style
from tflite_eval import tflite_accuracy

import keras_compress as kc
from keras_compress.distillation import NoisyTeacher, ensemble_teacher, hinton

TEMPERATURE = 4.0
ALPHA = 0.1  # weight of the student's own loss on the labels


def teacher(seed: int, x, y, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    model = compiled(vgg_style(), 1e-3)
    model.name = f"teacher{seed}"
    model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=2)
    return model


def student(method: str, teachers, x, y, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = kc.examples.lenet_300_100()
    if method == "alone":
        compiled(model, 1e-3).fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
        return model
    source = teachers[0]
    if method == "Hinton":
        loss = hinton(TEMPERATURE)
    elif method == "noisy teacher":
        loss = NoisyTeacher(TEMPERATURE, noise_std=0.2, probability=0.5, seed=0)
    else:
        source, loss = ensemble_teacher(teachers, TEMPERATURE), hinton(TEMPERATURE)
    distiller = keras.distillation.Distiller(source, model, loss, student_loss_weight=ALPHA)
    distiller.compile(keras.optimizers.Adam(1e-3), LOSS)
    distiller.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0)
    return model


def compressed(model: keras.Model, x, y, xt, yt, work: Path) -> dict:
    """Prune, share, fine-tune, export; the decoded model's accuracy and bytes."""
    pruned = kc.strip(prune_to_han_levels(model, "lenet_300_100", x, y, retrain=2))
    shared = kc.share_weights(pruned, bits={"dense": 3})
    compiled(shared, 1e-4).fit(x, y, batch_size=BATCH, epochs=2, verbose=0)
    report = kc.export(kc.strip(shared), work / "student")
    decoded = kc.deploy.sidecar.join((work / "student.skeleton").read_bytes(),
                              (work / "student.kcz").read_bytes())  # fmt: skip
    return {"compressed_accuracy": tflite_accuracy(decoded, xt, yt),
            "deployable_bytes": report.totals["deployable_bytes"],
            "ratio": report.totals["ratio"]}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="subset smoke run")
    args = parser.parse_args()
    cfg = {"teacher_epochs": 4, "epochs": 8}
    if args.quick:
        cfg = {"teacher_epochs": 1, "epochs": 1}
    (x, y), (xt, yt) = data(args.quick)
    teachers = [teacher(seed, x, y, cfg["teacher_epochs"]) for seed in (0, 1)]
    rows = [{"model": t.name, "params": t.count_params(),
             "accuracy": compiled(t, 1e-3).evaluate(xt, yt, verbose=0)[1]}
            for t in teachers]  # fmt: skip
    print(rows)
    work = Path(tempfile.mkdtemp())
    for method in ("alone", "Hinton", "noisy teacher", "two teachers"):
        model = student(method, teachers, x, y, cfg["epochs"])
        row = {"model": f"student: {method}", "params": model.count_params(),
               "accuracy": compiled(model, 1e-3).evaluate(xt, yt, verbose=0)[1],
               "teacher_over_student_params": teachers[0].count_params() / model.count_params(),
               **compressed(model, x, y, xt, yt, work)}  # fmt: skip
        print(row)
        rows.append(row)
    md = (
        f"Fashion-MNIST ({len(x)} training, {len(xt)} test images). Teachers: VGG-style CNNs, "
        f"{cfg['teacher_epochs']} epochs, seeds 0 and 1. Students: LeNet-300-100, "
        f"{cfg['epochs']} epochs, seed 0; T = {TEMPERATURE}, student loss weight {ALPHA}; noisy "
        "teacher: sigma 0.2 on half the batches. Compressed: Han's levels (3 rounds + 2 "
        "epochs), 3-bit k-means, 2 epochs of centroid fine-tuning, exported and decoded.\n\n"
        + results_io.table(
            rows,
            [
                "model",
                "params",
                "accuracy",
                "teacher_over_student_params",
                "compressed_accuracy",
                "deployable_bytes",
                "ratio",
            ],
        )  # fmt: skip
    )
    name = "distillation_quick" if args.quick else "distillation"
    print(results_io.write(name, [], rows, md, cfg=cfg))


if __name__ == "__main__":
    main()
