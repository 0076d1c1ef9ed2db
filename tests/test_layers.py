import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_alexnet.layers import GroupedConv2D, InputNormalization, LocalResponseNormalization


def numpy_conv2d(x, kernel, stride, pad):
    """Direct cross-correlation in NumPy: x (N,H,W,C), kernel (kh,kw,C,F)."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]  # (N, H', W', C, kh, kw)
    return np.einsum("nhwcij,ijcf->nhwf", windows, kernel)


def paper_lrn(a, k, n, alpha, beta):
    """AlexNet Section 3.3 written out channel by channel: b = a / (k + alpha sum a^2)^beta."""
    channels = a.shape[-1]
    b = np.empty_like(a, dtype=np.float64)
    for c in range(channels):
        lo, hi = max(0, c - n // 2), min(channels - 1, c + n // 2)
        s = np.sum(a[..., lo : hi + 1].astype(np.float64) ** 2, axis=-1)
        b[..., c] = a[..., c] / (k + alpha * s) ** beta
    return b


def test_grouped_conv_equals_two_separate_convolutions_over_the_halves():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 11, 11, 8)).astype("float32")
    layer = GroupedConv2D(6, 5, strides=2, padding="valid", groups=2)
    y = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (layer.kernel, layer.bias))
    assert kernel.shape == (5, 5, 4, 6)
    first = numpy_conv2d(x[..., :4], kernel[..., :3], 2, 0) + bias[:3]
    second = numpy_conv2d(x[..., 4:], kernel[..., 3:], 2, 0) + bias[3:]
    np.testing.assert_allclose(y, np.concatenate([first, second], axis=-1), rtol=1e-4, atol=1e-4)
    assert y.shape == layer.compute_output_shape(x.shape)


def test_grouped_conv_same_padding_matches_numpy_with_pad():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1, 7, 7, 4)).astype("float32")
    layer = GroupedConv2D(4, 3, padding="same", groups=2, activation="relu")
    y = keras.ops.convert_to_numpy(layer(x))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in (layer.kernel, layer.bias))
    halves = [
        numpy_conv2d(x[..., 2 * g : 2 * g + 2], kernel[..., 2 * g : 2 * g + 2], 1, 1)
        for g in range(2)
    ]
    expected = np.maximum(np.concatenate(halves, axis=-1) + bias, 0)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_grouped_conv_with_relu_trains_inside_a_compiled_step():
    # Grappler fuses Conv2D+BiasAdd+Relu into a kernel that rejects groups; fit must work.
    inputs = keras.Input((9, 9, 4))
    x = GroupedConv2D(8, 3, padding="same", groups=2, activation="relu")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = keras.ops.convert_to_numpy(model.layers[1].kernel).copy()
    x_data = np.random.default_rng(2).normal(size=(8, 9, 9, 4)).astype("float32")
    model.fit(x_data, np.ones((8, 2), "float32"), epochs=1, batch_size=4, verbose=0)
    assert not np.allclose(before, keras.ops.convert_to_numpy(model.layers[1].kernel))


def test_grouped_conv_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="divisible by groups"):
        GroupedConv2D(4, 3, groups=2)(np.zeros((1, 5, 5, 3), "float32"))
    with pytest.raises(ValueError, match="multiple of groups"):
        GroupedConv2D(5, 3, groups=2)


@pytest.mark.parametrize(("k", "n", "alpha", "beta"), [(2.0, 5, 1e-4, 0.75), (1.0, 3, 0.5, 0.5)])
def test_lrn_matches_the_papers_formula(k, n, alpha, beta):
    a = np.random.default_rng(3).uniform(0, 30, size=(2, 4, 4, 12)).astype("float32")
    layer = LocalResponseNormalization(depth_radius=n // 2, bias=k, alpha=alpha, beta=beta)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(a)), paper_lrn(a, k, n, alpha, beta), rtol=1e-5
    )


def test_lrn_does_not_cross_towers():
    # Large activations so that alpha * a^2 is far from negligible next to k.
    a = np.random.default_rng(4).uniform(0, 100, size=(1, 3, 3, 96)).astype("float32")
    per_tower = LocalResponseNormalization(groups=2)
    across = LocalResponseNormalization(groups=1)
    bumped = a.copy()
    bumped[..., 48] *= 10.0  # first map of the second tower

    def out(layer, x):
        return keras.ops.convert_to_numpy(layer(x))

    # Map 47 (last of the first tower) does not see map 48 when normalised per tower ...
    np.testing.assert_array_equal(out(per_tower, a)[..., 47], out(per_tower, bumped)[..., 47])
    # ... but does with one LRN over all 96 maps.
    assert not np.allclose(out(across, a)[..., 47], out(across, bumped)[..., 47])
    expected = np.concatenate(
        [paper_lrn(a[..., :48], 2, 5, 1e-4, 0.75), paper_lrn(a[..., 48:], 2, 5, 1e-4, 0.75)], -1
    )
    np.testing.assert_allclose(out(per_tower, a), expected, rtol=1e-5)


def test_input_normalization_subtracts_mean_then_scales():
    x = np.random.default_rng(5).uniform(0, 255, size=(2, 3, 3, 3)).astype("float32")
    mean = (120.0, 110.0, 100.0)
    y = InputNormalization(mean=mean, scale=1 / 127.5)(x)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(y), (x - mean) / 127.5, rtol=1e-6)


@pytest.mark.parametrize(
    "layer",
    [
        GroupedConv2D(6, 3, strides=2, padding="same", groups=2, activation="relu", name="g"),
        LocalResponseNormalization(depth_radius=1, bias=1.0, alpha=2e-5, beta=0.5, groups=2),
        InputNormalization(mean=(1.0, 2.0, 3.0), scale=0.5),
    ],
    ids=["grouped_conv", "lrn", "input_norm"],
)
def test_layers_round_trip_through_a_keras_file(tmp_path, layer):
    channels = 3 if isinstance(layer, InputNormalization) else 4
    inputs = keras.Input((8, 8, channels))
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(6).uniform(0, 50, size=(2, 8, 8, channels)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(model.predict_on_batch(x), restored.predict_on_batch(x))
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config


def test_grouped_conv_kernel_shape_matches_keras_conv2d_groups():
    ours = GroupedConv2D(8, 3, groups=2)
    ours.build((None, 5, 5, 4))
    theirs = keras.layers.Conv2D(8, 3, groups=2)
    theirs.build((None, 5, 5, 4))
    assert tuple(ours.kernel.shape) == tuple(theirs.kernel.shape)
    x = tf.random.normal((1, 5, 5, 4))
    theirs.set_weights(ours.get_weights())
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_grouped_conv_gradients_equal_those_of_the_split_convolutions():
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(2, 9, 9, 6)).astype("float32"))
    kernel = tf.constant(rng.normal(size=(3, 3, 3, 4)).astype("float32"))
    weights = tf.constant(rng.normal(size=(2, 5, 5, 4)).astype("float32"))

    def loss_grouped(x, k):
        from keras_alexnet.layers import grouped_conv2d

        return tf.reduce_sum(grouped_conv2d(x, k, (1, 2, 2, 1), "SAME") * weights)

    def loss_split(x, k):
        halves = [
            tf.nn.conv2d(x[..., 3 * g : 3 * g + 3], k[..., 2 * g : 2 * g + 2], 2, "SAME")
            for g in range(2)
        ]
        return tf.reduce_sum(tf.concat(halves, -1) * weights)

    grads = []
    for fn in (tf.function(loss_grouped), loss_split):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            loss = fn(x, kernel)
        grads.append(tape.gradient(loss, [x, kernel]))
    for ours, reference in zip(*grads, strict=True):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_onednn_follows_the_environment_variable():
    from keras_alexnet.layers import onednn_enabled

    # The commands and conftest (cli.prepare_process) set TF_ENABLE_ONEDNN_OPTS=1 unless set.
    assert onednn_enabled() == (os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1")


@pytest.mark.skipif(
    os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0", reason="this run already uses Eigen"
)
def test_grouped_conv_gradient_and_training_without_onednn():
    # Without oneDNN the grouped conv takes the per-tower custom gradient and a plain bias
    # add (Eigen's kernels reject grouped filters): run those tests again in that mode.
    tests = [
        f"{__file__}::{name}"
        for name in (
            "test_grouped_conv_gradients_equal_those_of_the_split_convolutions",
            "test_grouped_conv_with_relu_trains_inside_a_compiled_step",
            "test_onednn_follows_the_environment_variable",
        )
    ]
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parents[1],
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:]
    assert "3 passed" in out.stdout
