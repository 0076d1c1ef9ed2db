"""Every training path a user can reach, at tiny sizes: each model, strategy, precision, source.

A few subprocesses run the whole matrix through `keras_alexnet.train` with each model's
defaults for real data (TensorFlow starts once per process, with two logical CPUs for the
mirrored runs); the assertions read each run's history.csv.
"""

import csv
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from keras_alexnet.models import MODEL_NAMES
from keras_alexnet.registry import get_spec

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 4


def _one_per_builder(names):
    """The first model of each builder and builder-argument kind (AlexNet, VGG, VGG with BN ...).

    Through TFDS the source's tensors reach every model alike; what differs between models
    of one kind (VGG A to E, the batch-norm VGGs' depths) is only their table row, which the
    folder runs train.
    """
    kinds = {}
    for name in names:
        spec = get_spec(name)
        kinds.setdefault((spec.family, tuple(sorted(spec.builder_args))), name)
    return list(kinds.values())


TFDS_MODELS = _one_per_builder(MODEL_NAMES)

# The runs' curves.png is left out (matplotlib hidden, so training says "No curves.png" and
# goes on): drawing it is a second per epoch, and tests/test_experiments.py tests it.
MATRIX_SCRIPT = r"""
import json, sys
from pathlib import Path

sys.modules["matplotlib"] = None

from keras_alexnet import TrainConfig, get_spec, train
from keras_alexnet.data.prepared import prepare
from keras_alexnet.distribute import configure_devices
from tests.tfds_tree import mock_tfds_from_tree

configure_devices("mirrored", 2)
data, out, cases = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])

for case in cases:
    family = get_spec(case["model"]).family_spec  # its smallest input, a little resize
    size = (family.smallest_input, family.small_resize)
    source = {"folders": str(data), "tfds": "cats_vs_dogs"}.get(case["source"])
    if case["source"] == "prepared":  # at the training scale: crops decoded directly
        source = str(out / f"prepared-{case['name']}")  # one each: processes run at once
        prepare(data, source, model=case["model"], size=size[1], log=lambda *a: None)
    config = TrainConfig(
        model=case["model"], data=source, strategy=case["strategy"],
        precision=case["precision"], width=case["width"], image_size=size[0], resize=size,
        batch_size=8, epochs=case["epochs"], jit_compile=case["jit"],
        output=str(out / case["name"]), cache=str(out / "cache"),
    )
    if case["source"] == "tfds":
        with mock_tfds_from_tree(data):
            train(config, log=lambda *a: None)
    else:
        train(config, log=lambda *a: None)
    print("done", case["name"], flush=True)
"""


def _case(model, source="folders", strategy="default", precision="float32", jit=False,
          epochs=EPOCHS):  # fmt: skip
    name = f"{model}-{source}-{strategy}-{precision}" + ("-xla" if jit else "")
    # VGG E is 19 layers deep: at 1/16 width its loss moves too slowly to show in 4 epochs.
    width = 0.125 if model == "vgg_e" else 0.0625
    return {"name": name, "model": model, "source": source, "strategy": strategy,
            "precision": precision, "width": width, "epochs": epochs, "jit": jit}  # fmt: skip


# Strategy x precision x {AlexNet, VGG A}, each pair at least once (every precision mirrored
# and on one device, each model in every precision and mirrored): a mirrored run needs a
# process of its own, and the three together add nothing the pairs do not reach.
STRATEGY_PRECISION = [
    ("alexnet", "mirrored", "mixed_float16"),
    ("alexnet", "default", "mixed_bfloat16"),
    ("vgg_a", "mirrored", "float32"),
    ("vgg_a", "default", "mixed_float16"),
    ("vgg_a", "mirrored", "mixed_bfloat16"),
]  # AlexNet mirrored in float32: the prepared XLA run below; both in float32: MODEL_NAMES'

CASES = [
    *(_case(m) for m in MODEL_NAMES),
    *(_case(m, source="tfds") for m in TFDS_MODELS),
    *(_case(m, strategy=s, precision=p) for m, s, p in STRATEGY_PRECISION),
    _case("vgg_d", precision="mixed_float16"),
    _case("vgg11_bn", precision="mixed_float16"),  # batch norm in float16
    # bf16 (CPUs with AVX512_BF16 or AMX): every model's layers run in it for an epoch
    *(_case(m, precision="mixed_bfloat16", epochs=1) for m in MODEL_NAMES if m != "alexnet"),
    *(_case(m, source="prepared") for m in ("alexnet", "vgg_a")),
    _case("alexnet", source="prepared", strategy="mirrored", jit=True),
]  # fmt: skip


def _groups(cases):
    """The cases split over processes: one mirrored run each, the others spread evenly.

    Two MirroredStrategy runs in one process reuse collective instance keys and abort, so
    each mirrored run gets a process of its own, as from the command line; it runs first
    there, and single-device runs fill the processes up to an even share of epochs.
    """
    mirrored = [c for c in cases if c["strategy"] != "default"]
    groups = [[c] for c in mirrored] or [[]]
    for case in (c for c in cases if c["strategy"] == "default"):
        min(groups, key=_epochs).append(case)
    return groups


def _epochs(group):
    """The epochs a process's cases train in all: the share of work it carries."""
    return sum(case["epochs"] for case in group)


def _run_group(data, out, group):
    """Run one process's cases; its completed process."""
    return subprocess.run(
        [sys.executable, "-c", MATRIX_SCRIPT, str(data), str(out), json.dumps(group)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip


@pytest.fixture(scope="module")
def matrix(tiny_data, tmp_path_factory):
    """Run every case once, the processes side by side on the cores; {case name: history rows}."""
    out = tmp_path_factory.mktemp("runs")
    groups = _groups(CASES)
    with ThreadPoolExecutor(max_workers=min(len(groups), os.cpu_count() or 1)) as pool:
        done = list(pool.map(lambda group: _run_group(tiny_data, out, group), groups))
    for proc in done:
        assert proc.returncode == 0, proc.stderr[-4000:]
    histories = {}
    for case in CASES:
        with open(out / case["name"] / "history.csv", newline="") as f:
            histories[case["name"]] = list(csv.DictReader(f))
    return histories


def test_each_process_runs_at_most_one_mirrored_case_and_every_case_once():
    groups = _groups(CASES)
    assert sorted(c["name"] for g in groups for c in g) == sorted(c["name"] for c in CASES)
    assert all(sum(c["strategy"] == "mirrored" for c in g) <= 1 for g in groups)
    assert max(map(_epochs, groups)) - min(map(_epochs, groups)) <= EPOCHS


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_every_path_trains_with_its_defaults(matrix, case):
    rows = matrix[case["name"]]
    assert [int(r["epoch"]) for r in rows] == list(range(1, case["epochs"] + 1))
    losses = [float(r["loss"]) for r in rows]
    assert all(math.isfinite(v) for v in losses), losses
    if case["model"] != "alexnet" and case["epochs"] > 1:
        # VGG with its default (Glorot) init learns; the paper's N(0, 1e-2) reached 1e27.
        assert losses[-1] < losses[0], losses
