"""What every keras_compress wrapper shares: the one test for it, ``strip``, and weight keys."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import keras

from keras_compress.core.graph import keras_mask, stateless_scope
from keras_compress.core.rewrite import fresh_copy, rewrite_model
from keras_compress.core.weights import compressible_variables, relative_path


class CompressionWrapper(keras.layers.Wrapper):
    """Base of ``PruningWrapper`` and ``WeightSharingWrapper``; not used directly.

    It builds the wrapped layer, finds the weights to compress (``self.compressed_variables``,
    with their paths below the layer in ``self.weight_paths``), passes Keras masks through, and
    strips back to a plain layer. Subclasses add their state in ``build`` and report the
    weights as the model computes with them in ``compressed_weights``.

    Args:
        layer: the layer to wrap.
        weights: names of the variables to compress (``None``: the weight matrices, see
            ``keras_compress.core.weights``).
        **kwargs: passed to ``keras.layers.Wrapper``.

    Example:
        >>> import keras_compress as kc
        >>> issubclass(kc.PruningWrapper, CompressionWrapper)
        True
    """

    def __init__(self, layer: keras.layers.Layer, weights: Sequence[str] | None = None, **kwargs):
        super().__init__(layer, **kwargs)
        self.weight_names = list(weights) if weights is not None else None
        self.supports_masking = layer.supports_masking

    def __call__(self, *args, **kwargs):
        """Keras's ``__call__``, after building a layer that needs several input shapes.

        Keras builds a wrapper from its first input's shape alone; a layer whose ``build``
        takes several (MultiHeadAttention: query and value) is built by one call of its own.
        """
        if not self.built and not self.layer.built and _needs_several_shapes(self.layer):
            accepted = inspect.signature(self.layer.call).parameters
            self.layer(*args, **{k: v for k, v in kwargs.items() if k in accepted})
        return super().__call__(*args, **kwargs)

    def get_build_config(self) -> dict | None:
        """Keras's build config, plus the wrapped layer's where it is built from several shapes."""
        config = super().get_build_config()
        if config is not None and _needs_several_shapes(self.layer) and self.layer.built:
            config["layer"] = self.layer.get_build_config()
        return config

    def build_from_config(self, config: dict) -> None:
        """Build the wrapped layer from its own config first where it has one (see above)."""
        if "layer" in config and not self.layer.built:
            self.layer.build_from_config(config["layer"])
        super().build_from_config(config)

    def _build_layer(self, input_shape) -> list[keras.Variable]:
        """Build the wrapped layer; return the variables to compress (error if none)."""
        if not self.layer.built:
            self.layer.build(input_shape)
        variables = compressible_variables(self.layer, self.weight_names)
        if not variables:
            wanted = self.weight_names or "the default weight matrices"
            raise ValueError(
                f"layer {self.layer.name!r} ({type(self.layer).__name__}) has no trainable "
                f"weights named {wanted}; name its weights with weights=[...]"
            )
        self.weight_paths = [relative_path(self.layer, v) for v in variables]
        self.compressed_variables = variables
        return variables

    def _call_layer(self, inputs, args, training, kwargs, values=()):
        """Call the wrapped layer, ``values`` (``[(variable, tensor)]``) standing in for weights.

        The substitution is a ``keras.StatelessScope`` that also sees every other variable as
        the enclosing scope does (the JAX trainer's traced state) and hands the layer's own
        updates and losses on to it, or, outside any scope, to the variables and this layer.

        A wrapper's ``call`` takes no ``mask`` argument of its own: Keras would record
        ``mask=None`` in every node of a wrapped Dense or convolution, and a node with keyword
        arguments takes Keras's slow path each time it runs (about 1% of a PyTorch
        LeNet-300-100 step). A mask passed explicitly arrives in ``kwargs``; otherwise the
        wrapped layer's own ``__call__`` finds the mask attached to ``inputs``, as Keras does
        for any layer (``_invoke`` does the same where it calls ``call`` directly).
        """
        # Only layers whose call takes a mask get one (LSTM does, Dense does not; Keras's own
        # __call__ would reject it for Dense behind a masking Embedding).
        mask = kwargs.pop("mask", None)
        if mask is not None and "mask" in self.layer.call_signature_parameters:
            kwargs["mask"] = mask
        # `training` reaches the layer through Keras's call context anyway; passed to a call
        # that does not take it (Dense's), it only sends Layer.__call__ down its slow path,
        # which cost PyTorch's eager step 0.2 ms per wrapped layer.
        if training is not None and "training" in self.layer.call_signature_parameters:
            kwargs["training"] = training
        if not values:
            return self._invoke(inputs, args, kwargs)
        outer = stateless_scope()
        scope = keras.StatelessScope(state_mapping=values, collect_losses=True)
        if outer is not None:
            scope.state_mapping = {**outer.state_mapping, **scope.state_mapping}
            scope.collect_losses, scope.losses = outer.collect_losses, outer.losses
        with scope:
            outputs = self._invoke(inputs, args, kwargs)
        substituted = {id(variable) for variable, _ in values}
        for variable in self.layer.variables:
            key = id(variable)
            value = scope.state_mapping.get(key)
            if key in substituted or value is None:
                continue
            if outer is not None:
                outer.add_update((variable, value))
            else:  # only updates are in the mapping
                variable.assign(value)
        if outer is None:
            for loss in scope.losses:
                self.add_loss(loss)
        return outputs

    def _invoke(self, inputs, args: tuple, kwargs: dict):
        """``self.layer(inputs, *args, **kwargs)``, or its ``call`` where that is the same.

        PyTorch runs ``fit`` eagerly, so each ``Layer.__call__`` costs its bookkeeping (input
        conversion, call context, masks) at every step: about 0.27 ms per wrapped layer, a
        sixth of a LeNet-300-100 training step on 2 cores; TensorFlow and JAX trace the step
        once. The wrapper's own ``__call__`` has just done that bookkeeping under the same
        dtype policy, so on PyTorch the wrapped layer's ``call`` runs directly when the layer
        is built, takes one tensor (and at most ``mask`` and ``training``), computes in its
        variables' dtype and has no activity regularizer.
        """
        layer = self.layer
        direct = (
            keras.backend.backend() == "torch"
            and layer.built
            and not args
            and kwargs.keys() <= {"mask", "training"}
            and keras.ops.is_tensor(inputs)
            and layer.dtype_policy.name == self.dtype_policy.name
            and layer.compute_dtype == layer.variable_dtype
            and layer.activity_regularizer is None
        )
        if not direct:
            return layer(inputs, *args, **kwargs)
        if "mask" in layer.call_signature_parameters and "mask" not in kwargs:
            mask = keras_mask(inputs)  # what Layer.__call__ would have passed
            if mask is not None:
                kwargs["mask"] = mask
        return layer.call(inputs, **kwargs)

    def compute_mask(self, inputs, previous_mask=None):
        """Keras masking passes through to the wrapped layer (Embedding(mask_zero=True))."""
        return self.layer.compute_mask(inputs, previous_mask)

    def compressed_weights(self) -> list[tuple[str, object]]:
        """``(path, value)`` of each compressed weight as the model computes with it."""
        raise NotImplementedError

    def strip_layer(self):
        """A plain copy of the wrapped layer and a function loading the compressed values.

        Used by ``keras_compress.core.wrapper``; returns ``(layer, load)``.
        """
        plain = fresh_copy(self.layer)
        values = dict(self.compressed_weights())

        def load():
            paths = [relative_path(self.layer, v) for v in self.layer.weights]
            plain.set_weights(
                [
                    values.get(p, keras.ops.convert_to_numpy(v))
                    for p, v in zip(paths, self.layer.weights)
                ]
            )

        return plain, load

    def get_config(self) -> dict:
        """Serializable config: the wrapped layer and the compressed weight names."""
        return {**super().get_config(), "weights": self.weight_names}


def _needs_several_shapes(layer: keras.layers.Layer) -> bool:
    """Whether ``layer.build`` takes more than one required shape (MultiHeadAttention's does)."""
    parameters = inspect.signature(layer.build).parameters.values()
    required = [p for p in parameters if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
    return len(required) > 1


def is_wrapper(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is a keras_compress wrapper (not one of Keras's own wrappers).

    Example:
        >>> import keras_compress as kc
        >>> is_wrapper(kc.PruningWrapper(keras.layers.Dense(2)))
        True
        >>> is_wrapper(keras.layers.TimeDistributed(keras.layers.Dense(2)))
        False
    """
    return isinstance(layer, CompressionWrapper)


def unwrap(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The layer a keras_compress wrapper holds; any other layer (Keras's wrappers too) itself.

    Example:
        >>> import keras_compress as kc
        >>> unwrap(kc.PruningWrapper(keras.layers.Dense(2, name="fc"))).name
        'fc'
    """
    return layer.layer if is_wrapper(layer) else layer


def weight_key(layer: keras.layers.Layer, variable: keras.Variable) -> str:
    """The one name of a weight everywhere in keras_compress: ``"<layer>/<path below it>"``.

    ``layer`` is the model's layer that owns ``variable``; keras_compress wrappers are seen
    through (a pruned ``fc1`` still names its kernel ``"fc1/kernel"``), Keras's own wrappers
    are not (``"td/fc/kernel"`` for ``TimeDistributed(Dense(name="fc"), name="td")``,
    ``"bi/forward_lstm/lstm_cell/kernel"`` in a ``Bidirectional`` named ``"bi"``). Reports,
    Hessians, pruning classes and sharing all use these keys.

    Example:
        >>> td = keras.layers.TimeDistributed(keras.layers.Dense(2, name="fc"), name="td")
        >>> td.build((None, 5, 3))
        >>> weight_key(td, td.layer.kernel)
        'td/fc/kernel'
    """
    inner = unwrap(layer)
    return f"{inner.name}/{relative_path(inner, variable)}"


def strip(model: keras.Model) -> keras.Model:
    """Return a copy of ``model`` with every keras_compress wrapper replaced by its plain layer.

    The compressed weights (pruned zeros, shared values) are kept; masks, codebooks and step
    counters are dropped. The result is uncompiled and depends on Keras alone, so
    ``keras.models.load_model`` reads it without keras_compress installed.

    Args:
        model: a Sequential or functional model, wrapped or not.

    Returns:
        The plain model (a new object; ``model`` is not changed).

    Example:
        >>> import keras_compress as kc
        >>> model = kc.make_prunable(kc.examples.lenet_300_100())
        >>> [type(layer).__name__ for layer in strip(model).layers]
        ['Flatten', 'Dense', 'Dense', 'Dense']
    """

    def transform(layer):
        return layer.strip_layer() if is_wrapper(layer) else None

    return rewrite_model(model, transform)
