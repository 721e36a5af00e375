"""Distillation: Hinton's loss against numpy, the noisy teacher, several teachers, fit, pruning."""

import contextlib
import warnings

import keras
import numpy as np
import pytest

import keras_compress as kc
from keras_compress.distillation import NoisyTeacher, TeacherCombination, ensemble_teacher, hinton

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)

RNG = np.random.default_rng(0)
TEACHER_LOGITS = RNG.normal(scale=3.0, size=(8, 5)).astype("float32")
STUDENT_LOGITS = RNG.normal(scale=1.0, size=(8, 5)).astype("float32")


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def hinton_reference(teacher, student, temperature):
    """Mean over the batch of KL(p_T || q_T) times T**2 (Hinton et al. 2015, section 2)."""
    p, q = softmax(teacher / temperature), softmax(student / temperature)
    return float(np.mean(np.sum(p * np.log(p / q), axis=-1)) * temperature**2)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_soft_target_loss_equals_numpy(temperature):
    expected = hinton_reference(TEACHER_LOGITS, STUDENT_LOGITS, temperature)
    noisy = NoisyTeacher(temperature=temperature, noise_std=0.5, probability=0.0)
    for loss in (hinton(temperature), noisy):
        value = float(loss.compute_loss(TEACHER_LOGITS, STUDENT_LOGITS))
        assert value == pytest.approx(expected, rel=1e-5)


def test_noise_changes_the_loss_only_when_applied():
    always = NoisyTeacher(temperature=2.0, noise_std=0.5, probability=1.0, seed=1)
    clean = hinton_reference(TEACHER_LOGITS, STUDENT_LOGITS, 2.0)
    values = [float(always.compute_loss(TEACHER_LOGITS, STUDENT_LOGITS)) for _ in range(5)]
    assert all(abs(v - clean) > 1e-4 for v in values) and len(set(values)) == 5
    sometimes = NoisyTeacher(temperature=2.0, noise_std=0.5, probability=0.5, seed=2)
    values = [float(sometimes.compute_loss(TEACHER_LOGITS, STUDENT_LOGITS)) for _ in range(40)]
    exact = sum(v == pytest.approx(clean, rel=1e-6) for v in values)
    assert 8 <= exact <= 32  # about half the batches are clean


def dense_model(seed, width=5):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, "relu"),
                             keras.layers.Dense(width)], name=f"teacher{seed}")  # fmt: skip


def test_two_identical_teachers_give_the_single_teacher_loss():
    teacher = dense_model(1)
    twin = dense_model(2)
    twin.set_weights(teacher.get_weights())
    x = RNG.normal(size=(8, 6)).astype("float32")
    loss = hinton(3.0)
    single = float(loss.compute_loss(teacher(x), STUDENT_LOGITS))
    pair = ensemble_teacher([teacher, twin], temperature=3.0)
    assert float(loss.compute_loss(pair(x), STUDENT_LOGITS)) == pytest.approx(single, rel=1e-5)


def test_average_of_softened_distributions_and_drawn_teachers():
    a, b = TEACHER_LOGITS, STUDENT_LOGITS
    combined = TeacherCombination(2.0, weights=[3.0, 1.0])([a, b])
    expected = 0.75 * softmax(a / 2.0) + 0.25 * softmax(b / 2.0)
    np.testing.assert_allclose(softmax(np.asarray(combined) / 2.0), expected, rtol=1e-5)
    draw = TeacherCombination(2.0, weights=[1.0, 1.0], mode="draw", seed=3)
    picks = [np.array_equal(np.asarray(draw([a, b])), a) for _ in range(40)]
    assert 8 <= sum(picks) <= 32


