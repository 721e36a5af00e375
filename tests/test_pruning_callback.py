import keras
import numpy as np
import pytest
from helpers import mlp

import keras_compress as kc
from keras_compress.pruning import masks as pm

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


class ZerosStayZero(keras.callbacks.Callback):
    """After every step, every masked weight is exactly +0.0 and no pruned weight regrew."""

    def __init__(self):
        super().__init__()
        self.checked = 0
        self.previous = None

    def on_train_batch_end(self, batch, logs=None):
        zeros = []
        for wrapper in kc.pruning_wrappers(self.model):
            for var, mask in zip(wrapper.compressed_variables, wrapper.masks):
                w, m = var.numpy(), mask.numpy()
                assert np.all(w[~m] == 0) and not np.any(np.signbit(w[~m]))
                zeros.append(w == 0)
        if self.previous is not None:
            for before, now in zip(self.previous, zeros):
                assert np.all(now[before]), "a pruned weight grew back"
        self.previous = zeros
        self.checked += 1


def _compiled(model, optimizer="adam"):
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(True))
    return model


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_pruned_weights_stay_zero_after_every_step(toy_data, optimizer):
    x, y = toy_data
    model = _compiled(kc.make_prunable(mlp()), keras.optimizers.get(optimizer))
    checker = ZerosStayZero()
    schedule = kc.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=30, frequency=5)
    history = model.fit(
        x, y, batch_size=32, epochs=6, verbose=0,
        callbacks=[kc.MagnitudePruning(schedule=schedule), checker],
    )  # fmt: skip
    assert checker.checked == 48
    report = kc.sparsity(model)
    for name, size in (("fc1/kernel", 384), ("fc2/kernel", 512), ("out/kernel", 32)):
        assert report[name] == round(0.8 * size) / size
    assert history.history["sparsity"][-1] == pytest.approx(report["total"])


def test_layer_targets_and_global_sparsity(toy_data):
    x, y = toy_data
    model = _compiled(kc.make_prunable(mlp()))
    callback = kc.MagnitudePruning(
        0.5, schedule="constant", layer_targets={"fc1": 0.9, "out/kernel": 0.25}
    )
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    report = kc.sparsity(model)
    assert report["fc1/kernel"] == pytest.approx(0.9, abs=1 / 384)
    assert report["fc2/kernel"] == pytest.approx(0.5, abs=1 / 512)
    assert report["out/kernel"] == pytest.approx(0.25, abs=1 / 32)
    sizes = {"fc1/kernel": 384, "fc2/kernel": 512, "out/kernel": 32}
    expected_total = sum(report[n] * s for n, s in sizes.items()) / sum(sizes.values())
    assert report["total"] == pytest.approx(expected_total)
    assert all(w.weight_paths == ["kernel"] for w in kc.pruning_wrappers(model))  # no bias masks


@pytest.mark.parametrize(
    "criterion", ["class_blind", "class_uniform", "class_distribution", "lamp"]
)
def test_masks_in_the_model_match_the_numpy_oracle(toy_data, criterion):
    x, y = toy_data
    model = _compiled(kc.make_prunable(mlp()))
    model.fit(x, y, epochs=1, verbose=0)  # the wrapper also trains without the callback
    before = [v.numpy() for w in kc.pruning_wrappers(model) for v in w.compressed_variables]
    ones = [np.ones(w.shape, bool) for w in before]
    oracle = pm.compute_masks(criterion, before, ones, [0.7] * 3)
    callback = kc.MagnitudePruning(0.7, schedule="constant", criterion=criterion)
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    masks = [m.numpy() for w in kc.pruning_wrappers(model) for m in w.masks]
    for got, want in zip(masks, oracle):
        np.testing.assert_array_equal(got, want)
    assert kc.sparsity(model)["total"] == pytest.approx(0.7, abs=1e-3)


def test_groups_merge_weight_classes(toy_data):
    x, y = toy_data
    model = _compiled(kc.make_prunable(mlp()))
    callback = kc.MagnitudePruning(
        0.6, schedule="constant", groups={"hidden": ["fc1/kernel", "fc2/kernel"]}
    )
    before = [v.numpy() for w in kc.pruning_wrappers(model) for v in w.compressed_variables]
    model.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0, callbacks=[callback])
    hidden = pm.class_blind_masks(before[:2], [np.ones(b.shape, bool) for b in before[:2]], 0.6)
    masks = [m.numpy() for w in kc.pruning_wrappers(model) for m in w.masks]
    np.testing.assert_array_equal(masks[0], hidden[0])
    np.testing.assert_array_equal(masks[1], hidden[1])
    assert (~masks[2]).mean() == pytest.approx(0.6, abs=1 / 32)


