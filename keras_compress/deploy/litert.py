"""Running ``.tflite`` models in LiteRT's interpreter (``ai_edge_litert``), as a device would.

TensorFlow's own ``tf.lite.Interpreter`` is deprecated in favour of the ``ai-edge-litert``
package; every place in keras_compress that runs a ``.tflite`` goes through here.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np


def interpreter(model: bytes, num_threads: int | None = None, delegates: bool = True):
    """A LiteRT ``Interpreter`` for the model's bytes, tensors allocated.

    ``delegates=False``: LiteRT's builtin kernels only, without the default XNNPACK delegate.

    Example:
        >>> it = interpreter(open("out/lenet5.tflite", "rb").read())  # doctest: +SKIP
        >>> it.get_signature_list()  # doctest: +SKIP
        {'serving_default': {'inputs': ['input_layer'], 'outputs': ['output_0']}}
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType  # maintained LiteRT

    kernels = {} if delegates else {
        "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    }  # fmt: skip
    it = Interpreter(model_content=bytes(model), num_threads=num_threads, **kernels)
    it.allocate_tensors()
    return it


def run(
    model: bytes,
    inputs: np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray],
    num_threads: int | None = None,
    dequantize: bool = True,
) -> list[np.ndarray]:
    """The model's outputs on a batch of inputs, through its serving signature.

    A full-integer model (``kc.export(..., quantization="int8")``) takes and returns int8
    tensors: float inputs are quantized with each input's own scale and zero point (rounded,
    clipped to the type's range), and its outputs come back dequantized to float32, so that
    they compare with the Keras model's. Integer inputs are passed as they are (token ids, or
    inputs already quantized).

    Args:
        model: ``.tflite`` bytes (``kc.export`` writes them through Keras's LiteRT export,
            whose signature names each input after the Keras model's ``Input``).
        inputs: one array (or a list of one) for a single-input model; ``{input name:
            array}`` for several (the names of the Keras model's ``Input`` layers, which its
            signature keeps; not a list, whose order the ``.tflite`` cannot check); the first
            axis is the batch.
        num_threads: LiteRT's CPU threads (``None``: its default).
        dequantize: return a quantized output as float32 (``(q - zero_point) * scale``);
            ``False``: as the interpreter gives it.

    Returns:
        The outputs in signature order (``output_0``, ``output_1``, ...), batch first. A model
        converted with a fixed batch of 1 runs one example at a time.

    Raises:
        ValueError: inputs that do not match the signature's names or count, or a list for
            several inputs.

    Example:
        >>> outputs = run(model_bytes, x_test[:8])  # doctest: +SKIP
        >>> outputs[0].shape  # doctest: +SKIP
        (8, 10)
    """
    runner = interpreter(model, num_threads).get_signature_runner()
    details = runner.get_input_details()
    names = sorted(details)
    if isinstance(inputs, Mapping):
        feed = {str(k): np.asarray(v) for k, v in inputs.items()}
    else:
        arrays = [inputs] if isinstance(inputs, np.ndarray) else [np.asarray(a) for a in inputs]
        if len(names) > 1:
            # The .tflite keeps no trace of the Keras model's input order (the signature lists
            # its inputs by name, the subgraph in the converter's order): a list could feed
            # two inputs of one shape to each other's places, silently.
            raise ValueError(
                f"the model takes {len(names)} inputs ({', '.join(names)}); pass them by name, "
                "{input name: array}: a .tflite does not keep the Keras model's input order"
            )
        feed = dict(zip(names, arrays)) if len(arrays) == len(names) else {}
    if sorted(feed) != names:
        got = sorted(feed) if isinstance(inputs, Mapping) else f"{len(arrays)} array(s)"
        raise ValueError(f"the model's signature takes inputs {names}; got {got}")
    feed = {k: _quantized(v, details[k]) for k, v in feed.items()}
    batch = len(next(iter(feed.values())))
    fixed = all(d["shape_signature"][0] == 1 for d in details.values()) and batch != 1
    rows = [{k: v[i : i + 1] for k, v in feed.items()} for i in range(batch)] if fixed else [feed]
    try:
        results = [runner(**row) for row in rows]
    except RuntimeError as error:
        if "XNNPACK" not in str(error):
            raise
        # XNNPACK refuses some valid int8 models when it builds its runtime, after accepting
        # each node: requantization scales out of its range, such as a layer's output that was
        # zero on all calibration data (a dead ReLU) and got a near-zero scale
        # (tensorflow/tensorflow#77293). LiteRT's builtin kernels run them.
        warnings.warn(
            f"LiteRT's XNNPACK delegate cannot run this model ({error}); it ran on LiteRT's "
            "builtin kernels instead. A device's default interpreter fails the same way: run "
            "it there without the XNNPACK delegate (docs/export.md)",
            stacklevel=2,
        )
        runner = interpreter(model, num_threads, delegates=False).get_signature_runner()
        results = [runner(**row) for row in rows]
    order = sorted(results[0], key=lambda name: (len(name), name))  # output_2 before output_10
    outputs = {name: np.concatenate([r[name] for r in results]) for name in order}
    if dequantize:
        out_details = runner.get_output_details()
        for name, value in outputs.items():
            scale, zero = out_details[name]["quantization"]
            if scale and np.issubdtype(value.dtype, np.integer):
                outputs[name] = ((value.astype(np.float32) - zero) * scale).astype(np.float32)
    return list(outputs.values())


def _quantized(value: np.ndarray, detail: dict) -> np.ndarray:
    """``value`` in the input's type: float into a quantized input goes through its scale."""
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail["quantization"]
    if scale and np.issubdtype(dtype, np.integer) and np.issubdtype(value.dtype, np.floating):
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale + zero), info.min, info.max).astype(dtype)
    return value.astype(dtype, copy=False)
