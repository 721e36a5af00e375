"""Speed and quality of the 1-D k-means against scikit-learn, in the same run.

For 1e6 and 1e7 weights (a Laplacian-like mix, as trained weights are) and 16 and 256
clusters, both start from the same linear initialisation; scikit-learn runs
``KMeans(n_init=1, algorithm="lloyd")``. Both stop by scikit-learn's rule (squared centroid
shifts against the variance), each at its default tolerance: 1e-8 for ours, 1e-4 for
scikit-learn's, so ours runs more iterations. Each is timed ``--repeats`` times (median).
Goals: at least 20x faster, inertia ratio <= 1.0001.

    python benchmarks/kmeans.py [--sizes 1000000 10000000] [--clusters 16 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import results_io
from sklearn.cluster import KMeans

from keras_compress.sharing.kmeans1d import initial_centroids, kmeans1d


def weights(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mix = [rng.laplace(0, 0.02, n // 2), rng.normal(0, 0.05, n - n // 2)]
    return np.concatenate(mix).astype(np.float32)  # trained weights are float32


def timed(run, repeats: int):
    """Median wall time of ``repeats`` calls of ``run`` and its last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--clusters", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--repeats", type=int, default=3, help="timings per case (median)")
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        x = weights(n)
        for k in args.clusters:
            init = initial_centroids(x, k, "linear")
            ref = KMeans(k, init=init.reshape(-1, 1), n_init=1, algorithm="lloyd", max_iter=300)
            ours_s, ours = timed(partial(kmeans1d, x, k, init=init), args.repeats)
            ref_s, _ = timed(partial(ref.fit, x.reshape(-1, 1)), args.repeats)
            row = {
                "n": n, "k": k, "ours_s": ours_s, "sklearn_s": ref_s,
                "speedup": ref_s / ours_s, "ours_inertia": ours.inertia,
                "sklearn_inertia": float(ref.inertia_),
                "inertia_ratio": ours.inertia / float(ref.inertia_),
                "ours_iterations": ours.iterations, "sklearn_iterations": int(ref.n_iter_),
            }  # fmt: skip
            rows.append(row)
            print(
                f"n={n:>9} k={k:>3}: ours {ours_s:7.3f} s ({ours.iterations} it), sklearn "
                f"{ref_s:7.2f} s ({ref.n_iter_} it), speedup {row['speedup']:6.1f}x, "
                f"inertia ratio {row['inertia_ratio']:.6f}"
            )
    goals = [
        results_io.goal("min_speedup_vs_sklearn", min(r["speedup"] for r in rows), ">=", 20),
        results_io.goal("max_inertia_ratio", max(r["inertia_ratio"] for r in rows), "<=", 1.0001),
    ]
    md = results_io.table(
        rows, ["n", "k", "ours_s", "sklearn_s", "speedup", "inertia_ratio", "ours_iterations",
               "sklearn_iterations"]
    )  # fmt: skip
    print(results_io.write("kmeans", goals, rows, md))


if __name__ == "__main__":
    main()