def test_han_iterative_rounds_prune_more_each_round(toy_data):
    x, y = toy_data
    model = _compiled(kc.make_prunable(mlp()))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(kc.sparsity(model)["total"])
    )
    rounds = kc.IterativeRounds([0.5, 1.0, 1.5], steps_per_round=8)  # 8 steps = 1 epoch
    model.fit(
        x, y, batch_size=32, epochs=4, verbose=0,
        callbacks=[kc.MagnitudePruning(schedule=rounds, criterion="std"), record],
    )  # fmt: skip
    # Glorot-uniform weights: |w| < 0.5 std holds for 0.5 / sqrt(3) = 29% of them.
    assert 0.25 < seen[0] < seen[1] < seen[2] == seen[3]


def test_sparsity_is_in_the_fit_logs(toy_data):
    x, y = toy_data
    model = _compiled(kc.make_prunable(mlp()))
    history = model.fit(
        x, y, epochs=2, verbose=0, callbacks=[kc.MagnitudePruning(0.5, end_step=10, frequency=2)]
    )
    assert history.history["sparsity"][-1] == pytest.approx(0.5, abs=1e-3)


def test_default_end_step_ramps_over_seventy_percent_of_the_fit(toy_data):
    x, y = toy_data
    model = _compiled(kc.make_prunable(mlp()))
    callback = kc.MagnitudePruning(0.8, frequency=1)
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[callback])
    assert callback.schedule.end_step == 28  # 0.7 * 8 steps * 5 epochs
    assert kc.sparsity(model)["total"] == pytest.approx(0.8, abs=1e-3)


