"""Training curves as pictures: a run's curves.png, and several runs overlaid in one.

Each run directory's history.csv (one row per epoch) is drawn in four panels: the training
and validation loss together, training and validation top-1 together (in %, so overfitting
shows as the gap between them), validation top-5 (%) and the learning rate (log axis).
Training is dashed, validation solid; each run has its colour and marker, and later runs are
drawn thinner on top, so identical curves stay visible. Runs are labelled with their name,
their family's options (AlexNet: towers, LRN, pooling), width, first learning rate and data,
from metadata.json and history.csv. Drawn with matplotlib's Agg canvas (no display), which
the 'plots' extra installs.
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
# history.csv columns drawn; val_loss is absent from runs written before it was recorded.
SERIES = ("loss", "val_loss", "top1", "val_top1", "val_top5", "lr")
OPTIONAL = ("val_loss",)
PERCENT = ("top1", "val_top1", "val_top5")  # fractions in history.csv, drawn in %
# Panel title -> the series it overlays; the last (lr) is drawn on a log axis.
PANELS = {
    "loss (cross-entropy)": ("loss", "val_loss"),
    "top-1 accuracy (%)": ("top1", "val_top1"),
    "validation top-5 accuracy (%)": ("val_top5",),
    "learning rate": ("lr",),
}
TRAIN_STYLE, VAL_STYLE = "--", "-"
MARKERS = "osD^v<>ph*"
FIGURE_SIZE = (14.0, 3.6)  # inches: four panels side by side
DPI = 100


class HistoryError(Error, ValueError):
    """A history.csv that cannot be drawn: not CSV text, no epochs, a missing column or value."""


@dataclasses.dataclass(frozen=True)
class RunCurves:
    """One run's per-epoch series, as read from its history.csv."""

    label: str  # the legend's text: the run's name and its settings
    epochs: tuple[int, ...]
    series: dict  # PANELS key -> tuple of floats, one per epoch


def run_label(path, metadata=None, lr=None):
    """The run's name, its family's options, width, first learning rate and data."""
    name = Path(path).resolve().name
    if metadata is None:
        return name if lr is None else f"{name} (lr {lr:g})"
    try:
        options = get_spec(metadata.model).options
    except ValueError:  # a model this version does not know: its name says it
        options = ()
    args = metadata.architecture()
    shown = [option.label(args.get(option.name, option.default)) for option in options]
    if not shown and metadata.model != name:
        shown = [metadata.model]
    width = args.get("width", 1)
    if width != 1:
        shown.append(f"width 1/{1 / width:g}" if width < 1 else f"width {width:g}")
    if lr is not None:
        shown.append(f"lr {lr:g}")
    shown.append(f"data {Path(metadata.data).name if metadata.data else 'demo digits'}")
    return f"{name} ({', '.join(shown)})"


def read_run(path):
    """Read a run directory's history.csv and metadata.json into a RunCurves."""
    run = RunDirectory(path)
    if not run.history.exists():
        raise FileNotFoundError(
            f"{run.path} has no history.csv: not a run directory, or no epoch has ended"
        )
    epochs, series = _read_history(run)
    metadata = Metadata.load(run.metadata) if run.metadata.exists() else None
    label = run_label(run.path, metadata, lr=series["lr"][0])
    return RunCurves(label=label, epochs=epochs, series=series)


def _read_history(run):
    """(epochs, {PANELS key: values}) of a run's history.csv; HistoryError naming the file."""
    path = run.history
    try:
        rows = run.read_history()
    except (UnicodeDecodeError, csv.Error) as e:
        raise HistoryError(f"{path} is not a CSV text file ({e})") from None
    if not rows:
        raise HistoryError(f"{path} has no epochs to draw")
    required = [key for key in ("epoch", *SERIES) if key not in OPTIONAL]
    missing = [key for key in required if key not in rows[0]]
    if missing:
        raise HistoryError(
            f"{path} has no column(s) {', '.join(missing)} "
            f"(a run's history.csv has {', '.join(('epoch', *SERIES))})"
        )
    columns = {key: [] for key in ("epoch", *SERIES)}
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        for key, values in columns.items():
            if key in OPTIONAL and not row.get(key):  # an older run, or resumed across
                values.append(float("nan"))
                continue
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
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    # A Figure on its own Agg canvas: no pyplot, no global backend switch, no display.
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(PANELS))
    handles = []
    for index, run in enumerate(runs):
        look = {
            "color": f"C{index % 10}",
            "marker": MARKERS[index % len(MARKERS)],
            "linewidth": max(1.0, 2.6 - 0.5 * index),  # later runs thinner, on top
            "markersize": max(3.0, 7.0 - 1.2 * index),
            "zorder": 2 + index,
        }
        for ax, keys in zip(axes, PANELS.values(), strict=True):
            for key in keys:
                scale = 100.0 if key in PERCENT else 1.0
                values = [v * scale for v in run.series[key]]
                style = VAL_STYLE if key.startswith("val_") or key == "lr" else TRAIN_STYLE
                ax.plot(run.epochs, values, linestyle=style, **look)
        handles.append(Line2D([], [], label=run.label, **look))
    for ax, title in zip(axes, PANELS, strict=True):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[-1].set_yscale("log")
    handles += [
        Line2D([], [], color="black", linestyle=TRAIN_STYLE, label="training"),
        Line2D([], [], color="black", linestyle=VAL_STYLE, label="validation"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 3))
    output = Path(output)
    with fileio.atomic_path(output) as tmp:
        figure.savefig(tmp, format="png")
    return output


def write_run_curves(path):
    """Draw a run directory's own curves into its curves.png; return that path."""
    return draw([read_run(path)], Path(path) / CURVES_FILENAME)
