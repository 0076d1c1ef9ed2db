"""Images/s of the AlexNet training transform: keras_alexnet's tf.data vs a PIL/NumPy loop.

Both run the same steps on the same JPEG files: decode, resize the shorter side to 256
(bilinear), random 227x227 crop, horizontal flip with probability 1/2, PCA lighting
(alpha ~ N(0, 0.1) per image), float32 batch. The reference is the usual PyTorch-era
recipe (one of the seeds) written as a plain Python loop over PIL and NumPy. Mean
subtraction is left out of both: keras_alexnet does it inside the model.

    python benchmarks/bench_pipeline.py [--images 256] [--passes 3] [--skip-train-step]
"""

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESIZE, CROP, BATCH = 256, 227, 32


def write_jpegs(root, n, rng):
    """N photo-like 500x375 JPEGs (smooth colour fields plus noise) in two class folders."""
    from PIL import Image

    for i in range(n):
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.BICUBIC), np.int16)
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        path = root / f"class{i % 2}" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, "JPEG", quality=90)


def reference_batches(paths, eigval, eigvec, rng):
    """The PIL/NumPy loop: yields float32 [BATCH, 227, 227, 3] batches."""
    from PIL import Image

    batch = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        w, h = image.size
        scale = RESIZE / min(w, h)
        image = image.resize((max(RESIZE, round(w * scale)), max(RESIZE, round(h * scale))))
        w, h = image.size
        left, top = rng.integers(0, w - CROP + 1), rng.integers(0, h - CROP + 1)
        image = image.crop((left, top, left + CROP, top + CROP))
        if rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        alpha = rng.normal(0, 0.1, 3)
        pixels = np.asarray(image, np.float32) + (eigvec @ (alpha * eigval)).astype(np.float32)
        batch.append(pixels)
        if len(batch) == BATCH:
            yield np.stack(batch)
            batch = []


def rates(runs, n_images, passes):
    """Images/s and images per CPU-second of each `run()` (one pass over n_images).

    Best of `passes` after a warm-up; the runs alternate pass by pass, so load from other
    processes hits all of them alike. CPU time is this process's, all threads included,
    which other processes on the machine do not inflate.
    """
    best = [float("inf")] * len(runs)
    best_cpu = [float("inf")] * len(runs)
    for run in runs:
        run()
    for _ in range(passes):
        for i, run in enumerate(runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            best[i] = min(best[i], time.perf_counter() - start)
            best_cpu[i] = min(best_cpu[i], time.process_time() - start_cpu)
    return [(n_images / b, n_images / c) for b, c in zip(best, best_cpu, strict=True)]


def train_step_rate():
    """Images/s one AlexNet SGD step at batch 128 consumes (the paper's batch size)."""
    import keras
    import tensorflow as tf

    from keras_alexnet.models import build_model

    model = build_model("alexnet")
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    x = tf.random.uniform((128, CROP, CROP, 3), 0, 255)
    y = tf.random.uniform((128,), 0, 1000, tf.int32)
    model.train_on_batch(x, y)  # build + trace
    start = time.perf_counter()
    model.train_on_batch(x, y)
    return 128 / (time.perf_counter() - start)


def main(args):
    """Write the JPEGs, time both pipelines, print the table."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        print("bench_pipeline: Pillow is not installed (pip install '.[bench]'); skipped")
        return 0
    import tensorflow as tf

    from keras_alexnet.data import IMAGENET_STATS, directory_source, train_dataset

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        write_jpegs(root / "train", args.images, rng)  # all training: both see every file
        paths = sorted(str(p) for p in root.rglob("*.jpg"))
        start = time.perf_counter()
        source = directory_source(root, cache=Path(tmp) / "cache")
        scan = time.perf_counter() - start
        n_train = source.num_train - source.num_train % BATCH
        ds = train_dataset(source, image_size=CROP, resize=RESIZE, batch_size=BATCH, seed=0)

        def ours():
            for x, _ in ds:
                x.shape  # noqa: B018  (the batch is materialised by iteration)

        eigval, eigvec = np.array(IMAGENET_STATS.eigval), np.array(IMAGENET_STATS.eigvec)
        ref_paths = paths[:n_train]

        def reference():
            for _ in reference_batches(ref_paths, eigval, eigvec, rng):
                pass

        (ours_rate, ours_cpu), (ref_rate, ref_cpu) = rates([ours, reference], n_train, args.passes)
    step = None if args.skip_train_step else train_step_rate()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, tf {tf.__version__}")
    print(f"{args.images} JPEGs 500x375 (q90); listing + one-time scan: {scan:.2f} s")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (1 min)")
    print(f"best of {args.passes} passes of {n_train} images each")
    print("| pipeline | images/s (wall clock) | images per CPU-second |")
    print("|---|---|---|")
    print(f"| keras_alexnet train_dataset (tf.data) | {ours_rate:.0f} | {ours_cpu:.0f} |")
    print(f"| reference PIL/NumPy loop | {ref_rate:.0f} | {ref_cpu:.0f} |")
    print(
        f"ratio: {ours_rate / ref_rate:.2f}x wall-clock, {ours_cpu / ref_cpu:.2f}x per CPU-second"
    )
    if step is not None:
        print(f"one AlexNet training step (batch 128) consumes {step:.1f} images/s")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="JPEGs (default: %(default)s)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes (default: %(default)s)")
    parser.add_argument(
        "--skip-train-step",
        action="store_true",
        help="do not time an AlexNet training step (default: %(default)s)",
    )
    sys.exit(main(parser.parse_args()))
