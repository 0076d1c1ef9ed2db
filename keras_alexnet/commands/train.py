"""Train AlexNet or a VGG configuration with the papers' recipe; re-run to resume.

With --data the defaults are the papers' (--recipe paper): AlexNet 227 crops of 256, batch
128, 90 epochs; VGG 224 crops of 256, batch 256, 74 epochs; SGD momentum 0.9, weight decay
5e-4 coupled into the gradient, lr 0.01 divided by 10 when the validation accuracy stops
improving (at most three times), PCA lighting and reflections; AlexNet's N(0, 0.01) init,
VGG's Glorot init (VGG Section 3.1; --init-from for its own). With --weights (fine-tuning)
the lr starts at 0.001, a tenth of the paper's (its rate after the first drop), unless --lr
is given.

--recipe small departs from the paper where a small set (a few hundred or thousand images)
needs it: He init and inputs scaled to about [-1, 1] (--init he --scale 0.00784; the paper's
N(0, 0.01) on 0-255 pixels stays at chance on such sets, and He on 0-255 pixels diverges),
67x67 crops of 76x76 images (AlexNet's smallest input; VGG 32 of 36: a CPU trains them in
minutes) and batch 32; reflections, lighting, the schedule and the epochs stay the paper's.
A run whose loss climbs or whose validation stays at chance says so after its second epoch.

With no --data it trains on the bundled demo set (1,797 real UCI handwritten digits, 8x8
pixels) with the small recipe, no reflections (a mirrored digit is often no digit) and 4
epochs.
"""

import argparse
import sys

from keras_alexnet import cli
from keras_alexnet.registry import model_choices
from keras_alexnet.train_config import (
    FINE_TUNE_LR,
    PAPER_LR,
    PRECISIONS,
    RECIPES,
    SCHEDULES,
    STRATEGIES,
    TrainConfig,
)
from keras_alexnet.training import train

DEFAULTS = TrainConfig()  # the flags' defaults are the config's, typed once


def _resize(text):
    """Parse --resize: 'S' or 'LO,HI' (scale jittering)."""
    parts = [int(p) for p in text.split(",")]
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or not 0 < parts[0] <= parts[1]:
        raise argparse.ArgumentTypeError("expected S or LO,HI with 0 < LO <= HI")
    return tuple(parts)