def fit_student(distiller_loss, teacher, strategy=None):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(512, 6)).astype("float32")
    y = np.argmax(keras.ops.convert_to_numpy(teacher(x)), axis=1)
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        student = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5)])
        distiller = keras.distillation.Distiller(teacher, student, distiller_loss,
                                                 student_loss_weight=0.1)  # fmt: skip
        distiller.compile(keras.optimizers.Adam(1e-2),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    history = distiller.fit(x, y, batch_size=64, shuffle=False, epochs=4, verbose=0)
    return student, history.history["distillation_loss"]


@pytest.mark.parametrize("kind", ["hinton", "noisy", "two teachers"])
def test_student_loss_decreases_and_student_is_a_plain_model(kind):
    teacher = dense_model(5)
    if kind == "noisy":
        loss = NoisyTeacher(temperature=4.0, noise_std=0.2, probability=0.5, seed=0)
    else:
        loss = hinton(4.0)
    if kind == "two teachers":
        teacher = ensemble_teacher([teacher, dense_model(6)], temperature=4.0)
    student, losses = fit_student(loss, teacher)
    assert losses[-1] < 0.7 * losses[0]
    assert type(student) is keras.Sequential and student.count_params() == 35


@pytest.mark.slow
def test_noisy_distillation_under_mirrored_strategy(mirrored):
    teacher = dense_model(7)
    loss = NoisyTeacher(temperature=4.0, noise_std=0.2, probability=0.5, seed=0)
    student, losses = fit_student(loss, teacher, mirrored)
    assert losses[-1] < 0.7 * losses[0]
    assert all(np.all(np.isfinite(w)) for w in student.get_weights())


@pytest.mark.slow
@pytest.mark.parametrize("distributed", [False, True])
def test_pruning_while_distilling_from_the_unpruned_model(distributed, request):
    """A pruning callback reaches its wrappers inside a Distiller; the teacher stays as it was."""
    scope = request.getfixturevalue("mirrored").scope if distributed else contextlib.nullcontext
    with scope():
        teacher = dense_model(8, width=10)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(1024, 6)).astype("float32")
    y = np.argmax(keras.ops.convert_to_numpy(teacher(x)), axis=1)
    before = [w.copy() for w in teacher.get_weights()]
    oneshot = keras.models.clone_model(teacher)  # 80% pruned at once, not retrained
    oneshot.set_weights([np.where(np.abs(w) > np.quantile(np.abs(w), 0.8), w, 0) if w.ndim == 2
                         else w for w in before])  # fmt: skip
    with scope():
        student = kc.make_prunable(teacher)
        distiller = keras.distillation.Distiller(teacher, student, hinton(1.0),
                                                 student_loss_weight=0.5)  # fmt: skip
        distiller.compile(keras.optimizers.Adam(1e-2),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    callback = kc.MagnitudePruning(0.8, "polynomial", frequency=4)
    distiller.fit(x, y, batch_size=64, epochs=6, verbose=0, callbacks=[callback])
    pruned = kc.strip(student)
    for layer in pruned.layers:
        assert np.mean(np.asarray(layer.kernel) == 0) == pytest.approx(0.8, abs=0.01)
    for old, new in zip(before, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)

    def agreement(model):
        return np.mean(np.argmax(keras.ops.convert_to_numpy(model(x)), axis=1) == y)

    assert agreement(pruned) > agreement(oneshot) + 0.25


@pytest.mark.slow
def test_our_distiller_keeps_the_students_regularizers():
    """Keras's Distiller drops ``student.losses``; ``kc.distillation.Distiller`` adds them."""
    teacher = dense_model(3)
    x = RNG.normal(size=(256, 6)).astype("float32")
    y = np.argmax(keras.ops.convert_to_numpy(teacher(x)), axis=1)
    crossentropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    norms, losses = {}, {}
    for name, kind in (
        ("keras", keras.distillation.Distiller),
        ("ours", kc.distillation.Distiller),
    ):
        student = dense_model(4)
        for layer in student.layers:
            layer.kernel.regularizer = keras.regularizers.L2(0.5)
        distiller = kind(teacher, student, hinton(2.0), student_loss_weight=0.5)
        distiller.compile(keras.optimizers.Adam(1e-2), crossentropy)
        penalty = sum(float(v) for v in student.losses)
        losses[name] = distiller.evaluate(x, y, verbose=0, return_dict=True)["loss"], penalty
        distiller.fit(x, y, batch_size=64, epochs=5, verbose=0)
        norms[name] = sum(float(np.sum(w**2)) for w in student.get_weights()[::2])
    assert losses["keras"][1] > 1.0  # the penalty is large, Keras's loss does not see it
    assert losses["ours"][0] == pytest.approx(losses["keras"][0] + losses["ours"][1], rel=1e-4)
    assert norms["ours"] < 0.5 * norms["keras"]


@pytest.mark.slow  # kept out of the quick subset (3-7 s)
def test_a_saved_distiller_loads_compiled_and_resumes(tmp_path):
    """Keras's Distiller reloads uncompiled (a warning, the optimizer state gone); ours does not."""
    x = RNG.normal(size=(64, 6)).astype("float32")
    y = RNG.integers(0, 3, 64)
    student = kc.make_prunable(dense_model(5))
    distiller = kc.distillation.Distiller(dense_model(6), student, hinton(2.0))
    crossentropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    distiller.compile(keras.optimizers.Adam(1e-2), crossentropy, metrics=["accuracy"])
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0,
                  callbacks=[kc.MagnitudePruning(0.5, "constant")])  # fmt: skip
    distiller.save(tmp_path / "distiller.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras's "compile() was not called" warning
        loaded = keras.models.load_model(tmp_path / "distiller.keras")
    assert type(loaded) is kc.distillation.Distiller and loaded.compiled
    assert int(loaded.optimizer.iterations) == 4
    for saved, restored in zip(distiller.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved),
                                      keras.ops.convert_to_numpy(restored))  # fmt: skip
    want = distiller.evaluate(x, y, verbose=0, return_dict=True)
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)
    assert got == pytest.approx(want, rel=1e-6) and "accuracy" in got
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0,
               callbacks=[kc.MagnitudePruning(0.5, "constant")])  # fmt: skip
    assert int(loaded.optimizer.iterations) == 8


def test_configs_round_trip_and_ensembles_save(tmp_path):
    loss = NoisyTeacher(temperature=2.5, noise_std=0.3, probability=0.25, seed=9)
    again = NoisyTeacher.from_config(loss.get_config())
    assert (again.temperature, again.noise_std, again.probability, again.seed) == (
        2.5,
        0.3,
        0.25,
        9,
    )
    pair = ensemble_teacher([dense_model(1), dense_model(2)], temperature=2.0, weights=[2, 1])
    pair.save(tmp_path / "pair.keras")
    loaded = keras.models.load_model(tmp_path / "pair.keras")
    x = RNG.normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(pair(x)), rtol=1e-6
    )


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="temperature must be positive"):
        NoisyTeacher(temperature=0.0)
    with pytest.raises(ValueError, match="noise probability must be in \\[0, 1\\], got 1.5"):
        NoisyTeacher(probability=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ensemble_teacher([dense_model(1)], temperature=-1.0)
    with pytest.raises(ValueError, match="teacher 1 .* output shape \\(None, 4\\)"):
        ensemble_teacher([dense_model(1), dense_model(2, width=4)], temperature=2.0)
    with pytest.raises(ValueError, match="distinct names"):
        ensemble_teacher([dense_model(1), dense_model(1)], temperature=2.0)
    with pytest.raises(ValueError, match="unknown teacher combination"):
        ensemble_teacher([dense_model(1)], temperature=2.0, mode="vote")
