"""The learning-rate schedules: AlexNet's plateau drops, step and cosine, as pure functions."""

import math

import pytest
import tensorflow as tf

from keras_alexnet.optim import Plateau, learning_rate_for
from keras_alexnet.train_config import TrainConfig

# Validation top-1 per epoch, and with patience 2 and at most 3 drops when the rate drops:
# a drop after two epochs without a new best, the count reset by a drop or a new best; the
# fourth would-be drop (epoch 11) is refused.
TOP1 = [0.1, 0.2, 0.2, 0.15, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]
DROPS = [False, False, False, True, False, False, True, False, True, False, False, False]


def test_plateau_drops_after_patience_epochs_without_a_new_best_at_most_n_times():
    plateau = Plateau(patience=2, max_drops=3)
    assert [plateau.update(v) for v in TOP1] == DROPS
    assert int(plateau.drops.numpy()) == 3 and float(plateau.best.numpy()) == 0.3


def test_plateau_with_patience_one_drops_on_the_first_epoch_without_improvement():
    plateau = Plateau(patience=1, max_drops=1)
    assert [plateau.update(v) for v in (0.5, 0.5, 0.4, 0.6, 0.6)] == [
        False, True, False, False, False,
    ]  # fmt: skip


def test_plateau_state_restored_from_a_checkpoint_continues_as_if_uninterrupted(tmp_path):
    cut = 7
    first = Plateau(patience=2, max_drops=3)
    before = [first.update(v) for v in TOP1[:cut]]
    path = tf.train.Checkpoint(best=first.best, wait=first.wait, drops=first.drops).save(
        str(tmp_path / "ckpt")
    )
    resumed = Plateau(patience=2, max_drops=3)
    tf.train.Checkpoint(best=resumed.best, wait=resumed.wait, drops=resumed.drops).restore(path)
    assert before + [resumed.update(v) for v in TOP1[cut:]] == DROPS


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [(0, 0.01), (29, 0.01), (30, 0.001), (59, 0.001), (60, 1e-4), (90, 1e-5), (150, 1e-5)],
)
def test_step_divides_by_ten_every_step_epochs_at_most_max_drops_times(epoch, expected):
    config = TrainConfig(lr=0.01, lr_schedule="step", step_epochs=30, max_lr_drops=3)
    assert learning_rate_for(config, epoch) == pytest.approx(expected)


@pytest.mark.parametrize(("epoch", "factor"), [(0, 1.0), (40, 0.75), (80, 0.25), (120, 0.0)])
def test_cosine_follows_half_a_cosine_over_the_epochs(epoch, factor):
    config = TrainConfig(lr=0.01, lr_schedule="cosine", epochs=120)
    assert learning_rate_for(config, epoch) == pytest.approx(0.01 * factor, abs=1e-12)
    assert factor == pytest.approx((1 + math.cos(math.pi * epoch / 120)) / 2)


def test_the_plateau_schedule_has_no_rate_by_epoch():
    assert learning_rate_for(TrainConfig(lr=0.01, lr_schedule="plateau"), 5) is None


def test_fit_after_compile_paper_logs_the_cross_entropy_and_the_decay_term_apart():
    import numpy as np

    from keras_alexnet import build_model, optim

    model = build_model("alexnet", classes=3, width=1 / 16, input_shape=(67, 67, 3), dropout=0.0)
    optim.compile_paper(model, lr=0.0, weight_decay=0.05)  # lr 0: the weights stay put
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (6, 67, 67, 3)).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])
    logs = model.fit(x, y, batch_size=6, epochs=1, verbose=0).history
    p = model.predict(x, verbose=0)
    cross_entropy = -np.mean(np.log(p[np.arange(6), y]))  # what the train command reports
    kernels = [v.numpy() for v in model.trainable_variables if v.path.endswith("kernel")]
    decay = 0.05 / 2 * sum(float(np.sum(k.astype("float64") ** 2)) for k in kernels)
    assert logs["cross_entropy"][0] == pytest.approx(cross_entropy, rel=1e-5)
    assert optim.decay_term(model) == pytest.approx(decay, rel=1e-5)
    assert logs["loss"][0] - logs["cross_entropy"][0] == pytest.approx(decay, rel=1e-4)