def get_args_parser():
    """Return the argument parser of this script."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for add in (_model_args, _start_args, _data_args, _optimisation_args, _run_args):
        add(p)
    return p


def _start_args(parser):
    """Add the flags of fine-tuning from published or trained weights."""
    p = parser.add_argument_group("starting weights (fine-tuning)")
    p.add_argument(
        "--weights",
        default=None,
        metavar="PATH_OR_RUN_OR_SOURCE",
        help="start from a published weight file (.caffemodel, .onnx, Keras .h5, torchvision "
        ".pth/.safetensors: see import_weights), a publisher's name (keras, torchvision, "
        "caffe, imagenet: its file for --model, downloaded once into the cache) or a run "
        "directory / .keras file; the model "
        "keeps their normalisation, a head of another class count is re-initialised, and the "
        f"lr starts at {FINE_TUNE_LR:g} unless --lr is given (default: off)",
    )
    p.add_argument(
        "--freeze-up-to",
        default=None,
        metavar="LAYER",
        help="keep every layer up to and including LAYER (e.g. conv5, block5_pool) fixed "
        "and train the rest (default: train every layer)",
    )


def _model_args(parser):
    """Add the flags of the model and its precision."""
    p = parser.add_argument_group("the model and its precision")
    p.add_argument(
        "--model",
        default=DEFAULTS.model,
        choices=model_choices(),
        help="which published model to train (default: %(default)s)",
    )
    p.add_argument(
        "--recipe",
        default=None,
        choices=tuple(RECIPES),
        help="paper: the papers' settings; small: for a few hundred or thousand images, He "
        "init, inputs scaled to about [-1, 1], 67 crops of 76 (VGG 32 of 36), batch 32 "
        "(flags given override it) (default: paper with --data; small on the demo set)",
    )
    p.add_argument(
        "--init",
        default=None,
        choices=("paper", "glorot", "he"),
        help="weight initialisation (default: AlexNet paper, its N(0, 0.01); VGG glorot, as "
        "VGG Section 3.1 notes: 'it is possible to initialise the weights without "
        "pre-training by using the random initialisation procedure of Glorot & Bengio' (its "
        "N(0, 1e-2) init overflows the deeper nets); --recipe small and demo: he)",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="RUN",
        help="VGG's own recipe (Section 3.1): start the first four conv layers and the three "
        "FC layers from a trained VGG A (a run directory or .keras file), the rest from "
        "--init (default: off)",
    )
    p.add_argument(
        "--width",
        type=cli.positive_float,
        default=DEFAULTS.width,
        help="width multiplier of every layer; 1 is the paper (default: %(default)s)",
    )
    cli.add_model_options(p)
    p.add_argument(
        "--precision",
        default=DEFAULTS.precision,
        choices=PRECISIONS,
        help="float32, mixed_float16 (with loss scaling; GPUs) or mixed_bfloat16 (CPUs with "
        "AMX/AVX-512 BF16, GPUs) (default: %(default)s)",
    )
    p.add_argument(
        "--mixed-precision",
        dest="precision",
        action="store_const",
        const="mixed_float16",
        help="the same as --precision mixed_float16",
    )


def _data_args(parser):
    """Add the flags of data and augmentation (AlexNet Section 4, VGG Section 3.1)."""
    p = parser.add_argument_group("data and augmentation (AlexNet Section 4, VGG Section 3.1)")
    cli.add_source_arguments(p, seed_and_cache=False)
    p.add_argument(
        "--resize",
        type=_resize,
        default=None,
        help="training scale S, or LO,HI for VGG scale jittering, e.g. 256,512 "
        "(default: 256, the papers; --recipe small and demo: AlexNet 76, VGG 36)",
    )
    p.add_argument(
        "--image-size",
        type=cli.positive_int,
        default=None,
        help="crop size (default: AlexNet 227, VGG 224; --recipe small and demo: AlexNet 67, "
        "VGG 32)",
    )
    p.add_argument(
        "--scale",
        type=cli.positive_float,
        default=None,
        help="multiplier after in-graph mean subtraction (default: 1, the papers; alexnet_tv "
        "1/57.6, torchvision's std; --recipe small and demo: 1/127.5)",
    )
    p.add_argument(
        "--no-pca-lighting",
        dest="pca_lighting",
        action="store_false",
        help="turn off AlexNet's PCA colour augmentation (default: on)",
    )
    p.add_argument(
        "--no-flip",
        dest="flip",
        action="store_false",
        default=None,
        help="turn off random horizontal reflections (default: on; demo: off, digits are "
        "not mirror-symmetric)",
    )


def _optimisation_args(parser):
    """Add the flags of optimisation (AlexNet Section 5, VGG Section 3.1)."""
    p = parser.add_argument_group("optimisation (AlexNet Section 5, VGG Section 3.1)")
    p.add_argument(
        "--epochs",
        type=cli.positive_int,
        default=None,
        help="epochs (default: AlexNet paper 90, VGG paper 74, demo 4)",
    )
    p.add_argument(
        "--batch-size",
        type=cli.positive_int,
        default=None,
        help="global batch size (default: AlexNet paper 128, VGG paper 256; --recipe small and "
        "demo: 32)",
    )
    p.add_argument(
        "--lr",
        type=cli.positive_float,
        default=None,
        help=f"initial learning rate (default: {PAPER_LR:g}, both papers; with --weights "
        f"{FINE_TUNE_LR:g}, the paper's rate after its first /10 drop)",
    )
    p.add_argument(
        "--momentum",
        type=cli.non_negative_float,
        default=DEFAULTS.momentum,
        help="SGD momentum, both papers (default: %(default)s)",
    )
    p.add_argument(
        "--weight-decay",
        type=cli.non_negative_float,
        default=DEFAULTS.weight_decay,
        help="L2 weight decay coupled into the gradient as in the AlexNet paper's "
        "update rule (default: %(default)s)",
    )
    p.add_argument(
        "--lr-schedule",
        default=DEFAULTS.lr_schedule,
        choices=SCHEDULES,
        help="plateau: /10 when val top-1 stops improving (the papers); step: /10 "
        "every --step-epochs; cosine (default: %(default)s)",
    )
    p.add_argument(
        "--plateau-patience",
        type=cli.positive_int,
        default=DEFAULTS.plateau_patience,
        help="epochs without improvement before a plateau drop (default: %(default)s)",
    )
    p.add_argument(
        "--max-lr-drops",
        type=cli.non_negative_int,
        default=DEFAULTS.max_lr_drops,
        help="at most this many /10 drops, three in both papers (default: %(default)s)",
    )
    p.add_argument(
        "--step-epochs",
        type=cli.positive_int,
        default=DEFAULTS.step_epochs,
        help="epochs between drops of the step schedule (default: %(default)s)",
    )


def _run_args(parser):
    """Add the flags of distribution, checkpoints and the run directory."""
    p = parser.add_argument_group("distribution, checkpoints and the run directory")
    p.add_argument(
        "--strategy",
        default=DEFAULTS.strategy,
        choices=STRATEGIES,
        help="tf.distribute strategy; mirrored uses all GPUs, or --cpu-replicas "
        "logical CPU devices; multi_worker reads TF_CONFIG (default: %(default)s)",
    )
    p.add_argument(
        "--cpu-replicas",
        type=cli.positive_int,
        default=DEFAULTS.cpu_replicas,
        help="replicas of a mirrored run on a CPU-only machine (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=cli.non_negative_int,
        default=DEFAULTS.seed,
        help="seed of init, data order and augmentation (default: %(default)s)",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="enable TF op determinism (bit-exact resume, slower) (default: off)",
    )
    p.add_argument(
        "--jit-compile",
        action="store_true",
        help="compile each training step's forward and backward pass with XLA; figures "
        "with and without in benchmarks/RESULTS.md (default: off)",
    )
    p.add_argument(
        "--steps-per-epoch",
        type=cli.positive_int,
        default=None,
        help="cap the steps of each epoch (default: the whole training set)",
    )
    p.add_argument(
        "--val-steps",
        type=cli.positive_int,
        default=None,
        help="cap the validation batches (default: the whole validation split)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=cli.positive_int,
        default=DEFAULTS.checkpoint_every,
        help="also checkpoint every N steps within an epoch (default: %(default)s)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=cli.positive_int,
        default=DEFAULTS.keep_checkpoints,
        help="how many of the newest checkpoints are kept on disk (default: %(default)s)",
    )
    p.add_argument(
        "--cache",
        default=DEFAULTS.cache,
        metavar="DIR",
        help="cache directory (folder scans, statistics, the demo set); "
        "none: $KERAS_ALEXNET_CACHE or ~/.cache/keras_alexnet",
    )
    p.add_argument(
        "--output",
        default=None,
        help="run directory; an existing one is resumed (default: runs/MODEL)",
    )


def main(args):
    """Run training and print where the results are."""
    values = vars(args)
    model_args = cli.pop_model_options(values)
    log = cli.flag_log(get_args_parser())  # training's lines name its settings as flags
    result = train(TrainConfig(**values, model_args=model_args), argv=sys.argv, log=log)
    if not result.already_finished:
        print(finished_line(result))


def finished_line(result):
    """The last line of a run: its last epoch's figures, and the best model's beside its path."""
    best = ""
    if result.best_model:
        best = (
            f"; best model {result.best_model} (epoch {result.best_epoch}: val top-1 "
            f"{cli.percent(result.best_val_top1)}, top-5 {cli.percent(result.best_val_top5)})"
        )
    return (
        f"Finished {cli.plural(result.epochs, 'epoch')} in {result.seconds:.0f} s on "
        f"{cli.plural(result.replicas, 'replica')}: last epoch val top-1 "
        f"{cli.percent(result.val_top1)}, top-5 {cli.percent(result.val_top5)}{best}"
    )