def test_bad_arguments_fail_before_training(toy_data):
    x, y = toy_data
    for kwargs, message in [
        ({"target": 1.0}, r"\[0, 1\)"),
        ({"target": -0.2}, r"\[0, 1\)"),
        ({"target": 0.5, "criterion": "random"}, "unknown pruning criterion"),
        ({"target": 0.5, "schedule": "cubic"}, "schedule must be"),
        ({"target": 0.5, "criterion": "class_blind", "layer_targets": {"fc1": 0.2}},
         "layer_targets"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=message):
            kc.MagnitudePruning(**kwargs)
    model = _compiled(kc.make_prunable(mlp()))
    weights_before = model.get_weights()
    callback = kc.MagnitudePruning(0.5, schedule="constant", layer_targets={"nope": 0.3})
    with pytest.raises(ValueError, match="'nope' matches no pruned weight"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    for a, b in zip(weights_before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing trained
    plain = _compiled(mlp())
    with pytest.raises(ValueError, match="no PruningWrapper"):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[kc.MagnitudePruning(0.5)])
    # wrappers built by hand, none counting steps: the schedule could never advance
    wrappers = [kc.PruningWrapper(keras.layers.Dense(n), counts_steps=False) for n in (8, 2)]
    silent = keras.Sequential([keras.Input((12,)), *wrappers])
    with pytest.raises(ValueError, match="counts training steps"):
        _compiled(silent).fit(x, y, epochs=1, verbose=0, callbacks=[kc.MagnitudePruning(0.5)])


def test_make_prunable_selection_and_errors():
    model = kc.examples.lenet5()
    wrapped = kc.make_prunable(model, layers=[keras.layers.Conv2D, "fc2"])
    names = [w.layer.name for w in kc.pruning_wrappers(wrapped)]
    assert names == ["conv1", "conv2", "fc2"]
    assert [w.layer.name for w in kc.pruning_wrappers(kc.make_prunable(model, "fc.*"))] == [
        "fc1",
        "fc2",
    ]
    with pytest.raises(ValueError, match="no layer matches 'fc9'"):
        kc.make_prunable(model, layers=["fc9"])
    with pytest.raises(ValueError, match="'pool1' \\(MaxPooling2D\\) was selected"):
        kc.make_prunable(model, layers=["pool1"])
    nothing = keras.Sequential([keras.Input((4,)), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="no layer with weights to prune"):
        kc.make_prunable(nothing)
    with pytest.raises(TypeError, match="subclassed"):

        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.fc = keras.layers.Dense(2)

            def call(self, x):
                return self.fc(x)

        sub = Sub()
        sub(np.zeros((1, 3)))
        kc.make_prunable(sub)


def test_make_prunable_copies_weights_and_leaves_input_untouched(toy_data):
    x, _ = toy_data
    model = mlp()
    model.compile("sgd", "mse")
    wrapped = kc.make_prunable(model)
    np.testing.assert_allclose(model.predict(x, verbose=0), wrapped.predict(x, verbose=0))
    assert wrapped.compiled and wrapped.optimizer is not model.optimizer
    assert not any(isinstance(layer, kc.PruningWrapper) for layer in model.layers)
    assert all(w.trainable_weights[0].constraint is None for w in model.layers)


def test_custom_layer_opts_in_by_naming_its_weights(toy_data):
    @keras.saving.register_keras_serializable(package="tests")
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(name="w", shape=input_shape[-1:], initializer="random_normal")

        def call(self, x):
            return x * self.w

    x, y = toy_data
    model = keras.Sequential([keras.Input((12,)), Scale(name="scale"), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="'scale' \\(Scale\\) was selected"):
        kc.make_prunable(model, layers=["scale"])
    wrapped = _compiled(kc.make_prunable(model, layers=["scale"], weights=["w"]))
    wrapped.fit(x, y, epochs=1, verbose=0, callbacks=[kc.MagnitudePruning(0.5, "constant")])
    assert kc.sparsity(wrapped)["scale/w"] == 0.5


class CountingPruning(kc.MagnitudePruning):
    """Records the steps at which the masks are recomputed."""

    def _update(self, level):
        self.updates.append((self._seen_step, level))
        super()._update(level)


@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_polynomial_schedule_updates_only_every_frequency_steps(toy_data, steps_per_execution):
    # The polynomial level grows every step; masks must still change only on update steps.
    if steps_per_execution > 1 and keras.backend.backend() == "torch":
        pytest.skip("Keras runs one step per execution on PyTorch")
    x, y = toy_data
    model = kc.make_prunable(mlp())
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=steps_per_execution)  # fmt: skip
    callback = CountingPruning(0.8, "polynomial", end_step=40, frequency=10)
    callback.updates = []
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[callback])  # 48 steps
    steps = [s for s, _ in callback.updates]
    expected = [0, 10, 20, 30, 40] if steps_per_execution == 1 else [0, 12, 20, 32, 40]
    assert steps == expected
    assert kc.sparsity(model)["total"] == pytest.approx(0.8, abs=2e-3)


@pytest.mark.parametrize(
    "callback",
    [
        kc.MagnitudePruning(0.8, "polynomial", "class_blind", end_step=150, frequency=10),
        kc.MagnitudePruning(0.5, "constant", layer_targets={"fc1": 0.7}, groups={"g": ["fc.*"]}),
        kc.MagnitudePruning(schedule=kc.IterativeRounds([0.5, 0.8], 100)),
        kc.MagnitudePruning(schedule=kc.PolynomialDecay(0.1, 0.9, 0, 500, frequency=5)),
    ],
)
def test_callback_config_round_trips_with_schedule_objects(callback):
    restored = kc.MagnitudePruning.from_config(callback.get_config())
    assert restored.get_config() == callback.get_config()
    assert type(restored.schedule) is type(callback.schedule)
    assert restored.target == callback.target


def test_polynomial_ramp_reaches_its_target_at_end_step_whatever_the_frequency(toy_data):
    x, y = toy_data  # 256 examples in batches of 16: 16 steps an epoch, 48 in all
    model = kc.make_prunable(mlp())
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = kc.MagnitudePruning(0.8, "polynomial", end_step=48, frequency=100)
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[callback])
    for name, level in kc.sparsity(model).items():
        assert level == pytest.approx(0.8, abs=0.02), name
    assert history.history["sparsity"][-1] == pytest.approx(kc.sparsity(model)["total"])


def test_a_fit_that_ends_before_the_ramp_warns_with_what_it_reached(toy_data):
    x, y = toy_data
    model = kc.make_prunable(mlp())
    model.compile("adam", "sparse_categorical_crossentropy")
    callback = kc.MagnitudePruning(0.8, "polynomial", end_step=100, frequency=10)
    with pytest.warns(UserWarning, match=r"ended at step 32 with sparsity 0\.\d+.* step 100 \(68"):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback])
    assert 0.3 < kc.sparsity(model)["total"] < 0.8
