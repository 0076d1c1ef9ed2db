"""Every command README.md and docs/ show runs, at tiny sizes, and each training command twice.

The project's rule: a command in the ```bash blocks of README.md or a page under docs/ is a
promise, so each one runs
here as a subprocess from the repository root (KERAS_ALEXNET_CACHE and TFDS_DATA_DIR in a
temporary directory). `TINY` is the one table saying how each command is cut down (flags
appended, which argparse lets override the README's, and paths moved into tmp_path);
`test_every_readme_command_has_a_row_in_the_table` fails when README gains a command that
the table lacks, or loses one it has.

Not run here, on purpose:
- the set-up (`python3 -m venv`, `. .venv/bin/activate`, `pip install`) and the CI line
  (`ruff check ... && pytest -q`): they are how this test runs at all;
- the two-machine `TF_CONFIG='{"cluster": ...10.0.0.1...}' python scripts/train.py
  --strategy multi_worker` example: no second machine here;
  tests/test_train.py::test_two_workers_on_loopback_end_with_identical_weights runs the
  same command as two workers on 127.0.0.1.

`imagenet2012` runs inside `tfds.testing.mock_data` (the command's script is run as
__main__ by a `python -c` wrapper that enters it), its splits filled with a tiny folder
tree's PNGs as in tests/test_train_paths.py. One module-scoped `Readme` runs each command
at most once, running first the commands whose output it reads (the tiny demo training
makes the shared run directory; the ONNX export the file that evaluate, predict and serve
read), so any single test can run alone. Before the first test it runs what the selected
tests will read, as many commands at once as there are cores, each once the commands it
needs have finished (the server and the curl commands stay in the tests).
"""

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from keras_alexnet.serving.local import local_server

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = (README, *sorted((ROOT / "docs").glob("*.md")))  # what the documentation is
TIMEOUT = 300

# Lines (or `&&` parts of a line) that set up or check the project rather than use it.
SETUP = ("python3 -m venv ", ". .venv/bin/activate", "pip install ", "ruff ", "pytest")


def readme_commands():
    """Every command of the pages' ```bash blocks, `\\`-continued lines joined, one space."""
    commands = []
    for block in blocks("bash"):
        for line in re.sub(r"\\\n", " ", block).splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line).strip()  # comments, whole or trailing
            if not line or line.startswith("TF_CONFIG="):
                # The two-machine example: tests/test_train.py::
                # test_two_workers_on_loopback_end_with_identical_weights runs it on loopback.
                continue
            for part in line.split("&&"):
                part = " ".join(part.split())
                if part and not part.startswith(SETUP):
                    commands.append(part)
    return list(dict.fromkeys(commands))  # a command may be shown on two pages


def blocks(language):
    """The ```language blocks of every page, README first."""
    return [
        b for page in PAGES for b in re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.S)
    ]


# ----------------------------------------------------------------------- the table


@dataclasses.dataclass(frozen=True)
class Tiny:
    """How a README command runs here.

    `replace`: substrings of the README's arguments and what they become ({runs}, {export},
    {tmp}, {flowers}, {tfds_dir}, {server} are this module's directories / server address);
    `extra`: flags appended (argparse keeps the last value of a repeated flag); `tfds_mock`:
    run under `tfds.testing.mock_data`; `needs`: commands whose output this one reads;
    `check(readme, outcome)`: what its output must show.
    """

    check: Callable
    replace: dict = dataclasses.field(default_factory=dict)
    extra: tuple = ()
    tfds_mock: bool = False
    needs: tuple = ()


SHORT = ("--epochs", "1", "--steps-per-epoch", "2", "--val-steps", "1", "--width", "0.0625")
VGG_SIZE = ("--image-size", "32", "--resize", "36", "--batch-size", "8")
ALEXNET_SIZE = ("--image-size", "67", "--resize", "76", "--batch-size", "8")

