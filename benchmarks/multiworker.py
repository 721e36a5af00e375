"""LeNet-5 pruned and shared by two MultiWorkerMirroredStrategy workers against one process.

Runs ``examples/multiworker.py --model lenet5`` (two worker processes on 127.0.0.1 plus the
single-process reference, same seed, same global batches of Fashion-MNIST) and records how
many mask entries agree and how far the fine-tuned codebooks are apart. Goals: identical
masks, codebooks equal to float32 rounding (1e-4 of their scale).

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
    start = time.perf_counter()
    run = subprocess.run([sys.executable, str(EXAMPLE), "--model", "lenet5", "--examples",
                          str(args.examples), "--epochs", str(args.epochs)],
                         capture_output=True, text=True)  # fmt: skip
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    row = {"model": "lenet5", "examples": args.examples, "epochs": args.epochs,
           "seconds": time.perf_counter() - start, **summary}  # fmt: skip
    print(row)
    relative = summary["max_codebook_difference"] / summary["codebook_scale"]
    goals = [
        results_io.goal("mask_entries_equal", summary["mask_entries_equal"], ">=", 1.0),
        results_io.goal("codebook_difference_over_scale", relative, "<=", 1e-4),
    ]
    md = (
        "Two MultiWorkerMirroredStrategy workers on 127.0.0.1 against one process (same seed, "
        f"same global batches of 64): LeNet-5 on {args.examples} Fashion-MNIST images, pruned "
        f"to 80% over {args.epochs} epochs, shared at 4 bits, fine-tuned 1 epoch.\n\n"
        + results_io.table([row], list(row))
    )
    print(results_io.write("multiworker", goals, [row], md))


if __name__ == "__main__":
    main()
