"""Rebuild a Sequential or functional model with some layers replaced, weights carried over."""

from __future__ import annotations

import inspect
import tempfile
from collections.abc import Callable

import keras
import numpy as np

from keras_compress.core.graph import call_arguments, is_functional, model_input
from keras_compress.core.weights import relative_path

#: The variables LoRA adds a low-rank product to (``merge_lora``): kernels and embeddings.
MERGED_BY_LORA = ("kernel", "embeddings")

#: ``transform(layer)`` returns ``None`` to copy the layer unchanged, or ``(new_layer, load)``
#: where ``load()`` copies the weights into ``new_layer`` once the new model is built.
LayerTransform = Callable[[keras.layers.Layer], "tuple[keras.layers.Layer, Callable] | None"]


def fresh_copy(
    layer: keras.layers.Layer, edit: Callable[[dict], None] | None = None
) -> keras.layers.Layer:
    """An unbuilt layer with the same config (and so the same name) as ``layer``.

    Args:
        layer: the layer to copy.
        edit: changes the config in place before the copy is made (``unroll``, a dtype policy).

    Raises:
        TypeError: the layer cannot be rebuilt from its ``get_config()``; names it and why.

    Example:
        >>> fresh_copy(keras.layers.Dense(3, name="fc")).name
        'fc'
        >>> fresh_copy(keras.layers.Dense(3), lambda config: config.update(units=5)).units
        5
    """
    edit = edit or (lambda config: None)
    if type(layer) is keras.layers.Lambda:
        # Its config holds the function as bytecode (a lambda) or a name (a def): Keras
        # refuses the first in safe mode and cannot find an unregistered second. The copy is
        # of a live layer of this process, so it takes the function object itself.
        base = keras.layers.Layer.get_config(layer)  # name, trainable, dtype
        edit(base)
        return keras.layers.Lambda(layer.function, layer._output_shape, layer.mask,
                                   layer.arguments, **base)  # fmt: skip
    config = layer.get_config()
    edit(config)
    try:
        return layer.__class__.from_config(config)
    except Exception as error:  # from_config raises what the layer's __init__ raises
        cause = error
        while cause.__cause__ or cause.__context__:  # Keras wraps the __init__ error
            cause = cause.__cause__ or cause.__context__
        first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise TypeError(
            f"layer {layer.name!r} ({type(layer).__name__}) cannot be rebuilt from its "
            f"config ({first_line}); keras_compress rebuilds models from each layer's "
            "get_config(), as keras.models.clone_model does: give the layer a get_config() that "
            "returns its __init__ arguments (see Keras's serialization guide)"
        ) from error


def copy_state(source: keras.layers.Layer, target: keras.layers.Layer) -> None:
    """Give ``target``, a fresh copy of ``source`` (a layer or a whole model), its state.

    The weights, and what Keras's own saving restores beside them for the layers that
    ``adapt()``: the state they derive from their variables (an adapted ``Normalization``
    divides by a mean and variance it rebuilds only in ``load_own_variables``; after
    ``set_weights`` alone it keeps the fresh layer's zeros and ones) and their assets (an
    adapted ``IntegerLookup``'s vocabulary, which no weight holds). Copied as Keras's saving
    does: ``save_own_variables``/``load_own_variables``, then ``save_assets``/``load_assets``.

    Example:
        >>> norm = keras.layers.Normalization()
        >>> norm.adapt(np.array([[1.0], [3.0]]))
        >>> copy = fresh_copy(norm)
        >>> copy.build((None, 1))
        >>> copy_state(norm, copy)
        >>> float(copy(np.array([[3.0]]))[0, 0])
        1.0
    """
    target.set_weights(source.get_weights())
    if isinstance(source, keras.Model):
        pairs = zip(iter_layers(source), iter_layers(target), strict=True)
    else:
        pairs = [(source, target)]
    for old, new in pairs:
        if not (hasattr(old, "finalize_state") or hasattr(old, "save_assets")):
            continue  # no state beside its weights: not one of Keras's adapt()able layers
        store: dict = {}
        old.save_own_variables(store)
        # Copies: the values are the old variables' own buffers, which JAX may donate.
        new.load_own_variables({key: np.array(value) for key, value in store.items()})
        if hasattr(old, "save_assets"):
            with tempfile.TemporaryDirectory() as folder:
                old.save_assets(folder)
                new.load_assets(folder)


def quantized_note(model: keras.Model) -> str:
    """A sentence naming the layers Keras quantized in ``model`` (nested ones too), or ``""``.

    ``model.quantize("int8")`` (or ``"int4"``, ``"float8"``, GPTQ) turns a layer's kernel into a
    frozen integer variable and a scale: keras_compress compresses float weights, and TFLite's
    converter takes no such layer. Errors about such a model end with this note.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> model.quantize("int8")
        >>> quantized_note(model)[:60]
        'layers fc were quantized by Keras (model.quantize): their ke'
    """
    names = [layer.name for layer in iter_layers(model)
             if getattr(layer, "quantization_mode", None)]  # fmt: skip
    if not names:
        return ""
    return (
        f"layers {', '.join(names)} were quantized by Keras (model.quantize): their kernels are "
        "frozen integers, which keras_compress does not compress and TFLite's converter does "
        "not take; compress the float model and quantize at export "
        "(kc.export(..., quantization='int8', representative_data=...))"
    )