DEMO = "python scripts/train.py --model alexnet --strategy mirrored"
FLOWERS = "python scripts/train.py --model vgg16 --data /data/flowers --epochs 30"
SMALL = "python scripts/train.py --model alexnet --data /data/photos --recipe small"
IMAGENET_ALEXNET = (
    "python scripts/train.py --model alexnet --data imagenet2012 --data-dir ~/tensorflow_datasets"
)
IMAGENET_VGG_D = "python scripts/train.py --model vgg_d --data imagenet2012 --resize 256,512"
PREPARE = "python scripts/prepare.py --data imagenet2012 --output ~/prepared/alexnet"
TRAIN_PREPARED = "python scripts/train.py --model alexnet --data ~/prepared/alexnet --jit-compile"
PREPARED = {"~/prepared/alexnet": "{tmp}/prepared_alexnet"}
EXPORT_ONNX = "python scripts/export_onnx.py --model runs/alexnet"
SERVE = (
    "python scripts/serve.py --model export/alexnet.onnx --port 8000 --max-batch-size 32 "
    "--max-latency-ms 5"
)
CALIBRATION = ("--calibration-images", "16", "--agreement-images", "32")
RUN_DIR = {"runs/alexnet": "{runs}/alexnet"}
ONNX = {"export/alexnet.onnx": "{export}/alexnet.onnx"}
SERVER = {"localhost:8000": "{server}"}


# ---------------------------------------------------------------------- the checks


def finished(stdout):
    assert re.search(r"Finished 1 epoch in \d+ s on \d replicas?", stdout), stdout[-2000:]


