"""The scripts' shared entry point (keras_alexnet.cli), atomic writes and progress lines."""

import argparse
import errno
import importlib
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, make_run

from keras_alexnet import cli, fileio
from keras_alexnet.commands import COMMANDS
from keras_alexnet.progress import Progress
from keras_alexnet.runtime import ModelPathError
from keras_alexnet.train_config import TrainingError

sys.path.insert(0, str(ROOT / "scripts"))

# ---------------------------------------------------------------- argparse validators


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        (cli.positive_int, {"1": 1, "32": 32}, ["0", "-1", "1.5", "x", ""]),
        (cli.non_negative_int, {"0": 0, "7": 7}, ["-1", "nan", "2.0"]),
        (cli.positive_float, {"0.01": 0.01, "3": 3.0}, ["0", "-1e-3", "nan", "inf", "-inf"]),
        (cli.non_negative_float, {"0": 0.0, "5e-4": 5e-4}, ["-5e-4", "nan", "inf"]),
        (cli.fraction, {"0.1": 0.1, "0.5": 0.5}, ["0", "1", "1.5", "-0.1", "nan", "inf"]),
    ],
)
def test_validators_accept_good_values_and_reject_bad_ones_in_one_line(kind, good, bad, capsys):
    parser = argparse.ArgumentParser(prog="tool.py")
    parser.add_argument("--value", type=kind, default=None, help="(default: %(default)s)")
    for text, value in good.items():
        assert parser.parse_args(["--value", text]).value == value
    for text in bad:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args([f"--value={text}"])
        assert exit_info.value.code == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("tool.py: error: argument --value: must be ")
        assert last.endswith(f"Received: {text!r}")


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("summary", ["--classes", "0"], "argument --classes: must be an integer >= 1"),
        ("summary", ["--classes", "-3"], "argument --classes: must be an integer >= 1"),
        ("predict", ["--model", "m", "x", "--top", "0"], "argument --top: must be"),
        ("predict", ["--model", "m", "x", "--batch-size", "0"], "argument --batch-size"),
        ("evaluate", ["--model", "m", "--batch-size", "0"], "argument --batch-size"),
        ("evaluate", ["--model", "m", "--resize", "-1"], "argument --resize"),
        ("export_onnx", ["--model", "m", "--calibration-images", "0"], "--calibration-images"),
        ("export_onnx", ["--model", "m", "--agreement-images", "0"], "--agreement-images"),
        ("compute_stats", ["--val-fraction", "1.5"], "argument --val-fraction"),
        ("compute_stats", ["--val-fraction", "nan"], "argument --val-fraction"),
    ],
)
def test_scripts_reject_bad_numbers_before_doing_anything(script, argv, message, capsys):
    parser = importlib.import_module(script).get_args_parser()
    with pytest.raises(SystemExit) as exit_info:
        cli.run(lambda args: pytest.fail("main ran"), parser, argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


# ---------------------------------------------------------------- cli.run


def raising(error):
    def main(args):
        raise error

    return main


@pytest.mark.parametrize(
    ("error", "line", "status"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/x/y"), "/x/y: Permission denied", 1),
        (fileio.WriteError(errno.ENOSPC, "/x/y"), "cannot write /x/y: No space left on device", 1),
        (ModelPathError("/m does not exist"), "/m does not exist", 1),
        (ValueError("bad value\non two lines"), "bad value on two lines", 1),
        (KeyboardInterrupt(), "interrupted", 130),
    ],
)
def test_run_turns_user_errors_into_one_line_and_an_exit_status(error, line, status, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.run(raising(error), argparse.ArgumentParser(), [], name="tool")
    assert exit_info.value.code == status
    assert capsys.readouterr().err == f"tool: error: {line}\n"


def test_run_names_the_fields_a_message_names_by_the_commands_flags(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--no-flip", dest="flip", action="store_false")
    parser.add_argument("--precision")
    parser.add_argument("--mixed-precision", dest="precision", action="store_const", const="m")
    assert cli.flags_by_field(parser) == {
        "help": "--help", "batch_size": "--batch-size", "flip": "--no-flip",
        "precision": "--precision",
    }  # fmt: skip
    message = "`batch_size` 7: lower `batch_size`, `flip`, `precision`; `lr` is not a flag"
    with pytest.raises(SystemExit):
        cli.run(raising(TrainingError(message)), parser, [], name="tool")
    assert capsys.readouterr().err == (
        "tool: error: --batch-size 7: lower --batch-size, --no-flip, --precision; "
        "`lr` is not a flag\n"
    )


# Exceptions the server turns into HTTP answers itself; no command prints them.
SERVER_INTERNAL = {"ApiError", "RequestTimeout", "ModelError", "_Refused"}


def test_every_package_error_a_command_can_raise_derives_from_the_one_base():
    import pkgutil

    import keras_alexnet
    from keras_alexnet.errors import Error

    found = set()
    for module in pkgutil.walk_packages(keras_alexnet.__path__, "keras_alexnet."):
        names = vars(importlib.import_module(module.name)).values()
        found |= {c for c in names if isinstance(c, type) and issubclass(c, BaseException)
                  and c.__module__ == module.name}  # fmt: skip
    assert {c.__name__ for c in found} >= {"TrainingError", "WeightsError", "ExportError"}
    outside = {c.__name__ for c in found if not issubclass(c, Error)} - SERVER_INTERNAL
    assert outside == set()
    assert cli.is_user_error(TrainingError("x")) and not cli.is_user_error(RuntimeError("x"))


def test_run_keeps_the_traceback_of_a_bug_and_returns_mains_result(capsys):
    with pytest.raises(ZeroDivisionError):
        cli.run(raising(ZeroDivisionError()), argparse.ArgumentParser(), [])
    assert cli.run(lambda args: 7, argparse.ArgumentParser(), []) == 7
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------- process start-up

START_UP = """
import os, sys
environ, meta_path = dict(os.environ), list(sys.meta_path)
import keras_alexnet, keras_alexnet.cli
assert dict(os.environ) == environ, set(os.environ.items()) ^ set(environ.items())
assert sys.meta_path == meta_path, sys.meta_path
keras_alexnet.cli.prepare_process()
hooks = len(sys.meta_path) - len(meta_path)
print(os.environ["KERAS_BACKEND"], os.environ["TF_ENABLE_ONEDNN_OPTS"], hooks)
"""


@pytest.mark.parametrize(("onednn", "printed"), [(None, "tensorflow 1 1"), ("0", "tensorflow 0 1")])
def test_importing_the_library_changes_nothing_global_and_prepare_process_does(onednn, printed):
    env = {k: v for k, v in os.environ.items() if k not in cli.PROCESS_DEFAULTS}
    if onednn is not None:  # a user's choice is kept
        env["TF_ENABLE_ONEDNN_OPTS"] = onednn
    proc = subprocess.run(
        [sys.executable, "-c", START_UP], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == printed.split()


# ---------------------------------------------------------------- atomic writes


def fail_replace(src, dst):
    raise OSError(errno.ENOSPC, "No space left on device", src, None, dst)


def fail_fsync(fd):
    raise OSError(errno.ENOSPC, "No space left on device")  # as a full disk: no file name


@pytest.mark.parametrize("failure", ["read_only_dir", "full_disk_on_rename", "full_disk_on_sync"])
def test_a_failed_write_names_the_path_keeps_the_old_file_and_leaves_no_temporaries(
    failure, tmp_path, monkeypatch
):
    target = tmp_path / "out" / "results.json"
    fileio.write_json(target, {"old": 1})
    before = sorted(p.name for p in target.parent.iterdir())
    if failure == "read_only_dir":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only directory")
        target.parent.chmod(0o555)
        cause = "Permission denied"
    else:
        if failure == "full_disk_on_rename":
            monkeypatch.setattr(os, "replace", fail_replace)
        else:
            monkeypatch.setattr(os, "fsync", fail_fsync)
        cause = "No space left on device"
    try:
        with pytest.raises(fileio.WriteError) as error:
            fileio.write_json(target, {"new": 2})
    finally:
        target.parent.chmod(0o755)
    assert str(error.value) == f"cannot write {target}: {cause}"
    assert fileio.read_json(target) == {"old": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == before


def test_a_file_where_a_folder_should_be_is_not_a_directory(tmp_path):
    (tmp_path / "file").write_text("keep")
    with pytest.raises(fileio.WriteError, match=r"cannot write .*/file/x.json: Not a directory"):
        fileio.write_json(tmp_path / "file" / "x.json", {})
    with pytest.raises(fileio.WriteError, match="Not a directory"):
        fileio.check_writable(tmp_path / "file" / "deeper" / "x.json")
    assert (tmp_path / "file").read_text() == "keep"


def test_a_failed_directory_replace_puts_the_old_directory_back(tmp_path, monkeypatch):
    target = tmp_path / "model_savedmodel"
    target.mkdir()
    (target / "saved_model.pb").write_text("old")
    real_replace, calls = os.replace, []

    def second_replace_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new directory into place, after the old one moved aside
            fail_replace(src, dst)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_replace_fails)
    with pytest.raises(fileio.WriteError, match="No space left on device"):
        with fileio.atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "saved_model.pb").write_text("new")
    assert (target / "saved_model.pb").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model_savedmodel"]


def test_other_errors_inside_an_atomic_write_pass_through_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        with fileio.atomic_path(tmp_path / "out.txt"):
            open(tmp_path / "missing-input.txt")  # a read, not the write
    assert not isinstance(error.value, fileio.WriteError)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- progress


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_in_a_log_is_plain_lines_every_tenth_and_at_the_end():
    stream = io.StringIO()
    clock = FakeClock()
    with Progress(1000, "images", "img", stream=stream, clock=clock) as bar:
        for _ in range(99):  # 990 images at 10 per second
            clock.now += 1.0
            bar.add(10)
        clock.now += 1.0
        bar.add(5)
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[:3] == [
        "images: 100/1000 (10 %), 10.0 img/s",
        "images: 200/1000 (20 %), 10.0 img/s",
        "images: 300/1000 (30 %), 10.0 img/s",
    ]
    assert len(lines) == 10 and lines[-1] == "images: 995/1000 (100 %), 9.9 img/s"


def test_progress_as_a_training_bar_resumes_mid_epoch_and_shows_values_every_30_s():
    stream = io.StringIO()
    clock = FakeClock()
    bar = Progress(10_000, "step", "step", initial=4000, stream=stream, clock=clock)
    for step in range(4001, 4011):  # slow steps: 30 s pass long before 10 % does
        clock.now += 15.0
        bar.update(step, {"loss": 1.0 / step, "top1": 0.5})
    bar.close()
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "step: 4002/10000 (40 %), 0.1 step/s, loss 0.0002, top1 0.5000"
    assert len(lines) == 5 and lines[-1].startswith("step: 4010/10000 (40 %)")


def test_progress_disabled_writes_nothing_and_a_terminal_gets_tqdms_bar():
    quiet = io.StringIO()
    with Progress(10, "images", stream=quiet, enabled=False) as bar:
        bar.add(10)
    assert quiet.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    with Progress(10, "images", "img", stream=terminal) as bar:
        bar.add(10, {"loss": math.pi})
    assert "\r" in terminal.getvalue() and "10/10" in terminal.getvalue()


# ---------------------------------------------------------------- scripts


OUTPUT_FLAGS = {
    "compute_stats": ["--output"],
    "evaluate": ["--model", "m", "--output-json"],
    "export_onnx": ["--model", "m", "--output"],
    "export_savedmodel": ["--model", "m", "--output"],
}


@pytest.mark.parametrize("script", sorted(OUTPUT_FLAGS))
def test_script_with_an_unwritable_output_is_one_line_before_any_work(script, tmp_path):
    (tmp_path / "file").write_text("keep")
    target = tmp_path / "file" / ("out.onnx" if script == "export_onnx" else "out")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{script}.py"), *OUTPUT_FLAGS[script], target],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"{script}.py: error: cannot write {target}: Not a directory"
    ]
    assert (tmp_path / "file").read_text() == "keep"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "vgg"
    return make_run(run, name="vgg_a", size=32, resize=36, steps=0)[0]


@pytest.mark.parametrize(
    ("script", "output", "flags"),
    [
        ("evaluate", "results.json", ["--protocol", "center", "--output-json"]),
        ("export_onnx", "tiny.onnx", ["--output"]),
        ("export_savedmodel", "tiny_savedmodel", ["--output"]),
        ("compute_stats", "stats.json", ["--output"]),
    ],
)
def test_script_whose_write_fails_at_the_end_keeps_the_old_output(
    script, output, flags, tiny_run, tmp_path, monkeypatch, capsys
):
    # A disk that fills during the work: the final rename fails with ENOSPC.
    target = tmp_path / output
    if output.endswith("savedmodel"):
        target.mkdir()
        target = target / "saved_model.pb"
    target.write_text("old")
    argv = [*flags, str(tmp_path / output)]
    if script != "compute_stats":
        argv = ["--model", str(tiny_run), *argv]
    module = importlib.import_module(script)
    monkeypatch.setattr(os, "replace", fail_replace)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(module.main, module.get_args_parser(), argv, name=script)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.splitlines()[-1] == (
        f"{script}: error: cannot write {tmp_path / output}: No space left on device"
    )
    assert "Traceback" not in err and "\r" not in err and "\x1b" not in err
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [output]
    if script == "evaluate":  # its progress in a captured (non-terminal) stderr
        assert "images: 364/364 (100 %)" in err


def test_compute_stats_writes_json_after_the_changes(tmp_path):
    script = ROOT / "scripts" / "compute_stats.py"
    proc = subprocess.run(
        [sys.executable, script, "--output", tmp_path / "s.json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(proc.stdout)


def test_every_command_is_an_installed_console_script_with_help():
    from importlib.metadata import entry_points

    from keras_alexnet.commands import COMMANDS

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")
               if e.value.startswith("keras_alexnet.")}  # fmt: skip
    expected = {"keras-alexnet-" + c.replace("_", "-"): f"keras_alexnet.commands:run_{c}"
                for c in COMMANDS}  # fmt: skip
    assert scripts == expected
    wrappers = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    assert wrappers == set(COMMANDS)
    bin_dir = Path(sys.executable).parent
    for name in sorted(scripts):
        out = subprocess.run([str(bin_dir / name), "--help"], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
        assert out.returncode == 0 and out.stdout.startswith("usage: "), (name, out.stderr)
        assert "Traceback" not in out.stderr, name


def test_no_help_text_quotes_a_measured_figure():
    """Speeds and sizes change with the machine: --help points to benchmarks/RESULTS.md."""
    import importlib
    import re

    from keras_alexnet.commands import COMMANDS

    figure = re.compile(
        r"\d+(\.\d+)?(-\d+(\.\d+)?)?x (faster|slower)|\d\s*(ms|img/s|images/s)\b|~\s*\d"
    )
    for command in COMMANDS:
        text = importlib.import_module(f"keras_alexnet.commands.{command}")
        found = figure.search(" ".join(text.get_args_parser().format_help().split()))
        assert found is None, (command, found and found.group())


# ---------------------------------------------------------------- plot

HISTORY = "epoch,loss,top1,val_top1,val_top5,lr\n1,2.3,0.1,0.12,0.5,0.01\n"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"epoch,loss,val_top1,val_top5,lr\n1,2.3,0.12,0.5,0.01\n", "no column(s) top1"),
        (HISTORY.replace("0.12", "twelve").encode(), "line 2: val_top1 is 'twelve', not a number"),
        (HISTORY.encode() + b"2,2.1,0.2\n", "line 3: val_top1 is None, not a number"),
        (bytes(range(256)) * 4, "is not a CSV text file"),
        (b"", "has no epochs to draw"),
        (HISTORY.partition("\n")[0].encode() + b"\n", "has no epochs to draw"),
    ],
    ids=["missing column", "not a number", "short row", "binary", "empty", "header only"],
)
def test_plot_of_a_broken_history_is_one_line_naming_the_file(content, words, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.csv").write_bytes(content)
    output = tmp_path / "curves.png"
    module = importlib.import_module("plot")
    with pytest.raises(SystemExit) as exit_info:
        cli.run(module.main, module.get_args_parser(), [str(run), "--output", str(output)])
    assert exit_info.value.code == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {run / 'history.csv'} ") and words in line, line
    assert not output.exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_no_help_says_default_none_and_a_bad_flag_names_the_program(command, capsys):
    module = importlib.import_module(f"keras_alexnet.commands.{command}")
    parser = module.get_args_parser()
    parser.prog = f"{command}.py"
    with pytest.raises(SystemExit) as exit_info:
        cli.run(module.main, parser, ["--help"], name=parser.prog)
    text = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--help" in text
    assert not re.search(r"\(default:\s+None", text), text
    with pytest.raises(SystemExit):
        cli.run(module.main, parser, ["--no-such-flag"], name=parser.prog)
    assert capsys.readouterr().err.startswith(f"{command}.py: error: ")


def test_every_train_config_field_has_a_train_flag():
    import dataclasses

    from keras_alexnet.commands import train as command
    from keras_alexnet.train_config import TrainConfig

    dests = {action.dest for action in command.get_args_parser()._actions}
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model_args"}
    assert fields - dests == set()
    args = command.get_args_parser().parse_args(["--keep-checkpoints", "5", "--cache", "/c"])
    assert (args.keep_checkpoints, args.cache) == (5, "/c")
