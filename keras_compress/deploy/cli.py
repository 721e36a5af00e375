"""Command line: ``python -m keras_compress {export,decode,inspect} ...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from keras_compress.core.files import write_atomically
from keras_compress.deploy import sidecar


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 on a corrupt or mismatched sidecar).

    Example:
        >>> main(["inspect", "out/lenet5.kcz"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(prog="python -m keras_compress")
    sub = parser.add_subparsers(dest="command", required=True)
    dec = sub.add_parser("decode", help="rebuild the .tflite from skeleton + sidecar")
    dec.add_argument("skeleton")
    dec.add_argument("sidecar")
    dec.add_argument("output")
    ins = sub.add_parser("inspect", help="print the sidecar's header and tensor table")
    ins.add_argument("sidecar")
    exp = sub.add_parser("export", help="a saved .keras model to .tflite + skeleton + sidecar")
    exp.add_argument("model", help="a .keras file (keras_compress wrappers allowed)")
    exp.add_argument("prefix", help="output prefix, e.g. out/lenet5")
    exp.add_argument("--int8", metavar="CALIBRATION.npy", help="full-integer int8 export, "
                     "calibrated on the input samples in this .npy file")  # fmt: skip
    exp.add_argument("--per-tensor", action="store_true", help="with --int8: one scale per "
                     "tensor, not per channel (smaller after weight sharing)")  # fmt: skip
    exp.add_argument("--coding", choices=sidecar.CODINGS, default="auto",
                     help="sidecar coding: huffman (format v3, every decoder), arithmetic "
                     "(v4, smaller) or auto (arithmetic on the first 3 M elements)")  # fmt: skip
    exp.add_argument("--no-scaled-copies", action="store_true",
                     help="no format-v5 scaled copies (KCZ_SCALED_COPY=0 C builds)")  # fmt: skip
    exp.add_argument("--tf-ops", action="store_true",
                     help="allow TensorFlow ops (Flex delegate) as Keras does")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            if args.per_tensor and not args.int8:
                raise ValueError("--per-tensor chooses int8 scales: it needs --int8")
            import keras
            import numpy as np

            from keras_compress.deploy.exporter import export

            model = keras.models.load_model(args.model)
            kwargs = {"coding": args.coding, "scaled_copies": not args.no_scaled_copies,
                      "tf_ops": args.tf_ops}  # fmt: skip
            if args.int8:
                samples = np.load(args.int8).astype("float32")
                kwargs |= {"quantization": "int8",
                          "representative_data": lambda: ([s[None]] for s in samples),
                          "per_channel": not args.per_tensor}  # fmt: skip
            print(export(model, args.prefix, **kwargs).markdown())
        elif args.command == "decode":
            model = sidecar.join(Path(args.skeleton).read_bytes(), Path(args.sidecar).read_bytes())
            output = Path(args.output)
            if output.resolve() in (Path(args.skeleton).resolve(), Path(args.sidecar).resolve()):
                raise sidecar.SidecarError("output would overwrite an input")
            write_atomically({output: model})
            print(f"{output}: {len(model)} bytes, SHA-256 verified")
        else:
            info, entries = sidecar.read_header(Path(args.sidecar).read_bytes())
            print(json.dumps(info, indent=1))
            print(
                f"{'#':>4} {'offset':>10} {'length':>10} {'payload':>10} {'elem':>4} {'enc':>3} "
                f"{'ratio':>7}"
            )
            for i, e in enumerate(entries):
                ratio = e.length / (e.payload_size + 4)
                print(
                    f"{i:>4} {e.offset:>10} {e.length:>10} {e.payload_size:>10} "
                    f"{e.elem_size:>4} {e.encoding:>3} {ratio:>7.2f}"
                )
    except (OSError, ValueError) as err:  # SidecarError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