def check_run(run, *, classes, input_size, resize=None):
    """The run directory holds one epoch's history and a loadable softmax model."""
    from keras_alexnet.runtime import load

    rows = (run / "history.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and [r.split(",")[0] for r in rows[1:]] == ["1"]
    runtime = load(run)
    metadata = runtime.metadata
    assert len(metadata.class_names) == classes
    assert metadata.input_size == input_size
    if resize is not None:
        assert metadata.resize == resize
    probabilities = np.asarray(
        runtime.predict(np.full((2, input_size, input_size, 3), 128.0, "float32"))
    )
    assert probabilities.shape == (2, classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    command = json.loads((run / "command.json").read_text())
    assert command["argv"][0].endswith("train.py")


def check_demo(readme, outcome):
    finished(outcome.stdout)
    assert "on 2 replicas:" in outcome.stdout  # mirrored over two logical CPUs
    run = readme.paths["runs"] / "alexnet"
    check_run(run, classes=10, input_size=67, resize=76)
    metadata = json.loads((run / "metadata.json").read_text())
    assert metadata["class_names"] == [str(d) for d in range(10)]
    # Trained without reflections, so its protocol is the centre crop, not ten mirrored crops.
    assert metadata["protocol"] == "center"
    assert metadata["scale"] == pytest.approx(1 / 127.5)
    config = json.loads((run / "command.json").read_text())["config"]
    assert (config["init"], config["batch_size"], config["flip"]) == ("he", 32, False)


def check_flowers(readme, outcome):
    finished(outcome.stdout)
    check_run(readme.paths["runs"] / "vgg16", classes=3, input_size=32, resize=36)
    metadata = json.loads((readme.paths["runs"] / "vgg16" / "metadata.json").read_text())
    assert metadata["class_names"] == ["daisy", "rose", "tulip"]


def check_small(readme, outcome):
    finished(outcome.stdout)
    run = readme.paths["runs"] / "alexnet_small"
    check_run(run, classes=3, input_size=67, resize=76)
    config = json.loads((run / "command.json").read_text())["config"]
    assert (config["recipe"], config["init"], config["flip"]) == ("small", "he", True)
    assert config["scale"] == pytest.approx(1 / 127.5)


def check_imagenet_alexnet(readme, outcome):
    finished(outcome.stdout)
    check_run(readme.paths["runs"] / "alexnet_imagenet", classes=1000, input_size=67, resize=76)


def check_imagenet_vgg_d(readme, outcome):
    finished(outcome.stdout)
    run = readme.paths["runs"] / "vgg_d"
    check_run(run, classes=1000, input_size=32)
    config = json.loads((run / "command.json").read_text())["config"]
    assert list(config["resize"]) == [36, 48]  # scale jittering between S = 36 and 48


def table(stdout):
    """evaluate.py's printed table as {row name: value}."""
    rows = {}
    for line in stdout.splitlines():
        name, _, value = line.partition("  ")
        if value:
            rows[name.strip()] = value.strip()
    assert "top-1 accuracy" in rows and "top-5 accuracy" in rows, stdout[-2000:]
    top1 = float(rows["top-1 accuracy"].split("%")[0])
    assert 0 <= top1 <= 100
    return rows


def check_prepare(readme, outcome):
    # The mock's tree: 2 x 16 training and 2 x 4 validation PNGs, under 1000 class names.
    assert "Prepared 32 train and 8 val images" in outcome.stdout, outcome.stdout
    index = json.loads((readme.paths["tmp"] / "prepared_alexnet" / "prepared.json").read_text())
    assert index["layout"] == {"size": 76, "square": True} and len(index["class_names"]) == 1000
    again = readme.rerun(PREPARE)
    assert again.returncode == 0 and "is already prepared" in again.stdout, again.stderr[-2000:]


def check_train_prepared(readme, outcome):
    finished(outcome.stdout)
    run = readme.paths["runs"] / "alexnet_prepared"
    check_run(run, classes=1000, input_size=67, resize=76)
    assert json.loads((run / "command.json").read_text())["config"]["jit_compile"] is True


def check_evaluate_run(readme, outcome):
    rows = table(outcome.stdout)
    assert rows["runtime"] == "keras"
    assert rows["protocol"] == "center (Q = 76)"  # trained without reflections
    assert rows["images"] == "364"  # the demo set's validation digits


def check_evaluate_multi_scale(readme, outcome):
    rows = table(outcome.stdout)
    assert rows["protocol"] == "multi_scale (Q = 36, 42, 48)"
    assert rows["images"] == "8" and rows["data"].startswith("imagenet2012")


def check_evaluate_onnx(readme, outcome):
    table(outcome.stdout)
    results = json.loads((readme.paths["tmp"] / "results.json").read_text())
    assert (results["protocol"], results["runtime"], results["count"]) == (
        "center",
        "onnxruntime",
        364,
    )
    assert 0 <= results["top1"] <= results["top5"] <= 1


def check_evaluate_all(readme, outcome):
    rows = [line.split() for line in outcome.stdout.splitlines() if line[:1].islower()]
    shown = {row[0]: row for row in rows if row[0] in ("center", "ten_crop", "dense",
                                                       "multi_scale")}  # fmt: skip
    assert list(shown) == ["center", "ten_crop", "dense", "multi_scale"], outcome.stdout
    assert shown["center"][1] == "*"  # the demo's own protocol: trained without reflections
    for row in shown.values():
        top1, top5 = float(row[-2]), float(row[-1])
        assert 0 <= top1 <= top5 <= 100


def check_loads(path, classes=10, size=67):
    """`path` loads as a runtime that gives softmax probabilities for a crop."""
    from keras_alexnet.runtime import load

    runtime = load(path)
    x = np.random.default_rng(0).uniform(0, 255, (3, size, size, 3)).astype("float32")
    probabilities = np.asarray(runtime.predict(x))
    assert probabilities.shape == (3, classes)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    return runtime


def check_export_onnx(readme, outcome):
    import onnx

    path = readme.paths["export"] / "alexnet.onnx"
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert check_loads(path).name == "onnxruntime"


def check_export_int8(readme, outcome):
    import onnxruntime as ort

    int8 = readme.paths["export"] / "alexnet.int8.onnx"
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    x = np.full((1, 67, 67, 3), 128.0, "float32")
    (probabilities,) = session.run(["probabilities"], {"images": x})
    assert probabilities.shape == (1, 10)
    assert "agreement" in (outcome.stdout + outcome.stderr).lower()
    check_export_onnx(readme, outcome)  # the fp32 file is written too


def check_export_savedmodel(readme, outcome):
    path = readme.paths["export"] / "alexnet_savedmodel"
    assert (path / "saved_model.pb").exists() and (path / "assets" / "metadata.json").exists()
    assert check_loads(path).name == "savedmodel"


def check_serve(readme, outcome):
    answer = httpx.get(outcome.stdout + "/v2/health/live", timeout=10)
    assert answer.status_code == 200 and answer.json() == {"live": True}
    readme.server_log.seek(0)
    assert "Traceback" not in readme.server_log.read()


def check_ready(readme, outcome):
    assert json.loads(outcome.stdout) == {"ready": True}


def check_model_metadata(readme, outcome):
    answer = json.loads(outcome.stdout)
    assert answer["name"] == "alexnet"
    assert [i["name"] for i in answer["inputs"]] == ["images"]
    assert [o["name"] for o in answer["outputs"]] == ["probabilities"]
    assert answer["inputs"][0]["datatype"] == "FP32" and answer["inputs"][0]["shape"][-1] == 3


def check_top5(top5, classes):
    assert len(top5) == 5 and {c["class"] for c in top5} <= set(classes)
    probabilities = [c["probability"] for c in top5]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1.0001


DIGITS = [str(d) for d in range(10)]


def check_classify(readme, outcome):
    results = json.loads(outcome.stdout)["results"]
    assert [r["file"] for r in results] == ["cat.jpg", "dog.png"]
    for r in results:
        check_top5(r["top5"], DIGITS)


def check_predict_text(readme, outcome):
    tmp = readme.paths["tmp"]
    lines = outcome.stdout.splitlines()
    files = [line for line in lines if not line.startswith("  ")]
    expected = [tmp / "photos" / "a.png", tmp / "photos" / "nested" / "b.jpg", tmp / "extra.jpg"]
    assert sorted(files) == sorted(str(p) for p in expected), outcome.stdout
    for i, name in enumerate(lines):
        if not name.startswith("  "):
            scores = lines[i + 1 : i + 6]
            assert len(scores) == 5 and all(line.split()[1] in DIGITS for line in scores)


def check_predict_json(readme, outcome):
    results = json.loads(outcome.stdout)
    assert len(results) == 2
    for r in results:
        check_top5(r["top5"], DIGITS)


def check_filters(readme, outcome, png, json_name=None):
    picture = np.asarray(Image.open(readme.paths["tmp"] / png))
    assert picture.ndim == 3 and (picture[picture.shape[0] // 2] == 255).all()  # the gap
    assert "Mann-Whitney U" in outcome.stdout and "cannot learn colour" in outcome.stdout
    if json_name:
        report = json.loads((readme.paths["tmp"] / json_name).read_text())
        assert report["towers"] == 2 and report["data"]["colour"] is False


FILTERS = {"conv1.png": "{tmp}/conv1.png", "conv1.json": "{tmp}/conv1.json"}


# The table: every README command and how it runs here.
TINY = {
    DEMO: Tiny(check_demo, extra=(*SHORT, "--output", "{runs}/alexnet")),
    FLOWERS: Tiny(
        check_flowers,
        replace={"/data/flowers": "{flowers}"},
        extra=(*SHORT, *VGG_SIZE, "--output", "{runs}/vgg16"),
    ),
    SMALL: Tiny(
        check_small,
        replace={"/data/photos": "{flowers}"},
        extra=(*SHORT, "--batch-size", "8", "--output", "{runs}/alexnet_small"),
    ),
    IMAGENET_ALEXNET: Tiny(
        check_imagenet_alexnet,
        replace={"~/tensorflow_datasets": "{tfds_dir}"},
        extra=(*SHORT, *ALEXNET_SIZE, "--output", "{runs}/alexnet_imagenet"),
        tfds_mock=True,
    ),
    IMAGENET_VGG_D: Tiny(
        check_imagenet_vgg_d,
        replace={"256,512": "36,48"},
        extra=(*SHORT, "--image-size", "32", "--batch-size", "8", "--output", "{runs}/vgg_d"),
        tfds_mock=True,
    ),
    PREPARE: Tiny(check_prepare, replace=PREPARED, extra=("--size", "76"), tfds_mock=True),
    TRAIN_PREPARED: Tiny(
        check_train_prepared,
        replace=PREPARED,
        extra=(*SHORT, *ALEXNET_SIZE, "--output", "{runs}/alexnet_prepared"),
        needs=(PREPARE,),
    ),
    "python scripts/evaluate.py --model runs/alexnet": Tiny(
        check_evaluate_run, replace=RUN_DIR, needs=(DEMO,)
    ),
    "python scripts/evaluate.py --model runs/vgg_d --protocol multi_scale --scales 256,384,512": (
        Tiny(
            check_evaluate_multi_scale,
            replace={"runs/vgg_d": "{runs}/vgg_d", "256,384,512": "36,42,48"},
            tfds_mock=True,
            needs=(IMAGENET_VGG_D,),
        )
    ),
    "python scripts/evaluate.py --model export/alexnet.onnx --protocol center --output-json "
    "results.json": Tiny(
        check_evaluate_onnx,
        replace={**ONNX, "results.json": "{tmp}/results.json"},
        needs=(EXPORT_ONNX,),
    ),
    "python scripts/evaluate.py --model runs/alexnet --protocol all": Tiny(
        check_evaluate_all, replace=RUN_DIR, needs=(DEMO,)
    ),
    EXPORT_ONNX: Tiny(
        check_export_onnx,
        replace=RUN_DIR,
        extra=("--output", "{export}/alexnet.onnx"),
        needs=(DEMO,),
    ),
    "python scripts/export_onnx.py --model runs/alexnet --quantize int8": Tiny(
        check_export_int8,
        replace=RUN_DIR,
        extra=("--output", "{export}/alexnet.onnx", *CALIBRATION),
        needs=(DEMO,),
    ),
    "python scripts/export_savedmodel.py --model runs/alexnet": Tiny(
        check_export_savedmodel,
        replace=RUN_DIR,
        extra=("--output", "{export}/alexnet_savedmodel"),
        needs=(DEMO,),
    ),
    # local_server appends `--port FREE_PORT`, which overrides the README's 8000.
    SERVE: Tiny(check_serve, replace=ONNX, needs=(EXPORT_ONNX,)),
    "curl -s localhost:8000/v2/health/ready": Tiny(check_ready, replace=SERVER, needs=(SERVE,)),
    "curl -s localhost:8000/v2/models/alexnet": Tiny(
        check_model_metadata, replace=SERVER, needs=(SERVE,)
    ),
    "curl -s -F file=@cat.jpg -F file=@dog.png localhost:8000/v2/models/alexnet/classify": Tiny(
        check_classify,
        replace={**SERVER, "@cat.jpg": "@{tmp}/cat.jpg", "@dog.png": "@{tmp}/dog.png"},
        needs=(SERVE,),
    ),
    "python scripts/predict.py --model export/alexnet.onnx photos/ extra.jpg": Tiny(
        check_predict_text,
        replace={**ONNX, "photos/": "{tmp}/photos/", "extra.jpg": "{tmp}/extra.jpg"},
        needs=(EXPORT_ONNX,),
    ),
    "python scripts/predict.py --model runs/alexnet --json photos/": Tiny(
        check_predict_json,
        replace={**RUN_DIR, "photos/": "{tmp}/photos/"},
        needs=(DEMO,),
    ),
    "python scripts/filters.py --model runs/alexnet --output conv1.png --json conv1.json": Tiny(
        lambda readme, outcome: check_filters(readme, outcome, "conv1.png", "conv1.json"),
        replace={**RUN_DIR, **FILTERS},
        needs=(DEMO,),
    ),
    "python scripts/filters.py --model export/alexnet.onnx --output conv1_onnx.png": Tiny(
        lambda readme, outcome: check_filters(readme, outcome, "conv1_onnx.png"),
        replace={**ONNX, "conv1_onnx.png": "{tmp}/conv1_onnx.png"},
        needs=(EXPORT_ONNX,),
    ),
}
TRAINING = [c for c in TINY if c.startswith("python scripts/train.py")]


# ------------------------------------------------------------------- running them

TFDS_MOCK = r"""
import runpy, sys
from pathlib import Path

from keras_alexnet import cli; cli.prepare_process()  # before TensorFlow, as the scripts do
from tests.tfds_tree import mock_tfds_from_tree

data = Path(sys.argv.pop(1))
sys.argv = sys.argv[1:]  # the script and its arguments

with mock_tfds_from_tree(data):
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclasses.dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def write_images(folder, names, size=(40, 40), level=None, seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        mean = level if level is not None else rng.uniform(40, 210)
        pixels = np.clip(rng.normal(mean, 30, (*size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path)


def curl_with_httpx(argv):
    """What `curl -s [-F name=@file ...] URL` does, for a machine without curl."""
    files, url, args = [], None, iter(argv[1:])
    for arg in args:
        if arg == "-F":
            name, _, value = next(args).partition("=@")
            files.append((name, (Path(value).name, Path(value).read_bytes())))
        elif arg != "-s":
            url = arg if "://" in arg else "http://" + arg
    answer = httpx.post(url, files=files, timeout=60) if files else httpx.get(url, timeout=60)
    return Outcome(0, answer.text, "")


class Readme:
    """Runs README commands, each at most once, in one temporary tree."""

    def __init__(self, tmp):
        self.paths = {
            "tmp": tmp,
            "runs": tmp / "runs",
            "export": tmp / "export",
            "flowers": tmp / "flowers",
            "blobs": tmp / "blobs",
            "tfds_dir": tmp / "tensorflow_datasets",
        }
        self.env = {
            **os.environ,
            "KERAS_ALEXNET_CACHE": str(tmp / "cache"),
            "TFDS_DATA_DIR": str(tmp / "tensorflow_datasets"),
        }
        self.outcomes, self.reruns = {}, {}
        self.stack = contextlib.ExitStack()
        self.server_log = None
        names = [f"{i}.png" for i in range(10)]
        for i, flower in enumerate(("daisy", "rose", "tulip")):
            write_images(self.paths["flowers"] / flower, names, level=50 + 70 * i, seed=i)
        for split, n in (("train", 16), ("val", 4)):
            for label, level in (("dark", 60), ("bright", 190)):
                folder = self.paths["blobs"] / split / label
                write_images(folder, [f"{i}.png" for i in range(n)], level=level, seed=n + level)
        write_images(tmp, ["cat.jpg", "dog.png", "extra.jpg"], size=(50, 70), seed=7)
        write_images(tmp / "photos", ["a.png", "nested/b.jpg"], size=(60, 45), seed=8)

    def argv(self, command):
        """The command as this module runs it: replacements made, flags appended."""
        tiny = TINY[command]
        fields = {k: str(v) for k, v in self.paths.items()}
        if SERVE in self.outcomes:
            fields["server"] = self.outcomes[SERVE].stdout.removeprefix("http://")
        argv = []
        for token in shlex.split(command):
            for old, new in tiny.replace.items():
                token = token.replace(old, new.format(**fields))
            argv.append(token)
        argv += [a.format(**fields) for a in tiny.extra]
        if argv[0] == "python":
            argv[0] = sys.executable
            if tiny.tfds_mock:
                argv[1:1] = ["-c", TFDS_MOCK, fields["blobs"]]
        return argv

    def prefetch(self, commands, reruns=()):
        """Run `commands` and their needs, then `reruns` again, on every core; wait for all.

        A command starts once the commands it needs have finished; a rerun once its command
        and every command reading that one's output have. The server and the commands that
        need it are left to `run`.
        """
        first, todo = set(), list(commands)
        while todo:
            command = todo.pop()
            if command != SERVE and SERVE not in TINY[command].needs and command not in first:
                first.add(command)
                todo.extend(TINY[command].needs)
        tasks = {(c, False): set(TINY[c].needs) for c in first if c not in self.outcomes}
        for command in reruns:
            readers = {c for c in first if command in TINY[c].needs}
            tasks[(command, True)] = {command, *readers}
        ok = {c for c, outcome in self.outcomes.items() if outcome.returncode == 0}
        running, workers = {}, os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while True:
                ready = [task for task, needs in tasks.items() if needs <= ok]
                ready.sort(key=lambda t: -self._readers(t[0]))  # what others wait for first
                for task in ready[: workers - len(running)]:
                    del tasks[task]
                    running[pool.submit(self.execute, task[0])] = task
                if not running:  # done, or what is left needs a failed command: `run` says so
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    command, again = running.pop(future)
                    outcome = future.result()
                    (self.reruns if again else self.outcomes)[command] = outcome
                    if not again and outcome.returncode == 0:
                        ok.add(command)

    @staticmethod
    def _readers(command):
        """How many commands read `command`'s output."""
        return sum(command in tiny.needs for tiny in TINY.values())

    def rerun(self, command):
        """The outcome of running `command` a second time (after its first run)."""
        self.run(command)
        if command not in self.reruns:
            self.reruns[command] = self.execute(command)
        return self.reruns[command]

    def run(self, command):
        """The outcome of `command`, run now if it has not run yet."""
        if command not in self.outcomes:
            for need in TINY[command].needs:
                outcome = self.run(need)
                if outcome.returncode != 0:
                    pytest.fail(f"needs `{need}`, which failed: {outcome.stderr[-2000:]}")
            if command == SERVE:
                self.outcomes[command] = self.serve()
            else:
                self.outcomes[command] = self.execute(command)
        return self.outcomes[command]

    def execute(self, command):
        """Run `command` now (again, if it ran before)."""
        argv = self.argv(command)
        if argv[0] == "curl" and shutil.which("curl") is None:
            return curl_with_httpx(argv)
        proc = subprocess.run(
            argv, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=TIMEOUT
        )
        return Outcome(proc.returncode, proc.stdout, proc.stderr)

    def serve(self):
        """Start the server command on a free port; its URL is the outcome's stdout."""
        self.server_log = self.stack.enter_context(tempfile.TemporaryFile("w+"))
        server = local_server(self.argv(SERVE), timeout=120, output=self.server_log, cwd=ROOT)
        try:
            url = self.stack.enter_context(server)
        except RuntimeError as e:
            return Outcome(1, "", str(e))
        return Outcome(0, url, "")

    def close(self):
        self.stack.close()


@pytest.fixture(scope="module")
def readme(tmp_path_factory, request):
    runner = Readme(tmp_path_factory.mktemp("readme"))
    commands, reruns = set(), set()
    for item in request.session.items:  # the selected tests of this module: what they run
        if item.module is not sys.modules[__name__]:
            continue
        command = getattr(item, "callspec", None) and item.callspec.params.get("command")
        if item.originalname == "test_a_training_command_run_again_says_the_run_has_finished":
            reruns.add(command)
        elif command:
            commands.add(command)
            if command == PREPARE:
                reruns.add(PREPARE)  # check_prepare runs it twice
        elif "readme" in item.fixturenames:
            commands.add(DEMO)  # the Python block reads the demo run
    runner.prefetch(commands | reruns, reruns)
    yield runner
    runner.close()


def short_id(command):
    """A test id: the command less `python scripts/` (pytest numbers ids over 100 characters)."""
    return command.removeprefix("python scripts/")


def test_every_readme_command_has_a_row_in_the_table():
    commands = readme_commands()
    assert len(commands) == len(set(commands))
    missing = [c for c in commands if c not in TINY]
    stale = [c for c in TINY if c not in commands]
    assert not missing, f"README commands with no row in tests/test_readme.py's TINY: {missing}"
    assert not stale, f"rows of TINY no longer in README.md: {stale}"
    for command, tiny in TINY.items():
        assert all(need in TINY for need in tiny.needs), command
        if command in TRAINING:
            assert tiny.extra[-2] == "--output", command  # the second run's message names it


@pytest.mark.slow
@pytest.mark.parametrize("command", list(TINY), ids=short_id)
def test_the_readme_command_runs(readme, command):
    outcome = readme.run(command)
    assert outcome.returncode == 0, outcome.stderr[-4000:]
    assert "Traceback" not in outcome.stderr, outcome.stderr[-4000:]
    TINY[command].check(readme, outcome)


@pytest.mark.slow
@pytest.mark.parametrize("command", TRAINING, ids=short_id)
def test_a_training_command_run_again_says_the_run_has_finished(readme, command):
    first = readme.run(command)
    assert first.returncode == 0, first.stderr[-4000:]
    again = readme.rerun(command)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "Traceback" not in again.stderr, again.stderr[-4000:]
    run = Path(readme.argv(command)[-1])  # every training row ends with --output RUN
    finished_line = f"{run} has already finished 1 epoch; its best model is {run / 'best.keras'}"
    assert finished_line in again.stdout, again.stdout
    assert "Finished" not in again.stdout  # nothing trained


def test_curl_with_httpx_speaks_like_curl(monkeypatch, tmp_path):
    # The fallback for a machine without curl sends what `curl -s -F name=@file URL` sends.
    (tmp_path / "a.png").write_bytes(b"png")
    sent = {}

    def post(url, files, timeout):
        sent.update(url=url, files=files)
        return httpx.Response(200, text='{"ok": true}')

    monkeypatch.setattr(httpx, "post", post)
    outcome = curl_with_httpx(["curl", "-s", "-F", f"file=@{tmp_path}/a.png", "127.0.0.1:9/x"])
    assert outcome.stdout == '{"ok": true}'
    assert sent == {"url": "http://127.0.0.1:9/x", "files": [("file", ("a.png", b"png"))]}


# The Backends section's Python block runs as written, on JAX against the demo run.
PYTHON_CHECKS = """
import json, sys
print(json.dumps({
    "backend": __import__("keras").backend.backend(), "shape": list(probabilities.shape),
    "classified": len(rt.classify(photo, k=3)),
    "count": results["count"], "tensorflow": "tensorflow" in sys.modules,
}))
"""


@pytest.mark.slow
def test_the_readme_python_block_runs_on_jax(readme, tmp_path):
    jax_blocks = [b for b in blocks("python") if 'os.environ["KERAS_BACKEND"] = "jax"' in b]
    assert len(jax_blocks) == 1
    assert readme.run(DEMO).returncode == 0
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "alexnet").symlink_to(readme.paths["runs"] / "alexnet")
    code = jax_blocks[0] + PYTHON_CHECKS
    env = {**readme.env, "PYTHONPATH": str(ROOT)}
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {
        "backend": "jax",
        "shape": [2, 10],
        "classified": 3,
        "count": 3,
        "tensorflow": False,
    }


@pytest.mark.slow
def test_every_other_python_block_runs_as_written(tmp_path):
    others = [b for b in blocks("python") if 'os.environ["KERAS_BACKEND"] = "jax"' not in b]
    assert others, "the Models page's block is gone"
    for code in others:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=TIMEOUT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]


def anchors(page):
    """GitHub's anchors of a Markdown page's headings (outside code blocks)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    titles = re.findall(r"^#+ (.*)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", t.strip().lower()).replace(" ", "-") for t in titles}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_of_the_documentation_reaches_its_file_and_heading(page):
    links = re.findall(r"\]\(([^)\s]+)\)", page.read_text())
    broken = []
    for link in links:
        if re.match(r"[a-z]+://", link):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists() or (
            anchor and target.suffix == ".md" and anchor not in anchors(target)
        ):
            broken.append(link)
    assert not broken, f"{page.name}: {broken}"


def test_the_readme_links_every_page_under_docs():
    text = README.read_text()
    assert [p.name for p in PAGES[1:] if f"(docs/{p.name}" not in text] == []
