"""conv1 as the AlexNet paper's Figure 3, per-tower colour scores and the rank tests."""

import itertools
import json
import math

import numpy as np
import pytest
from helpers import make_run
from PIL import Image

from keras_alexnet import filters
from keras_alexnet.data import load_source
from keras_alexnet.data.stats import colour_in_data
from keras_alexnet.models import build_model

SIZE = 67  # AlexNet's smallest input


def grey_kernels(rng, count, size=11):
    """Kernels equal in R, G and B at every pixel (plus an offset the score must ignore)."""
    k = rng.normal(size=(size, size, 1, count)) + 3.0
    return np.repeat(k, 3, axis=2)


def opponent_kernels(rng, count, size=11):
    """Zero-mean colour-opponent kernels: R = -G and B = 0 at every pixel."""
    r = rng.normal(size=(size, size, 1, count))
    return np.concatenate([r, -r, np.zeros_like(r)], axis=2)


def alexnet_with_conv1(towers, width, parts):
    """A tiny AlexNet whose conv1 kernel is `parts` (one [11, 11, 3, n] block per tower)."""
    model = build_model(
        "alexnet", classes=10, input_shape=(SIZE, SIZE, 3), width=width, towers=towers, seed=0
    )
    conv1 = model.get_layer("conv1")
    kernel = np.concatenate(parts, axis=3).astype(np.float32)
    conv1.kernel.assign(kernel)
    return model, kernel


def score_by_projection(kernel):
    """1 - (energy on the grey axis) / energy, by projecting each pixel on (1, 1, 1)/sqrt(3)."""
    k = kernel - kernel.mean()
    axis = np.ones(3) / math.sqrt(3.0)
    on_grey = sum(float(pixel @ axis) ** 2 for pixel in k.reshape(-1, 3))
    return 1.0 - on_grey / float((k**2).sum())


def test_colour_score_is_the_share_of_energy_off_the_grey_axis():
    rng = np.random.default_rng(0)
    kernels = rng.normal(size=(5, 5, 3, 12)) + rng.normal(size=(1, 1, 3, 12))
    scores = filters.colour_scores(kernels)
    expected = [score_by_projection(kernels[..., i]) for i in range(12)]
    np.testing.assert_allclose(scores, expected, rtol=1e-10)
    np.testing.assert_allclose(filters.colour_scores(grey_kernels(rng, 4)), 0.0, atol=1e-12)
    np.testing.assert_allclose(filters.colour_scores(opponent_kernels(rng, 4)), 1.0, rtol=1e-12)
    assert filters.colour_scores(np.ones((3, 3, 3, 1)))[0] == 0.0  # constant: no colour


def test_grey_and_opponent_towers_score_near_0_and_1_and_differ_and_swap():
    rng = np.random.default_rng(1)
    grey, opponent = grey_kernels(rng, 24), opponent_kernels(rng, 24)
    model, _ = alexnet_with_conv1(2, 0.5, [grey, opponent])
    conv1 = filters.conv1_kernels(model)
    assert conv1.towers == 2 and conv1.kernels.shape == (11, 11, 3, 48)
    report = filters.colour_report(conv1)
    first, second = report["per_tower"]
    assert first["kernels"] == second["kernels"] == 24
    assert first["mean"] < 1e-6 and second["mean"] > 1 - 1e-6
    assert report["test"]["p_value"] < 1e-6
    assert report["data"]["colour"] == filters.UNKNOWN  # a bare keras.Model has no metadata

    swapped, _ = alexnet_with_conv1(2, 0.5, [opponent, grey])
    first, second = filters.colour_report(filters.conv1_kernels(swapped))["per_tower"]
    assert first["mean"] > 1 - 1e-6 and second["mean"] < 1e-6


def test_three_towers_are_scored_and_drawn():
    rng = np.random.default_rng(2)
    parts = [grey_kernels(rng, 12), opponent_kernels(rng, 12), rng.normal(size=(11, 11, 3, 12))]
    model, kernel = alexnet_with_conv1(3, 0.375, parts)  # 36, 96, 144, 144, 96: all split by 3
    conv1 = filters.conv1_kernels(model)
    assert conv1.towers == 3
    np.testing.assert_array_equal(conv1.kernels, kernel)
    report = filters.colour_report(conv1)
    means = [row["mean"] for row in report["per_tower"]]
    assert means[0] < 1e-6 and means[1] > 1 - 1e-6 and 0.4 < means[2] < 0.9  # random: ~2/3
    assert report["test"]["name"].startswith("Kruskal-Wallis") and report["test"]["p_value"] < 1e-6
    picture = filters.conv1_picture(conv1.kernels, 3, scale=2)
    assert picture.shape[:2] == filters.picture_shape((11, 11), 36, 3, scale=2)


