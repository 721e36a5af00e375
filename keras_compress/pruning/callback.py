"""The ``MagnitudePruning`` callback: prunes the wrapped layers of a model during ``fit``."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
from keras import ops

from keras_compress.core.graph import channels_first, in_out_view, output_owners, step_layer
from keras_compress.core.selectors import LayerSelector, selects, selects_any
from keras_compress.core.weights import optimizer_slots
from keras_compress.core.wrapper import weight_key
from keras_compress.pruning.masks import CRITERIA, compute_masks, load_balanced_masks, pe_groups
from keras_compress.pruning.prunable import pruning_wrappers
from keras_compress.pruning.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
)
from keras_compress.pruning.structure import group_scores, n_of_m_mask, parse_structure
from keras_compress.pruning.wrapper import PruningWrapper, constraint_masks, step_counter

SPARSITY_CRITERIA = ("class_blind", "class_uniform", "class_distribution", "lamp")


def _unremovable(layer: keras.layers.Layer) -> str:
    """Why ``remove_pruned_channels`` cannot remove ``layer``'s channels, or ``""``."""
    if channels_first(layer):
        return "channels_first"
    if getattr(step_layer(layer), "groups", 1) != 1:
        return "a grouped convolution"
    return ""


@dataclass
class _WeightClass:
    """A weight class (See et al. 2016): variables pruned under one rule, with their masks."""

    name: str
    members: list[tuple[keras.Variable, keras.Variable]] = field(default_factory=list)
    scale: float = 1.0  # this class's final level / the schedule's final level
    member_names: list[str] = field(default_factory=list)
    member_layers: list[keras.layers.Layer] = field(default_factory=list)

    def selected_by(self, selector: LayerSelector) -> bool:
        """Whether ``selector`` names this class or picks any of its weights."""
        return selector == self.name or any(
            selects(selector, layer, key)
            for layer, key in zip(self.member_layers, self.member_names)
        )

    def pe_groups(self, num_pe: int) -> np.ndarray:
        """Each member weight's processing element (ESE's row interleaving), concatenated.

        Rows are a kernel's outputs: a transposed convolution's filters, on its axis -2.
        """
        groups = []
        for (variable, _), layer in zip(self.members, self.member_layers):
            shape = in_out_view(layer, np.broadcast_to(False, variable.shape)).shape
            groups.append(in_out_view(layer, pe_groups(shape, num_pe)).ravel())
        return np.concatenate(groups)

    def ranking(self, saliency: Mapping[str, np.ndarray]) -> np.ndarray:
        """``sqrt(saliency)`` of the members, concatenated: ranks like the saliency."""
        missing = [name for name in self.member_names if name not in saliency]
        if missing:
            raise ValueError(f"the saliency function gave no scores for {missing}")
        return np.concatenate([np.sqrt(np.maximum(np.ravel(saliency[n]), 0.0))
                               for n in self.member_names])  # fmt: skip

    def read(self) -> tuple[np.ndarray, np.ndarray]:
        members = self.read_members()
        return np.concatenate([w.ravel() for w, _ in members]), np.concatenate(
            [m.ravel() for _, m in members]
        )

    def write(self, mask: np.ndarray, optimizer) -> None:
        splits = np.cumsum([int(np.prod(v.shape)) for v, _ in self.members])[:-1]
        parts = np.split(mask, splits)
        self.write_members(
            [p.reshape(v.shape) for p, (v, _) in zip(parts, self.members)], optimizer
        )

    def read_members(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(weights, mask)`` of each member, in its own shape."""
        return [(ops.convert_to_numpy(v), ops.convert_to_numpy(m)) for v, m in self.members]

    def write_members(self, masks: Sequence[np.ndarray], optimizer) -> None:
        """Set the members' masks; zero their pruned weights (and, on JAX, the optimizer's slots).

        On TensorFlow and PyTorch the mask constraint zeroes a pruned weight after every step,
        whatever its momentum, so only JAX (where the constraint cannot read the mask) needs
        the slots zeroed: elsewhere that would copy every slot to the host and back for nothing.
        """
        zero_slots = not constraint_masks()
        for (variable, mask_var), mask in zip(self.members, masks):
            mask_var.assign(mask)
            slots = optimizer_slots(optimizer, variable).values() if zero_slots else ()
            for target in [variable, *slots]:
                value = ops.convert_to_numpy(target)
                target.assign(np.where(mask, value, 0).astype(value.dtype))


class MagnitudePruning(keras.callbacks.Callback):
    """Prune the ``PruningWrapper`` layers of the model being trained, by weight magnitude.

    Before each training step the callback asks its schedule whether the masks are due; if so
    it recomputes them with the chosen criterion, never reviving a pruned weight, and zeroes
    the pruned weights. Between updates the masks act inside the compiled train step (see
    ``PruningWrapper``). The global sparsity appears in the epoch logs as ``sparsity``.

    All state (masks, the step counter) lives in the model, so a model saved and loaded (or
    restored by ``BackupAndRestore``) continues where it stopped with a new callback built
    from the same arguments.

    Args:
        target: the final level: a sparsity in [0, 1) for the sparsity criteria, Han's quality
            parameter (>= 0) for ``"std"``. Required unless ``schedule`` is a schedule object.
        schedule: ``"polynomial"`` (Zhu & Gupta's cubic ramp from 0 to ``target`` between
            ``begin_step`` and ``end_step``), ``"constant"`` (``target`` from ``begin_step``),
            or a ``PruningSchedule`` such as ``IterativeRounds`` (Han's prune/retrain rounds).
        criterion: ``"class_uniform"`` (each weight class pruned to the level),
            ``"class_blind"`` (one global magnitude threshold), ``"class_distribution"``
            (threshold ``lambda * std`` per class, ``lambda`` solved for the overall level),
            ``"lamp"`` (Lee et al.'s layer-adaptive scores over all classes: the level is
            overall, large classes are pruned more, BatchNorm'd kernels compare fairly) or
            ``"std"`` (Han's threshold ``quality * std`` per class). See ``pruning.masks``.
        begin_step: first step at which weights are pruned (string schedules).
        end_step: where the polynomial ramp ends; ``None``: after 70% of the steps of the
            first ``fit`` call (give it explicitly when resuming with different epochs).
        frequency: steps between mask updates (string schedules).
        layer_targets: per-class final levels, ``{selector: level}``, for ``"class_uniform"``
            and ``"std"``. A selector (``keras_compress.core.selectors``) picks layers or
            weight keys (``"fc1/kernel"``, ``"conv.*"``, ``keras.layers.Dense``), or names a
            group; classes without one take ``target``.
        groups: regroup weight classes, ``{group_name: [selector, ...]}``: the weights the
            selectors pick share one class (by default each weight tensor is one class).
        saliency: rank weights by ``saliency(model)[name]`` (``{"layer/weight": array}``)
            instead of their magnitude, e.g. OBD's ``keras_compress.pruning.saliency.obd_scores``;
            with ``"class_uniform"`` or ``"class_blind"``. Not part of ``get_config``.
        load_balance: ESE's load-balance-aware pruning over this many processing elements
            (32 in the paper): the outputs (last axis) of each weight are interleaved over the
            PEs and each PE's part is pruned to the class's level, so every PE keeps the same
            number of weights. With ``"class_uniform"``.
        structure: prune groups of weights together so that a runtime can skip them (see
            ``keras_compress.pruning.structure``): ``"1x4"``/``"1x16"`` blocks of consecutive
            inputs (LiteRT's sparse fully-connected kernels), ``"2:4"`` (N:M; ``target``
            defaults to ``1 - N/M``), ``"channels"``/``"channels_l2"`` (whole filters by
            L1/L2 norm; then ``remove_pruned_channels``), ``"kernels"`` (each input-output
            pair's spatial kernel: smaller to code). ``None``: each weight on its own.
            Levels count groups. Not with ``"std"``, ``saliency`` or ``load_balance``.

    Raises:
        ValueError: bad levels, criterion or steps (at construction), or a model without
            pruning wrappers or a selector that names no weight class (when ``fit`` starts).

    Example:
        >>> import keras_compress as kc
        >>> model = kc.make_prunable(kc.examples.lenet_300_100())
        >>> model.compile("adam", "sparse_categorical_crossentropy")
        >>> x, y = np.random.rand(64, 28, 28, 1), np.random.randint(0, 10, 64)
        >>> _ = model.fit(x, y, epochs=1, verbose=0,
        ...               callbacks=[kc.MagnitudePruning(0.9, schedule="constant")])
        >>> round(kc.sparsity(model)["total"], 3)
        0.9
    """

    def __init__(
        self,
        target: float | None = None,
        schedule: str | PruningSchedule = "polynomial",
        criterion: str = "class_uniform",
        *,
        begin_step: int = 0,
        end_step: int | None = None,
        frequency: int = 100,
        layer_targets: Mapping[str, float] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        saliency: Callable[[keras.Model], Mapping[str, np.ndarray]] | None = None,
        load_balance: int | None = None,
        structure: str | None = None,
    ):
        super().__init__()
        self.structure = parse_structure(structure)
        if self.structure is not None and self.structure.kind == "n_of_m":
            if target is None and isinstance(schedule, str):
                target = self.structure.level
            if criterion != "class_uniform" or layer_targets:
                raise ValueError(
                    f"an N:M structure ({structure!r}) prunes every kernel to "
                    f"{self.structure.level} in each run of M inputs: use criterion "
                    "'class_uniform', no layer_targets"
                )
        if self.structure is not None and (
            criterion == "std" or saliency is not None or load_balance is not None
        ):
            raise ValueError(
                f"structure {structure!r} ranks groups by magnitude with 'class_uniform', "
                "'class_blind', 'class_distribution' or 'lamp'; not with 'std', saliency or "
                "load_balance"
            )
        self._config = {
            "target": target,
            "schedule": schedule
            if isinstance(schedule, str)
            else keras.saving.serialize_keras_object(schedule),
            "criterion": criterion,
            "begin_step": begin_step,
            "end_step": end_step,
            "frequency": frequency,
            "layer_targets": dict(layer_targets or {}),
            "groups": {name: list(patterns) for name, patterns in (groups or {}).items()},
            "load_balance": load_balance,
            "structure": structure,
        }
        if criterion not in CRITERIA:
            raise ValueError(f"unknown pruning criterion {criterion!r}; choose one of {CRITERIA}")
        if saliency is not None and criterion not in ("class_uniform", "class_blind"):
            raise ValueError(
                f"a saliency ranks weights for 'class_uniform' or 'class_blind', not {criterion!r}"
            )
        self.saliency = saliency
        if load_balance is not None and (criterion != "class_uniform" or load_balance < 1):
            raise ValueError(
                f"load_balance needs criterion 'class_uniform' and a number of processing "
                f"elements >= 1, got {load_balance!r} with {criterion!r}"
            )
        self.load_balance = load_balance
        if isinstance(schedule, PruningSchedule):
            if target is not None:
                raise ValueError("give either target or a schedule object, not both")
            target = schedule.final_level
        elif schedule not in ("polynomial", "constant"):
            raise ValueError(
                f"schedule must be 'polynomial', 'constant' or a PruningSchedule, got {schedule!r}"
            )
        elif target is None:
            raise ValueError("target is required with a string schedule")
        self.criterion, self.target = criterion, float(target)
        fixed = self.structure.level if self.structure is not None else None
        if fixed is not None and abs(self.target - fixed) > 1e-9:
            raise ValueError(
                f"structure {structure!r} means sparsity {fixed}, but the target is {self.target}"
            )
        self.layer_targets = dict(layer_targets or {})
        self.groups = {name: list(patterns) for name, patterns in (groups or {}).items()}
        for level in [self.target, *self.layer_targets.values()]:
            self._check_level(level)
        if self.layer_targets and criterion not in ("class_uniform", "std"):
            raise ValueError(
                f"layer_targets needs criterion 'class_uniform' or 'std'; {criterion!r} sets "
                "one level for all classes"
            )
        if isinstance(schedule, str) and schedule == "constant":
            schedule = ConstantSparsity(self.target, begin_step, end_step, frequency)
        self.schedule = schedule
        self._schedule_args = (begin_step, end_step, frequency)
        self._classes: list[_WeightClass] = []
        self._wrappers: list[PruningWrapper] = []
        self._seen_step: int | None = None
        self._sparsity = 0.0
        self._epoch_base_step = 0

    def _check_level(self, level: float) -> None:
        if self.criterion in SPARSITY_CRITERIA and not 0.0 <= level < 1.0:
            raise ValueError(f"target sparsity must be in [0, 1), got {level}")
        if level < 0.0:
            raise ValueError(f"quality parameter must be >= 0, got {level}")

    def _resolve_schedule(self) -> None:
        if not isinstance(self.schedule, str):
            return
        begin_step, end_step, frequency = self._schedule_args
        if end_step is None:
            steps, epochs = self.params.get("steps"), self.params.get("epochs")
            if not steps or not epochs:
                raise ValueError(
                    "end_step is needed when fit does not know its steps per epoch; pass "
                    "MagnitudePruning(..., end_step=N)"
                )
            end_step = begin_step + max(1, int(0.7 * steps * epochs))
        self.schedule = PolynomialDecay(0.0, self.target, begin_step, end_step, frequency=frequency)

    def _build_classes(self) -> None:
        classes: dict[str, _WeightClass] = {}
        for wrapper in self._wrappers:
            for variable, mask in zip(wrapper.compressed_variables, wrapper.masks):
                name = weight_key(wrapper, variable)
                picked = (g for g, s in self.groups.items() if selects_any(s, wrapper.layer, name))
                group = next(picked, name)
                weight_class = classes.setdefault(group, _WeightClass(group))
                weight_class.members.append((variable, mask))
                weight_class.member_names.append(name)
                weight_class.member_layers.append(wrapper.layer)
        if self.structure is not None:
            for c in classes.values():
                for (variable, _), name, layer in zip(c.members, c.member_names, c.member_layers):
                    if len(variable.shape) < 2:
                        raise ValueError(
                            f"structured pruning needs kernels of rank >= 2; {name} has shape "
                            f"{tuple(variable.shape)}"
                        )
                    if self.structure.kind == "channels" and selects("rnn", layer):
                        raise ValueError(
                            f"structure 'channels' cannot prune the recurrent layer of {name}: "
                            "its kernel's columns are the gates of its units, so pruning them "
                            "removes no unit and no surgery follows. Prune it unstructured or "
                            "in blocks (choose layers with make_prunable(layers=...)), or "
                            "remove units with kc.remove_units"
                        )
        unused = [g for g in self.groups if g not in classes]
        if unused:
            raise ValueError(f"groups {unused} match no pruned weight; classes: {list(classes)}")
        targeted = set()
        for selector, level in self.layer_targets.items():
            hits = [c for c in classes.values() if c.selected_by(selector)]
            if not hits:
                raise ValueError(
                    f"layer_targets key {selector!r} matches no pruned weight; classes: "
                    f"{list(classes)}"
                )
            for c in hits:
                c.scale = level / self.target if self.target > 0 else 0.0
                targeted.add(c.name)
        if self.structure is not None and self.structure.kind == "channels":
            self._spare_output_channels(classes.values(), targeted)
            self._spare_unremovable_channels(classes.values(), targeted)
        self._classes = list(classes.values())
        # Each weight's processing element is fixed by the shapes: worked out once.
        self._pe_groups = (
            [c.pe_groups(self.load_balance) for c in self._classes] if self.load_balance else []
        )

    def _spare_output_channels(self, classes, targeted: set[str]) -> None:
        """Channel pruning leaves the units of the model's output layers (its classes) whole.

        An output layer is one whose units the model outputs (``output_owners``: also behind
        a Softmax layer, or a Flatten and an activation).

        Zeroing a classifier's output unit silences its class, and no surgery can remove a
        model's output: such classes are kept at level 0, with a warning (an explicit
        ``layer_targets`` level for one, or a group mixing one with other layers, is an error).
        """
        outputs = {id(layer) for layer in output_owners(self.model)}  # behind a Softmax too
        owner = {id(w.layer): w for w in self._wrappers}
        spared = []
        for c in classes:
            hit = [layer.name for layer in c.member_layers if id(owner[id(layer)]) in outputs]
            if not hit:
                continue
            if c.name in targeted and c.scale == 0:
                continue  # already left unpruned by the user
            if len(hit) < len(c.member_layers) or c.name in targeted:
                raise ValueError(
                    f"structure 'channels' would zero units of {hit}, outputs of model "
                    f"{self.model.name!r} (a classifier's classes); leave them unpruned: "
                    "take them out of `groups` and `layer_targets`, or out of make_prunable("
                    "model, layers=...)"
                )
            c.scale = 0.0
            spared.append(c.name)
        if spared:
            warnings.warn(
                f"MagnitudePruning(structure='channels') leaves {spared} unpruned: their units "
                f"are outputs of model {self.model.name!r}, which no surgery may remove",
                stacklevel=2,
            )

    def _spare_unremovable_channels(self, classes, targeted: set[str]) -> None:
        """Channel pruning leaves alone the layers whose channels no surgery removes.

        A grouped convolution and a ``channels_first`` layer keep their zero channels through
        ``remove_pruned_channels`` (it reads channels on the last axis, and a group's width
        is fixed), so zeroing them would cost accuracy and save no computation: such classes
        are kept at level 0, with a warning, unless ``layer_targets`` names them.
        """
        spared = []
        for c in classes:
            if c.name in targeted or c.scale == 0:
                continue
            reasons = [_unremovable(layer) for layer in c.member_layers]
            if all(reasons):
                c.scale = 0.0
                spared.append(f"{c.name} ({reasons[0]})")
        if spared:
            warnings.warn(
                f"MagnitudePruning(structure='channels') leaves {', '.join(spared)} unpruned: "
                "no surgery removes their channels (name them in layer_targets to prune them "
                "anyway)",
                stacklevel=2,
            )

    def on_train_begin(self, logs=None):
        """Find the wrappers, form the weight classes and check the configuration."""
        self._wrappers = pruning_wrappers(self.model)
        if not self._wrappers:
            raise ValueError(
                f"model {self.model.name!r} has no PruningWrapper layers: wrap it with "
                "keras_compress.make_prunable(model) before compiling and fitting"
            )
        step_counter(self._wrappers)  # a clear error now if no wrapper counts steps
        if not self._classes:
            self._resolve_schedule()
            self._build_classes()
        self._seen_step = None
        self._sparsity = self._current_sparsity()

    def on_epoch_begin(self, epoch, logs=None):
        """Read the model's step counter once per epoch (not per batch: reading syncs)."""
        self._epoch_base_step = self._step()

    def on_train_batch_begin(self, batch, logs=None):
        """Recompute the masks if the schedule says so (or a step was skipped over)."""
        # ``batch`` is the step index within the epoch, also with steps_per_execution > 1.
        self._advance(self._epoch_base_step + batch)

    def _step(self) -> int:
        """The model's training step counter, read after a sync (see ``_sync``)."""
        self._sync()
        return int(ops.convert_to_numpy(step_counter(self._wrappers).step))

    def _sync(self) -> None:
        """Bring the model's variables up to date before reading or writing them.

        Under JAX, ``fit`` keeps the state in its traced arrays during an epoch; reading
        ``Callback.model`` writes them back to the variables (and makes the next step read the
        variables again), as Keras's own checkpoint callbacks rely on. A no-op elsewhere.
        """
        _ = self.model

    def _advance(self, step: int) -> None:
        """Apply the schedule at ``step`` (training steps done so far)."""
        level = self.schedule.level(step)
        first = self._seen_step is None
        passed = [step] if first else range(self._seen_step + 1, step + 1)
        # An update step that steps_per_execution > 1 jumped over is made up now.
        due = any(self.schedule.should_update(s) for s in passed)
        # Sparsity levels are idempotent, so the first batch of a fit applies the current
        # level (a resumed run continues where it stopped). Han's rule is not: it prunes more
        # each time, so it runs only on the schedule's own update steps. (Between update
        # steps a polynomial level grows every step; it must not trigger an update.)
        catch_up = first and self.criterion != "std" and level > 0
        self._seen_step = step
        if due or catch_up:
            self._update(level)

    def _update(self, level: float) -> None:
        self._sync()
        if self.structure is not None:
            self._update_structured(level)
            return
        read = [c.read() for c in self._classes]
        weights, masks = [w for w, _ in read], [m for _, m in read]
        levels = [level * c.scale for c in self._classes]
        ranked = weights
        if self.saliency is not None:
            scores = self.saliency(self.model)
            ranked = [c.ranking(scores) for c in self._classes]
        if self.load_balance:
            new_masks = load_balanced_masks(ranked, masks, levels, self._pe_groups)
        else:
            new_masks = compute_masks(self.criterion, ranked, masks, levels)
        for c, old, new in zip(self._classes, masks, new_masks):
            if not np.array_equal(old, new):
                c.write(new, self.model.optimizer)
        total = sum(m.size for m in new_masks)
        self._sparsity = 1.0 - sum(int(np.count_nonzero(m)) for m in new_masks) / total

    def _update_structured(self, level: float) -> None:
        """Rank groups (blocks, channels) like weights, or apply N:M within each run."""
        # Structures speak of a kernel's inputs and outputs: a transposed convolution's kernel
        # is viewed with them in Dense's order, and its masks mapped back below.
        members = [[(in_out_view(layer, w), in_out_view(layer, m))
                    for (w, m), layer in zip(c.read_members(), c.member_layers)]
                   for c in self._classes]  # fmt: skip
        if self.structure.kind == "n_of_m":
            s = self.structure
            new = [[n_of_m_mask(w, m, s.n, s.m, level) for w, m in ms] for ms in members]
        else:
            scored = [[group_scores(w, m, self.structure) for w, m in ms] for ms in members]
            scores = [np.concatenate([g[0] for g in gs]) for gs in scored]
            kept = [np.concatenate([g[1] for g in gs]) for gs in scored]
            levels = [level * c.scale for c in self._classes]
            new_kept = compute_masks(self.criterion, scores, kept, levels)
            new = []
            for gs, ms, flat in zip(scored, members, new_kept):
                splits = np.cumsum([len(g[0]) for g in gs])[:-1]
                new.append([m & part[g[2]] for g, (_, m), part in
                            zip(gs, ms, np.split(flat, splits))])  # fmt: skip
        total = kept_count = 0
        for c, ms, masks in zip(self._classes, members, new):
            if any(not np.array_equal(m, n) for (_, m), n in zip(ms, masks)):
                masks = [in_out_view(layer, n) for n, layer in zip(masks, c.member_layers)]
                c.write_members(masks, self.model.optimizer)
            total += sum(n.size for n in masks)
            kept_count += sum(int(np.count_nonzero(n)) for n in masks)
        self._sparsity = 1.0 - kept_count / total

    def _current_sparsity(self) -> float:
        self._sync()
        masks = [c.read()[1] for c in self._classes]
        return 1.0 - sum(int(np.count_nonzero(m)) for m in masks) / sum(m.size for m in masks)

    # No on_train_batch_end: overriding it makes Keras run every batch synchronously.
    def on_epoch_end(self, epoch, logs=None):
        """Log the sparsity in ``History``; after the fit's last step, apply an update due then."""
        # The step after fit's last batch begins no batch, so a ramp ending exactly where fit
        # ends (end_step == steps) is completed here.
        if epoch + 1 == self.params.get("epochs"):
            self._advance(self._step())
        if logs is not None:
            logs["sparsity"] = self._sparsity

    def on_train_end(self, logs=None):
        """Warn if ``fit`` ended before the schedule reached its final level."""
        step, last = self._step(), self.schedule.last_change
        if step < last and self.schedule.level(step) < self.schedule.final_level:
            warnings.warn(
                f"MagnitudePruning: fit ended at step {step} with sparsity {self._sparsity:.3f}; "
                f"the schedule reaches its final level {self.schedule.final_level} at step "
                f"{last} ({last - step} more steps: train longer or lower end_step)",
                stacklevel=2,
            )

    def get_config(self) -> dict:
        """Constructor arguments (a schedule object as its Keras serialization)."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict) -> MagnitudePruning:
        """The callback ``get_config`` describes (``saliency`` is not part of it).

        Example:
            >>> import keras_compress as kc
            >>> callback = MagnitudePruning(schedule=kc.IterativeRounds([0.5, 0.8], 100))
            >>> MagnitudePruning.from_config(callback.get_config()).schedule.final_level
            0.8
        """
        config = dict(config)
        if isinstance(config.get("schedule"), dict):
            config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
