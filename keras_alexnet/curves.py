"""Training curves as pictures: a run's curves.png, and several runs overlaid in one.

Each run directory's history.csv (one row per epoch) is drawn in five panels: training loss,
training top-1, validation top-1, validation top-5 and the learning rate (log axis). Runs are
labelled with their name and, for AlexNet, the experiment settings in their metadata.json
(towers, LRN, pooling). Drawn with matplotlib's Agg canvas (no display), which the 'plots'
extra installs.
"""

import csv
import dataclasses
from pathlib import Path

from keras_alexnet import extras, fileio
from keras_alexnet.errors import Error
from keras_alexnet.metadata import Metadata
from keras_alexnet.registry import get_spec
from keras_alexnet.rundir import RunDirectory

CURVES_FILENAME = "curves.png"
# history.csv column -> panel title; the last (lr) is drawn on a log axis.
PANELS = {
    "loss": "training loss",
    "top1": "training top-1",
    "val_top1": "validation top-1",
    "val_top5": "validation top-5",
    "lr": "learning rate",
}
FIGURE_SIZE = (15.0, 3.2)  # inches: five panels side by side
DPI = 100


class HistoryError(Error, ValueError):
    """A history.csv that cannot be drawn: not CSV text, no epochs, a missing column or value."""


@dataclasses.dataclass(frozen=True)
class RunCurves:
    """One run's per-epoch series, as read from its history.csv."""

    label: str  # the legend's text: the run's name and its settings
    epochs: tuple[int, ...]
    series: dict  # PANELS key -> tuple of floats, one per epoch


def run_label(path, metadata=None):
    """The run's name and its family's options (AlexNet: towers, LRN, pooling) as recorded."""
    name = Path(path).resolve().name
    if metadata is None:
        return name
    try:
        options = get_spec(metadata.model).options
    except ValueError:  # a model this version does not know: its name says it
        options = ()
    args = metadata.architecture()
    shown = [option.label(args.get(option.name, option.default)) for option in options]
    return f"{name} ({', '.join(shown) or metadata.model})"


def read_run(path):
    """Read a run directory's history.csv and metadata.json into a RunCurves."""
    run = RunDirectory(path)
    if not run.history.exists():
        raise FileNotFoundError(
            f"{run.path} has no history.csv: not a run directory, or no epoch has ended"
        )
    epochs, series = _read_history(run)
    metadata = Metadata.load(run.metadata) if run.metadata.exists() else None
    return RunCurves(label=run_label(run.path, metadata), epochs=epochs, series=series)


def _read_history(run):
    """(epochs, {PANELS key: values}) of a run's history.csv; HistoryError naming the file."""
    path = run.history
    try:
        rows = run.read_history()
    except (UnicodeDecodeError, csv.Error) as e:
        raise HistoryError(f"{path} is not a CSV text file ({e})") from None
    if not rows:
        raise HistoryError(f"{path} has no epochs to draw")
    missing = [key for key in ("epoch", *PANELS) if key not in rows[0]]
    if missing:
        raise HistoryError(
            f"{path} has no column(s) {', '.join(missing)} "
            f"(a run's history.csv has {', '.join(('epoch', *PANELS))})"
        )
    columns = {key: [] for key in ("epoch", *PANELS)}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        for key, values in columns.items():
            try:
                values.append((int if key == "epoch" else float)(row[key]))
            except (TypeError, ValueError):  # TypeError: the row ends before this column
                raise HistoryError(
                    f"{path} line {line}: {key} is {row[key]!r}, not a number"
                ) from None
    epochs = tuple(columns.pop("epoch"))
    return epochs, {key: tuple(values) for key, values in columns.items()}


def draw(runs, output):
    """Draw the RunCurves `runs` overlaid, one panel per PANELS entry, into PNG `output`.

    Written atomically; returns `output` as a Path.
    """
    extras.require("plots")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # A Figure on its own Agg canvas: no pyplot, no global backend switch, no display.
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(PANELS))
    for ax, (key, title) in zip(axes, PANELS.items(), strict=True):
        for run in runs:
            ax.plot(run.epochs, run.series[key], marker="o", markersize=3, label=run.label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[-1].set_yscale("log")
    figure.legend(
        *axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=min(len(runs), 3)
    )
    output = Path(output)
    with fileio.atomic_path(output) as tmp:
        figure.savefig(tmp, format="png")
    return output


def write_run_curves(path):
    """Draw a run directory's own curves into its curves.png; return that path."""
    return draw([read_run(path)], Path(path) / CURVES_FILENAME)