def has_lora(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` has LoRA enabled (``layer.enable_lora(rank)``; see ``merge_lora``).

    Example:
        >>> dense = keras.layers.Dense(2)
        >>> dense.build((None, 3))
        >>> has_lora(dense), dense.enable_lora(1), has_lora(dense)
        (False, None, True)
    """
    return bool(getattr(layer, "lora_enabled", False))


def refuse_lora(layers, action: str) -> None:
    """Raise unless no layer of ``layers`` has LoRA enabled: ``action`` edits kernels in place.

    Raises:
        ValueError: naming the LoRA layers and ``merge_lora``.

    Example:
        >>> refuse_lora([keras.layers.Dense(2)], "pruning by OBS")
    """
    names = [layer.name for layer in layers if has_lora(layer)]
    if names:
        raise ValueError(
            f"layers {', '.join(names)} have LoRA enabled: their kernels are frozen and they "
            f"compute with kernel + lora_a @ lora_b, which {action} cannot change in place; "
            "merge first: model = kc.core.merge_lora(model)"
        )


def merge_lora(model: keras.Model) -> keras.Model:
    """A copy of ``model`` whose LoRA-enabled layers are plain layers holding the merged kernel.

    A layer with LoRA enabled (``layer.enable_lora(rank)``: Dense, EinsumDense, Embedding,
    convolutions) computes with ``kernel + alpha / rank * lora_a @ lora_b`` while its
    ``kernel`` itself is frozen, so pruning, sharing, folding or slicing ``kernel`` would work
    on a tensor the layer does not compute with. The functions that rebuild a model
    (``make_prunable``, ``share_weights``, ``fold_batchnorm``, ``remove_units``,
    ``remove_pruned_channels``) call this first and work on the merged kernel, which the copy
    trains directly (as before LoRA was enabled); those that change kernels in place
    (``rate_regularize``, ``obs_prune_model``) ask for it (``refuse_lora``). The merged value
    is Keras's own (the layer's ``kernel`` or ``embeddings`` property); outputs are unchanged
    up to float rounding. ``model`` itself is returned when no layer has LoRA enabled.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> model.get_layer("fc").enable_lora(1)
        >>> [w.name for w in merge_lora(model).get_layer("fc").weights]
        ['kernel', 'bias']
    """

    def drop_lora(config: dict) -> None:
        config.pop("lora_rank", None)
        config.pop("lora_alpha", None)

    def transform(layer: keras.layers.Layer):
        if not has_lora(layer):
            return None
        new = fresh_copy(layer, drop_lora)

        def load() -> None:
            # the properties kernel/embeddings give LoRA's merged tensor (Keras's own sum);
            # copies, as in copy_state (JAX donates the buffers a variable is assigned)
            source = {relative_path(layer, v): v for v in layer.weights}
            new.set_weights([
                np.array(keras.ops.convert_to_numpy(
                    getattr(layer, name) if (name := relative_path(new, v)) in MERGED_BY_LORA
                    else source[name]
                ))
                for v in new.weights
            ])  # fmt: skip

        return new, load

    if not any(map(has_lora, iter_layers(model))):
        return model
    return rewrite_model(model, transform)


def check_rebuildable(model) -> None:
    """Raise unless ``model`` is a built Sequential or functional ``keras.Model``.

    Raises:
        TypeError: not a ``keras.Model``, or a subclassed one, or one holding a subclassed one
            at any depth (their graphs cannot be rebuilt).
        ValueError: the model is not built (no ``Input`` and never called).

    Example:
        >>> check_rebuildable(keras.Sequential([keras.layers.Dense(2)], name="net"))
        Traceback (most recent call last):
        ...
        ValueError: model 'net' is not built; call it on data or give it an Input
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model, got {type(model).__name__}")
    if not is_functional(model):
        raise TypeError(
            f"model {model.name!r} is a subclassed keras.Model; only Sequential and functional "
            "models can be rebuilt. Wrap its layers yourself or build it functionally."
        )
    if not model.built:
        raise ValueError(f"model {model.name!r} is not built; call it on data or give it an Input")
    for layer in model.layers:
        if isinstance(layer, keras.Model) and not is_functional(layer):
            raise TypeError(
                f"model {model.name!r} holds {layer.name!r}, a subclassed keras.Model "
                f"({type(layer).__name__}); only Sequential and functional models, nested ones "
                "included, can be rebuilt. Build that part functionally (or as a Sequential)."
            )
        if isinstance(layer, keras.Model):
            check_rebuildable(layer)


def rewrite_model(model: keras.Model, transform: LayerTransform) -> keras.Model:
    """Clone ``model`` (recursing into nested models), replacing layers as ``transform`` says.

    The input model is left untouched: every layer of the result is new and holds a copy of
    the weights. The result is not compiled.

    Args:
        model: a built ``keras.Sequential`` or functional ``keras.Model``.
        transform: see ``LayerTransform``.

    Returns:
        The new model.

    Raises:
        TypeError: ``model`` is a subclassed model, whose graph cannot be rebuilt.

    Example:
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        >>> rewrite_model(model, lambda layer: None).count_params()
        8
    """
    check_rebuildable(model)
    loads: list[Callable[[], None]] = []

    def clone_graph(graph: keras.Model) -> keras.Model:
        # Nested models are cloned here rather than by clone_model(recursive=True), which
        # passes no call_function below a Sequential (Sequential takes none): a functional
        # backbone inside a Sequential classifier needs _call_dropping_mask too.
        functional = not isinstance(graph, keras.Sequential)
        extra = {"call_function": _call_dropping_mask} if functional else {}
        return keras.models.clone_model(graph, clone_function=clone, **extra)

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.Model):
            return clone_graph(layer)
        if not isinstance(layer, keras.layers.Layer):
            # A keras.ops call of the graph (x + 3.0, a padding mask's NotEqual): stateless,
            # copied all the same, or the new graph's calls would be nodes of the input's.
            return fresh_copy(layer)
        replaced = transform(layer)
        if replaced is None:
            new = fresh_copy(layer)
            loads.append(lambda: copy_state(layer, new))
            return new
        new, load = replaced
        loads.append(load)
        return new

    new_model = clone_graph(model)
    for load in loads:
        load()
    return new_model


def _call_dropping_mask(layer: keras.layers.Layer, *args, **kwargs):
    # A functional model replays each node's recorded keyword arguments. A wrapper's call
    # takes `mask`; the plain layer that replaces it (or the wrapper replacing a plain layer)
    # may not, and Keras still propagates masks by itself, so drop an argument it cannot take.
    if "mask" in kwargs:
        parameters = inspect.signature(layer.call).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        if "mask" not in parameters and not takes_any:
            kwargs.pop("mask")
    return layer(*args, **kwargs)


def iter_layers(model: keras.Model):
    """Yield every layer of ``model``, recursing into nested models (not into wrappers).

    Example:
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> outer = keras.Sequential([keras.Input((3,)), inner])
        >>> [layer.name for layer in iter_layers(outer)]
        ['fc']
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        else:
            yield layer


def iter_models(model: keras.Model):
    """Yield every Sequential or functional model nested in ``model``, at any depth.

    Example:
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="inner")
        >>> outer = keras.Sequential([keras.Input((3,)), inner])
        >>> [m.name for m in iter_models(outer)]
        ['inner']
    """
    for layer in model.layers:
        if isinstance(layer, keras.Model) and is_functional(layer):
            yield layer
            yield from iter_models(layer)


def find_layer(model: keras.Model, name: str) -> tuple[keras.Model, keras.layers.Layer]:
    """The layer named ``name`` in ``model`` or a model nested in it, and the model holding it.

    Raises:
        ValueError: no such layer, or the name is in several of the models.

    Example:
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")],
        ...                          name="inner")
        >>> graph, layer = find_layer(keras.Sequential([keras.Input((3,)), inner]), "fc")
        >>> graph.name, layer.name
        ('inner', 'fc')
    """
    homes = [(graph, layer) for graph in (model, *iter_models(model)) for layer in graph.layers
             if layer.name == name]  # fmt: skip
    if not homes:
        raise ValueError(f"model {model.name!r} has no layer {name!r}, nor has a model in it")
    if len(homes) > 1:
        raise ValueError(
            f"layer name {name!r} is in several models ({', '.join(g.name for g, _ in homes)})"
        )
    return homes[0]


def lift(model: keras.Model, graph: keras.Model, tensors):
    """Symbolic ``tensors`` of ``graph``, a model nested in ``model``, as tensors of ``model``.

    Each model on the way is replayed (its layers, not copies) on what it was called on, so
    ``keras.Model(model_input(model), lift(model, graph, t))`` computes ``t`` from the outer
    model's inputs: an inner layer's activations for APoZ, its inputs for OBS.

    Raises:
        ValueError: ``graph`` is not ``model`` nor nested in it, or a model on the way is called
            more than once.

    Example:
        >>> inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")])
        >>> outer = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3), inner])
        >>> tuple(lift(outer, inner, inner.get_layer("fc").input).shape)
        (None, 3)
    """
    if graph is model:
        return tensors
    for sub in model.layers:
        if isinstance(sub, keras.Model) and is_functional(sub):
            if sub is graph or any(g is graph for g in iter_models(sub)):
                inner = lift(sub, graph, tensors)
                args, kwargs = call_arguments(sub)
                return keras.Model(model_input(sub), inner)(*args, **kwargs)
    raise ValueError(f"model {graph.name!r} is not nested in model {model.name!r}")
