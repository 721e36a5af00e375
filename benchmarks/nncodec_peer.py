"""NNCodec (MPEG NNR, ISO/IEC 15938-17) on the same weights: run in its own virtual environment.

``benchmarks/rate.py`` saves the pruned and shared weight tensors of each of its rows to an
``.npz`` and runs this script with the Python of ``benchmarks/.venv-nncodec`` (NNCodec needs
PyTorch, which the main environment does not have). It codes them with NNCodec's codebook
mode and row skipping (the settings for shared, pruned weights), decodes the bitstream and
writes the decoded tensors and ``{"bytes": ..., "max_abs_error": ...}``.

    .venv-nncodec/bin/python nncodec_peer.py IN.npz OUT.npz OUT.json
"""

import json
import sys

import numpy as np
from nncodec.nnc import compression


def main() -> None:
    source, decoded_path, json_path = sys.argv[1:4]
    tensors = {k: v.astype(np.float32) for k, v in np.load(source).items()}
    stream = compression.compress(
        tensors, bitstream_path=decoded_path + ".nnc", codebook_mode=1, row_skipping=True,
        return_bitstream=True, verbose=False,
    )  # fmt: skip
    decoded = compression.decompress(stream, return_model_information=False, verbose=False)
    error = max(float(np.abs(decoded[k] - v).max()) for k, v in tensors.items())
    np.savez(decoded_path, **{k: np.asarray(decoded[k]) for k in tensors})
    with open(json_path, "w") as f:
        json.dump({"bytes": len(stream), "max_abs_error": error}, f)


if __name__ == "__main__":
    main()
