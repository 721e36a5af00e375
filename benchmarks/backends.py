"""Issue 24: the same pruning and sharing recipe under TensorFlow, JAX and PyTorch.

LeNet-300-100 and LeNet-5 on Fashion-MNIST, from the same numpy-drawn starting weights and
the same batch order on every backend: dense training, pruning with the polynomial schedule
(``MagnitudePruning``), weight sharing (``share_weights``) and centroid fine-tuning. Per
backend it measures the final test accuracy, the masks computed from the starting weights
(must equal TensorFlow's) and the final masks' agreement with TensorFlow's run; then the
speed of a plain (dense) epoch, an epoch with pruning (mask updates every 100 steps) and an
epoch of centroid fine-tuning, timed in turns (see ``interleaved_times``).

Float rounding alone moves a run's final accuracy by about half a point (a TensorFlow run
from weights perturbed by 1e-6 relative noise ended 0.62 below the unperturbed one on
LeNet-300-100), more than the 0.3-point goal, so one run per backend cannot tell backends
apart. Each backend therefore runs the recipe from several starting points (``STARTS``): the
numpy start weights and copies perturbed by 1e-6 relative noise (the same copies on every
backend). The accuracy compared is the mean over the starts, paired with TensorFlow's; the
spread of TensorFlow's own starts is the noise floor reported beside it. Only the first start
is timed.

Each backend runs in its own process, with its own Python: this one for TensorFlow, and
the test suite's ``.venv-jax`` / ``.venv-torch`` (``bash tests/backends.sh setup``, run on
first use: the backend, Keras and keras_compress, no TensorFlow) or the Pythons named by
``KC_JAX_PYTHON`` / ``KC_TORCH_PYTHON``.

Usage: ``python benchmarks/backends.py [--quick]`` (26-55 minutes on 2 cores; ``--quick``:
12,000 training images, one epoch less per phase, two starts, results in ``backends_quick.*``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import keras  # the worker's backend: KERAS_BACKEND, set by the driver
import numpy as np
from timing import EpochTimer, fastest_in_turns, interleaved_times, paired_median_ratio

import keras_compress as kc

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BACKENDS = ["tensorflow", "jax", "torch"]
#: Starts per model (0: the numpy start weights; s > 0: perturbed by 1e-6 relative noise),
#: more where one run's accuracy moves more with rounding (LeNet-300-100: 0.6 points) and
#: a run is cheap.
STARTS = {"lenet_300_100": 6, "lenet5": 3}
MODELS = {
    # name: (sparsity, bits, epochs per phase: dense, pruning, fine-tuning)
    "lenet_300_100": (0.92, 5, (3, 3, 2)),
    "lenet5": (0.92, 5, (3, 3, 2)),
}
BATCH = 128
#: Steps per timed epoch, rounds. LeNet-300-100's PyTorch epoch moves by 5-10% from round to
#: round on 2 shared cores: 15 rounds (9 before 2026-12-04) for a steadier fastest epoch.
TIMING = {"lenet_300_100": (400, 15), "lenet5": (100, 5)}


def python_for(backend: str) -> str:
    """The Python that runs ``backend``: this one, ``KC_<BACKEND>_PYTHON``, or ``.venv-<backend>``.

    The virtual environments are the test suite's (``bash tests/backends.sh setup``), made on
    first use.
    """
    if backend == "tensorflow":
        return sys.executable
    named = os.environ.get(f"KC_{backend.upper()}_PYTHON")
    if named:
        return named
    python = ROOT / f".venv-{backend}" / "bin" / "python"
    if not python.exists():
        subprocess.run(["bash", str(ROOT / "tests" / "backends.sh"), "setup"], check=True)
    return str(python)


def start_weights(model_name: str, path: Path) -> None:
    """``kc.examples.numpy_start``'s weights, saved for every backend's worker."""
    np.savez(path, *kc.examples.numpy_start(getattr(kc.examples, model_name)()).get_weights())


def torch_reference(model_name: str, x, y, sparsity: float, steps: int, rounds: int) -> dict:
    """PyTorch's own pruning on the same architecture, without Keras: the PyTorch peer.

    Seconds per epoch of ``steps`` batches of a plain ``torch.nn`` model and of the same
    model with every weight matrix pruned by ``torch.nn.utils.prune.l1_unstructured`` (a
    forward pre-hook that multiplies the weight by its mask in every step), Adam, timed in
    turns (``fastest_in_turns``). It shows what masking costs in eager PyTorch itself.
    """
    import torch
    from torch import nn
    from torch.nn.utils import prune

    def build() -> nn.Module:
        if model_name == "lenet_300_100":
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(),
                                 nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))  # fmt: skip
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                             nn.Linear(500, 10))  # fmt: skip

    plain, pruned = build(), build()
    for module in pruned:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            prune.l1_unstructured(module, "weight", amount=sparsity)
    xs = torch.from_numpy(np.ascontiguousarray(x[: steps * BATCH].transpose(0, 3, 1, 2)))
    ys = torch.from_numpy(y[: steps * BATCH].astype("int64"))
    runs = {"plain": plain, "pruned": pruned}
    optimizers = {k: torch.optim.Adam(m.parameters(), 1e-3) for k, m in runs.items()}

    def epoch(name: str) -> float:
        started = time.perf_counter()
        for i in range(0, len(xs), BATCH):
            optimizers[name].zero_grad()
            loss = nn.functional.cross_entropy(runs[name](xs[i : i + BATCH]), ys[i : i + BATCH])
            loss.backward()
            optimizers[name].step()
        return time.perf_counter() - started

    best = fastest_in_turns({k: partial(epoch, k) for k in runs}, rounds)
    return {"plain_epoch_s": best["plain"], "pruned_epoch_s": best["pruned"],
            "pruning_ratio": best["pruned"] / best["plain"]}  # fmt: skip


def worker(model_name: str, start: Path, out: Path, quick: bool, perturb: int) -> None:
    """Run the recipe on this process's backend; write ``out``.json and ``out``.npz.

    ``perturb``: 0 for the start weights as they are (then the epochs are timed too), ``s > 0``
    for the weights times ``1 + 1e-6 * noise`` with the noise drawn from numpy's seed ``s + 1``.
    """
    (x, y), (xt, yt) = kc.examples.fashion_mnist()
    x, xt = (x[..., None] / 255.0).astype("float32"), (xt[..., None] / 255.0).astype("float32")
    order = np.random.default_rng(1).permutation(len(x))  # one batch order for every backend
    x, y = x[order], y[order]
    if quick:
        x, y = x[:12000], y[:12000]
    sparsity, bits, (dense_epochs, prune_epochs, tune_epochs) = MODELS[model_name]
    if quick:
        dense_epochs, prune_epochs, tune_epochs = dense_epochs - 1, prune_epochs - 1, tune_epochs
    initial = list(np.load(start).values())
    if perturb:  # a start a rounding error away (the same on every backend)
        noise = np.random.default_rng(perturb + 1)
        initial = [(w * (1 + 1e-6 * noise.standard_normal(w.shape))).astype(w.dtype)
                   for w in initial]  # fmt: skip
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def fresh():
        model = getattr(kc.examples, model_name)()
        model.set_weights(initial)
        return model

    # Masks from the starting weights: one step with a zero learning rate.
    probe = kc.make_prunable(fresh())
    probe.compile(keras.optimizers.SGD(0.0), loss)
    probe.fit(x[:BATCH], y[:BATCH], batch_size=BATCH, verbose=0,
              callbacks=[kc.MagnitudePruning(sparsity, schedule="constant")])  # fmt: skip
    start_masks = {f"start/{w.layer.name}/{i}": keras.ops.convert_to_numpy(m)
                   for w in kc.pruning_wrappers(probe) for i, m in enumerate(w.masks)}  # fmt: skip

    model = fresh()
    model.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    plain = EpochTimer()
    model.fit(x, y, batch_size=BATCH, epochs=dense_epochs, shuffle=False, verbose=0,
              callbacks=[plain])  # fmt: skip
    dense_accuracy = model.evaluate(xt, yt, batch_size=1000, verbose=0)[1]

    pruned = kc.make_prunable(model)
    pruned.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    pruning = EpochTimer()
    pruned.fit(x, y, batch_size=BATCH, epochs=prune_epochs, shuffle=False, verbose=0,
               callbacks=[kc.MagnitudePruning(sparsity), pruning])  # fmt: skip
    final_masks = {f"final/{w.layer.name}/{i}": keras.ops.convert_to_numpy(m)
                   for w in kc.pruning_wrappers(pruned) for i, m in enumerate(w.masks)}  # fmt: skip
    pruned_accuracy = pruned.evaluate(xt, yt, batch_size=1000, verbose=0)[1]

    shared = kc.share_weights(pruned, bits=bits)
    shared.compile(keras.optimizers.Adam(1e-4), loss, metrics=["accuracy"])
    tuning = EpochTimer()
    shared.fit(x, y, batch_size=BATCH, epochs=tune_epochs, shuffle=False, verbose=0,
               callbacks=[tuning])  # fmt: skip
    accuracy = shared.evaluate(xt, yt, batch_size=1000, verbose=0)[1]

    np.savez(out.with_suffix(".npz"), **start_masks, **final_masks)
    row = {
        "backend": keras.backend.backend(),
        "model": model_name,
        "start": perturb,
        "train_images": len(x),
        "epochs": [dense_epochs, prune_epochs, tune_epochs],
        "recipe_epoch_times_s": {
            "plain": plain.wall,
            "pruning": pruning.wall,
            "finetune": tuning.wall,
        },
        "dense_accuracy": dense_accuracy,
        "pruned_accuracy": pruned_accuracy,
        "accuracy": accuracy,
        "sparsity": kc.sparsity(kc.strip(shared))["total"],
    }
    if perturb:
        out.with_suffix(".json").write_text(json.dumps(row))
        return
    # Speed: the three kinds of epoch in turns (after the recipe: its models are done).
    dense = fresh()
    dense.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    steps, rounds = TIMING[model_name]
    times = interleaved_times(
        {
            "plain": (dense, list),
            "pruning": (pruned, lambda: [kc.MagnitudePruning(sparsity, schedule="constant")]),
            "finetune": (shared, list),
        },
        x, y, BATCH, steps, rounds,
    )  # fmt: skip
    row.update({
        "timing": f"fastest of {rounds} interleaved epochs of {steps} steps",
        "epoch_times_s": times,
        "plain_epoch_s": min(times["plain"]),
        "pruning_epoch_s": min(times["pruning"]),
        "finetune_epoch_s": min(times["finetune"]),
        "pruning_ratio_paired_median": paired_median_ratio(times, "pruning", "plain"),
        "finetune_ratio_paired_median": paired_median_ratio(times, "finetune", "plain"),
    })  # fmt: skip
    row["pruning_ratio"] = row["pruning_epoch_s"] / row["plain_epoch_s"]
    row["finetune_ratio"] = row["finetune_epoch_s"] / row["plain_epoch_s"]
    if keras.backend.backend() == "torch":
        row["torch_nn_utils_prune"] = torch_reference(model_name, x, y, sparsity, steps, rounds)
    out.with_suffix(".json").write_text(json.dumps(row))


def run_worker(python: str, backend: str, model_name: str, start: int, work: Path, quick: bool):
    """One start of the recipe in its own process: its row, or the error text if it failed."""
    out = work / f"{backend}_{model_name}_{start}"
    command = [python, __file__, "--worker", model_name, str(work / f"{model_name}_start.npz"),
               str(out), "--perturb", str(start)] + ["--quick"] * quick  # fmt: skip
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    started = time.perf_counter()
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    if run.returncode:
        print(backend, model_name, start, "FAILED", run.stderr[-600:], flush=True)
        return run.stderr.strip()[-600:]
    row = json.loads(out.with_suffix(".json").read_text())
    row["process_s"] = time.perf_counter() - started
    print(json.dumps({k: v for k, v in row.items() if k != "recipe_epoch_times_s"}), flush=True)
    return row


def summary(runs: list[dict], backend: str, model_name: str) -> dict:
    """One backend's row for a model: the timed first start, accuracies over every start.

    ``accuracy_minus_tensorflow`` is the mean over the starts both backends finished of this
    backend's accuracy minus TensorFlow's from the same start (paired: the same start weights
    and batch order); ``accuracy_spread`` is the range of this backend's own accuracies.
    """
    mine = sorted((r for r in runs if r["backend"] == backend and r["model"] == model_name),
                  key=lambda r: r["start"])  # fmt: skip
    row = {k: v for k, v in mine[0].items() if k != "start"}
    accuracies = [r["accuracy"] for r in mine]
    row.update(
        starts=len(mine),
        start_accuracies=accuracies,
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_spread=max(accuracies) - min(accuracies),
    )
    if backend == "tensorflow":
        return row
    tf = {r["start"]: r["accuracy"] for r in runs
          if r["backend"] == "tensorflow" and r["model"] == model_name}  # fmt: skip
    paired = [r["accuracy"] - tf[r["start"]] for r in mine if r["start"] in tf]
    row["accuracy_minus_tensorflow_by_start"] = paired
    row["accuracy_minus_tensorflow"] = float(np.mean(paired)) if paired else float("nan")
    if len(paired) > 1:  # the standard error of that mean
        row["accuracy_minus_tensorflow_se"] = float(np.std(paired, ddof=1) / np.sqrt(len(paired)))
    row["start_masks_identical"] = all(r.get("start_masks_identical", False) for r in mine)
    row["final_mask_agreement"] = mine[0].get("final_mask_agreement", float("nan"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "START", "OUT"))
    parser.add_argument("--perturb", type=int, default=0, help="worker: the start (0: unperturbed)")
    args = parser.parse_args()
    if args.worker:
        model, start, out = args.worker
        worker(model, Path(start), Path(out), args.quick, args.perturb)
        return

    sys.path.insert(0, str(HERE))
    from results_io import goal, write

    runs, goals, problems = [], [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for model_name in MODELS:
            start_weights(model_name, work / f"{model_name}_start.npz")
        for backend in BACKENDS:
            try:
                python = python_for(backend)
            except (subprocess.CalledProcessError, OSError) as err:
                problems[backend] = f"could not install: {err}"
                continue
            for model_name in MODELS:
                for start in range(2 if args.quick else STARTS[model_name]):
                    row = run_worker(python, backend, model_name, start, work, args.quick)
                    if isinstance(row, str):
                        problems[f"{backend}/{model_name}/{start}"] = row
                    else:
                        runs.append(row)
        for row in runs:
            name = f"{row['model']}_{row['start']}"
            if row["backend"] == "tensorflow" or not (work / f"tensorflow_{name}.npz").exists():
                continue
            theirs = np.load(work / f"{row['backend']}_{name}.npz")
            ours = np.load(work / f"tensorflow_{name}.npz")
            start = [k for k in ours.files if k.startswith("start/")]
            final = [k for k in ours.files if k.startswith("final/")]
            row["start_masks_identical"] = all(np.array_equal(theirs[k], ours[k]) for k in start)
            entries = sum(ours[k].size for k in final)
            row["final_mask_agreement"] = (
                sum(int((theirs[k] == ours[k]).sum()) for k in final) / entries
            )
    rows = [summary(runs, backend, model_name) for backend in BACKENDS for model_name in MODELS
            if any(r["backend"] == backend and r["model"] == model_name and r["start"] == 0
                   for r in runs)]  # fmt: skip

    for backend in ("jax", "torch"):
        for row in (r for r in rows if r["backend"] == backend):
            tag = f"{backend}_{row['model']}"
            goals += [
                goal(f"{tag}_pruning_epoch_ratio", round(row["pruning_ratio"], 3), "<=", 1.10),
                goal(f"{tag}_finetune_epoch_ratio", round(row["finetune_ratio"], 3), "<=", 1.3),
                goal(
                    f"{tag}_accuracy_drop_vs_tensorflow",
                    round(-100 * row["accuracy_minus_tensorflow"], 2),
                    "<=",
                    0.3,
                ),  # fmt: skip
                goal(f"{tag}_start_masks_identical", float(row["start_masks_identical"]), ">=", 1),
            ]
    lines = ["| backend | model | plain epoch s | pruning epoch s (x) | fine-tune epoch s (x) | "
             "accuracy per start (mean) | vs TF, paired mean (points) | start masks = TF | "
             "final masks agree |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        vs = r.get("accuracy_minus_tensorflow")
        each = ", ".join(f"{a:.4f}" for a in r["start_accuracies"])
        lines.append(
            f"| {r['backend']} | {r['model']} | {r['plain_epoch_s']:.2f} | "
            f"{r['pruning_epoch_s']:.2f} ({r['pruning_ratio']:.2f}x) | "
            f"{r['finetune_epoch_s']:.2f} ({r['finetune_ratio']:.2f}x) | {each} "
            f"({r['accuracy_mean']:.4f}) | {'' if vs is None else f'{100 * vs:+.2f}'} | "
            f"{r.get('start_masks_identical', '')} | {r.get('final_mask_agreement', 1.0):.5f} |"
        )
    paired = [f"{r['backend']} {r['model']} {r['pruning_ratio_paired_median']:.2f}x, "
              f"{r['finetune_ratio_paired_median']:.2f}x" for r in rows]  # fmt: skip
    lines += ["", "The same epochs' ratios as medians over the rounds of each round's ratio to the "
              f"plain epoch (pruning, fine-tuning): {'; '.join(paired)}."]  # fmt: skip
    floor = [f"{r['model']} {100 * r['accuracy_spread']:.2f} points"
             for r in rows if r["backend"] == "tensorflow"]  # fmt: skip
    lines += ["", "Noise floor: the range of TensorFlow's own accuracies over its starts "
              f"(weights 1e-6 apart): {', '.join(floor)}."]  # fmt: skip
    native = [r for r in rows if "torch_nn_utils_prune" in r]
    if native:
        lines += ["", "PyTorch's own pruning, no Keras (`torch.nn.utils.prune`, same architecture, "
                  "sparsity, batch and steps; plain torch vs pruned):", ""]  # fmt: skip
        for r in native:
            t = r["torch_nn_utils_prune"]
            lines.append(f"- {r['model']}: {t['plain_epoch_s']:.2f} s, "
                         f"{t['pruned_epoch_s']:.2f} s ({t['pruning_ratio']:.2f}x)")  # fmt: skip
    if problems:
        lines += ["", "Not run:", *(f"- {k}: {v}" for k, v in problems.items())]
    name = "backends_quick" if args.quick else "backends"
    print(write(name, goals, rows, "\n".join(lines), problems=problems))


if __name__ == "__main__":
    main()