def test_picture_layout_read_back_from_the_png(tmp_path):
    rng = np.random.default_rng(3)
    grey, opponent = grey_kernels(rng, 6), opponent_kernels(rng, 6)
    kernels = np.concatenate([grey, opponent], axis=3)
    scale, columns, pad, gap = 3, 4, 2, 9
    path = tmp_path / "conv1.png"
    filters.write_png(
        path, filters.conv1_picture(kernels, 2, scale=scale, columns=columns, pad=pad, gap=gap)
    )
    png = np.asarray(Image.open(path).convert("RGB"))
    cell = 11 * scale
    rows = 2  # 6 kernels per tower in rows of 4
    tower_height = rows * cell + (rows + 1) * pad
    assert png.shape == (2 * tower_height + gap, columns * cell + (columns + 1) * pad, 3)
    assert (png[tower_height : tower_height + gap] == 255).all()  # the gap is background
    for tower, source in ((0, grey), (1, opponent)):
        for i in range(6):
            row, column = divmod(i, columns)
            top = tower * (tower_height + gap) + pad + row * (cell + pad)
            left = pad + column * (cell + pad)
            tile = png[top : top + cell : scale, left : left + cell : scale].astype(float)
            k = source[..., i]
            np.testing.assert_allclose(tile, (k - k.min()) / (k.max() - k.min()) * 255, atol=0.51)
            block = png[top : top + cell, left : left + cell]
            same = (block[..., 0] == block[..., 1]) & (block[..., 1] == block[..., 2])
            assert same.all() if tower == 0 else not same.all()
            assert (png[top - 1, left : left + cell] == 255).all()  # padding above each kernel


def test_kernels_that_do_not_split_into_towers_are_refused():
    with pytest.raises(ValueError, match="do not split into 2 towers"):
        filters.conv1_picture(np.zeros((3, 3, 3, 5)), 2)
    with pytest.raises(ValueError, match=r"\[kh, kw, 3, N\]"):
        filters.colour_scores(np.zeros((3, 3, 1, 4)))


def average_ranks(values):
    """1-based ranks, ties sharing their mean rank, by counting (O(n^2), independent of argsort)."""
    values = np.asarray(values)
    below = (values[None, :] < values[:, None]).sum(axis=1)
    equal = (values[None, :] == values[:, None]).sum(axis=1)
    return 1 + below + (equal - 1) / 2


def permutation_p(groups, seed, count=200_000):
    """Permutation p-value of sum(R_i^2 / n_i) over random relabellings (both rank tests' order).

    For two groups it orders like |U - n1 n2 / 2| (the two-sided Mann-Whitney test), for
    more like Kruskal-Wallis's H: the tie correction is the same for every relabelling.
    """
    ranks = average_ranks(np.concatenate(groups))
    sizes = [len(g) for g in groups]
    bounds = np.cumsum([0, *sizes])
    rng = np.random.default_rng(seed)
    order = np.argsort(rng.random((count, len(ranks))), axis=1)
    permuted = ranks[order]

    def statistic(r):
        return sum(
            r[..., lo:hi].sum(axis=-1) ** 2 / (hi - lo) for lo, hi in itertools.pairwise(bounds)
        )

    observed = statistic(ranks)
    hits = (statistic(permuted) >= observed - 1e-9).sum()
    return (hits + 1) / (count + 1)


def test_rank_tests_match_permutation_tests_with_ties():
    rng = np.random.default_rng(4)
    a = np.round(rng.normal(0.0, 1.0, 30), 1)  # rounding makes ties
    b = np.round(rng.normal(0.6, 1.0, 26), 1)
    c = np.round(rng.normal(0.3, 1.0, 20), 1)
    for groups in ([a, b], [a, b, c]):
        p_perm = permutation_p(groups, seed=len(groups))
        if len(groups) == 2:
            p = filters.mann_whitney(*groups)[1]
        else:
            p = filters.kruskal_wallis(groups)[1]
        # The normal / chi-square approximations are within 10 % of the permutation p here.
        assert 0.002 < p_perm < 0.2 and abs(p - p_perm) < 0.1 * p_perm, (p, p_perm)
    assert filters.mann_whitney(np.ones(4), np.ones(5))[1] == 1.0
    assert filters.kruskal_wallis([np.ones(3), np.ones(2), np.ones(4)])[1] == 1.0


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7])
def test_chi2_survival_matches_the_integrated_density(df):
    for x in (0.3, 2.0, 9.0):
        t = np.linspace(x, x + 200.0, 400001)
        density = t ** (df / 2 - 1) * np.exp(-t / 2) / (2 ** (df / 2) * math.gamma(df / 2))
        assert filters.chi2_sf(x, df) == pytest.approx(np.trapezoid(density, t), rel=1e-6)


