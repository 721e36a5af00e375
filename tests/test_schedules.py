import keras
import pytest

from keras_compress.pruning.schedules import ConstantSparsity, IterativeRounds, PolynomialDecay

pytestmark = pytest.mark.backends  # runs on JAX and PyTorch too (conftest.py)


def test_polynomial_follows_zhu_gupta_cubic_ramp():
    s = PolynomialDecay(0.1, 0.9, begin_step=100, end_step=300, frequency=50)
    for t in range(100, 301, 25):
        expected = 0.9 + (0.1 - 0.9) * (1 - (t - 100) / 200) ** 3
        assert s.level(t) == pytest.approx(expected)
    assert s.level(0) == 0.1 and s.level(10_000) == 0.9
    updates = [t for t in range(0, 400) if s.should_update(t)]
    assert updates == [100, 150, 200, 250, 300]


def test_polynomial_updates_at_end_step_even_off_the_frequency_grid():
    s = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=250, frequency=100)
    assert [t for t in range(400) if s.should_update(t)] == [0, 100, 200, 250]


def test_iterative_rounds_update_once_per_round():
    s = IterativeRounds([0.5, 0.7, 0.9], steps_per_round=10, begin_step=5)
    assert [t for t in range(60) if s.should_update(t)] == [5, 15, 25]
    assert [s.level(t) for t in (4, 5, 14, 15, 25, 1000)] == [0.0, 0.5, 0.5, 0.7, 0.9, 0.9]


@pytest.mark.parametrize(
    "schedule",
    [
        ConstantSparsity(0.5, 3, 30, 7),
        PolynomialDecay(0.0, 0.8, 2, 40, 2.0, 5),
        IterativeRounds([0.2, 0.4], 11, 1),
    ],  # fmt: skip
)
def test_schedules_round_trip_through_keras_serialization(schedule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    assert [restored.level(t) for t in range(50)] == [schedule.level(t) for t in range(50)]


def test_bad_schedule_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="end_step"):
        PolynomialDecay(0.0, 0.5, begin_step=10, end_step=10)
    with pytest.raises(ValueError, match="frequency"):
        ConstantSparsity(0.5, frequency=0)
    with pytest.raises(ValueError, match="begin_step"):
        ConstantSparsity(0.5, begin_step=-1)
    with pytest.raises(ValueError, match="steps_per_round"):
        IterativeRounds([0.5], steps_per_round=0)
