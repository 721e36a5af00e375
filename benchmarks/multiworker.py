"""LeNet-5 pruned and shared by two MultiWorkerMirroredStrategy workers against one process.

Runs ``examples/multiworker.py --model lenet5`` (two worker processes on 127.0.0.1 plus the
single-process runs, same seed, same global batches of Fashion-MNIST) and records how many
mask entries agree and how far the fine-tuned codebooks are apart (relative to their scale).
Goals: the workers match each other and a single process with the same two-replica split
exactly (one intra-op thread per process). Against one device (other float summation order),
and with TensorFlow's default threading (thread-dependent float summation in its CPU
kernels), the differences are reported.

    python benchmarks/multiworker.py [--examples 12000] [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import results_io

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "multiworker.py"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    rows, summaries = [], []
    for threads in (1, 0):
        start = time.perf_counter()
        run = subprocess.run([sys.executable, str(EXAMPLE), "--model", "lenet5", "--examples",
                              str(args.examples), "--epochs", str(args.epochs), "--threads",
                              str(threads)], capture_output=True, text=True)  # fmt: skip
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        row = {"model": "lenet5", "examples": args.examples, "epochs": args.epochs,
               "intra-op threads": threads or "default",
               "seconds": time.perf_counter() - start,
               "fraction_pruned": summary["fraction_pruned"]}  # fmt: skip
        for key in ("workers_vs_each_other", "workers_vs_one_process_two_replicas",
                    "workers_vs_one_process_one_device"):  # fmt: skip
            row[f"{key}: masks equal"] = summary[key]["mask_entries_equal"]
            row[f"{key}: codebook difference"] = summary[key]["max_codebook_difference"]
        print(row)
        rows.append(row)
        summaries.append(summary)
    summary = summaries[0]
    same = summary["workers_vs_one_process_two_replicas"]
    goals = [
        results_io.goal("masks_equal_two_replicas", same["mask_entries_equal"], ">=", 1.0),
        results_io.goal(
            "codebook_difference_two_replicas", same["max_codebook_difference"], "<=", 0.0
        ),  # fmt: skip
    ]
    md = (
        "Two MultiWorkerMirroredStrategy workers on 127.0.0.1 against one process (same seed, "
        f"same global batches of 64): LeNet-5 on {args.examples} Fashion-MNIST images, pruned "
        f"to 80% over {args.epochs} epochs, shared at 4 bits, fine-tuned 1 epoch. Goals on the "
        "run with one intra-op thread per process.\n\n" + results_io.table(rows, list(rows[0]))
    )
    print(results_io.write("multiworker", goals, rows, md))


if __name__ == "__main__":
    main()