def test_the_digits_have_no_colour_and_coloured_noise_has(tiny_data):
    digits = colour_in_data(load_source(None).stats)
    assert digits["colour"] is False and digits["first_component_share"] > 0.999
    assert "cannot learn colour" in digits["reason"]
    assert colour_in_data(load_source(tiny_data).stats)["colour"] is True


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("filters") / "alexnet", steps=5)[0]


def test_onnx_export_gives_the_keras_kernels(run, tmp_path):
    from keras_alexnet.export import export_onnx

    onnx_path = tmp_path / "alexnet.onnx"
    export_onnx(run, onnx_path, log=lambda *_: None)
    keras_conv1, onnx_conv1 = filters.conv1_kernels(run), filters.conv1_kernels(onnx_path)
    assert keras_conv1.metadata.scale != 1  # the export folded a real scale into conv1
    assert onnx_conv1.towers == keras_conv1.towers == 2
    np.testing.assert_allclose(onnx_conv1.kernels, keras_conv1.kernels, rtol=1e-5, atol=1e-7)


def test_command_draws_prints_and_writes_json(run, tmp_path, capsys):
    from keras_alexnet.commands import filters as command

    output, scores = tmp_path / "conv1.png", tmp_path / "scores.json"
    argv = ["--model", str(run), "--output", str(output), "--json", str(scores), "--scale", "2"]
    command.main(command.get_args_parser().parse_args(argv))
    out = capsys.readouterr().out
    conv1 = filters.conv1_kernels(run)
    assert np.asarray(Image.open(output)).shape[:2] == filters.picture_shape(
        (11, 11), conv1.kernels.shape[3], 2, scale=2
    )
    report = json.loads(scores.read_text())
    np.testing.assert_allclose(report["scores"], filters.colour_scores(conv1.kernels))
    assert report["towers"] == 2 and report["data"]["colour"] is False
    assert "Mann-Whitney" in out and "conv1 cannot learn colour" in out


def test_grey_data_leaves_conv1_colour_where_the_initialisation_put_it():
    """Why the tool says so: on R = G = B pixels conv1's gradient is the same in R, G and B."""
    import keras

    from keras_alexnet.data import train_dataset

    source = load_source(None)
    keras.utils.set_random_seed(1)
    model = build_model(
        "alexnet", classes=len(source.class_names), input_shape=(SIZE, SIZE, 3), width=1 / 8,
        init="he", seed=1, mean=tuple(source.stats.mean), scale=1 / 128, dropout=0.0,
    )  # fmt: skip
    before = filters.conv1_kernels(model).kernels.astype(np.float64)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9), "sparse_categorical_crossentropy")
    ds = train_dataset(source, image_size=SIZE, resize=76, batch_size=32, seed=0)
    model.fit(ds.take(5), epochs=1, verbose=0, shuffle=False)
    after = filters.conv1_kernels(model).kernels.astype(np.float64)

    def off_grey(k):
        return k - k.mean(axis=2, keepdims=True)

    grey_change = np.abs(after.mean(axis=2) - before.mean(axis=2)).max()
    assert grey_change > 1e-3 * np.abs(before).max()  # it did learn
    np.testing.assert_allclose(off_grey(after), off_grey(before), atol=1e-6 * np.abs(before).max())


def test_vggs_3x3_kernels_are_drawn_as_large_as_alexnets_11x11():
    assert filters.display_scale((11, 11)) == 4 and filters.display_scale((3, 3)) == 15
    kernels = np.random.default_rng(3).normal(size=(3, 3, 3, 64))
    picture = filters.conv1_picture(kernels)
    assert picture.shape[:2] == filters.picture_shape((3, 3), 64, 1)
    # Kernel 0 fills a 45-pixel tile (nearest neighbour) after a 3-pixel margin.
    tile = picture[3:48, 3:48]
    expected = filters.display_kernel(kernels[..., 0]).repeat(15, axis=0).repeat(15, axis=1)
    np.testing.assert_array_equal(tile, expected)
    assert (picture[:3] == filters.BACKGROUND).all()
