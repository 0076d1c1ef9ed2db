"""Training images per CPU-second: raw JPEGs, prepared data, and a PIL reference; XLA on/off.

All three make the same AlexNet training batches (float32 [32, 227, 227, 3], random 227
crop, flip with probability 1/2, PCA lighting per image; the mean is subtracted in the
model) from the same photo-like 500x375 JPEGs (quality 90):

- raw: `train_dataset` over the class folders (decode every JPEG whole, rescale the
  shorter side to 256, crop);
- prepared: `prepare.py`'s 256x256 shards, then `train_dataset` on them (the crop decoded
  directly from the JPEG, lighting and cast per batch);
- PIL: a plain Python loop over PIL and NumPy doing the raw steps (the PyTorch-era recipe).

It also times the prepare pass itself (images per CPU-second, bytes per image), opening
each source (the folder's one-time decode scan against reading the prepared index), and
one AlexNet training step at the paper's batch 128 with and without `--jit-compile`.

    python benchmarks/bench_pipeline.py [--images 256] [--passes 3] [--write]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common  # noqa: E402

RESIZE, CROP, BATCH, STEP_BATCH = 256, 227, 32, 128
# SPEC.md section 5: AlexNet training on one H100 (bf16, batch 256), images/s.
GPU_RATES = {"PyTorch eager": 8537, "torch.compile": 17839, "Keras on JAX (XLA)": 15173}
HOST_CORES = 16  # the H100 machines' host cores


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


def timed(fn):
    """(result, wall seconds, this process's CPU seconds) of `fn()`."""
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def rates(runs, n_images, passes):
    """{name: (images/s, images per CPU-second)} of each one-pass `run()`.

    Best of `passes` after a warm-up; the runs alternate pass by pass, so load from other
    processes hits all of them alike. CPU time is this process's, all threads included,
    which other processes on the machine do not inflate.
    """
    best = {name: (float("inf"), float("inf")) for name in runs}
    for run in runs.values():
        run()
    for _ in range(passes):
        for name, run in runs.items():
            _, wall, cpu = timed(run)
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return {name: (n_images / w, n_images / c) for name, (w, c) in best.items()}


def drain(ds):
    """A run that iterates a dataset once."""

    def run():
        for x, _ in ds:
            x.shape  # noqa: B018  (the batch is materialised by iteration)

    return run


def train_step_rates(steps=3):
    """{jit_compile: images/s} of the paper's AlexNet training step at batch 128."""
    import keras
    import tensorflow as tf

    from keras_alexnet.models import build_model
    from keras_alexnet.optim import make_train_step

    x = tf.random.uniform((STEP_BATCH, CROP, CROP, 3), 0, 255)
    y = tf.random.uniform((STEP_BATCH,), 0, 1000, tf.int32)
    result = {}
    for jit_compile in (False, True):
        model = build_model("alexnet", classifier_activation=None)
        optimizer = keras.optimizers.SGD(0.01, momentum=0.9)
        optimizer.build(model.trainable_variables)
        step = make_train_step(
            tf.distribute.get_strategy(), model, optimizer, STEP_BATCH, 5e-4,
            jit_compile=jit_compile,
        )  # fmt: skip
        float(step(x, y)[0])  # trace and compile
        best = min(timed(lambda s=step: float(s(x, y)[0]))[1] for _ in range(steps))
        result[jit_compile] = STEP_BATCH / best
    return result


def measure(args, tmp):
    """Every figure of the table, from JPEGs written under `tmp`."""
    from keras_alexnet.data import IMAGENET_STATS, directory_source, load_source, train_dataset
    from keras_alexnet.data.prepared import prepare

    rng = np.random.default_rng(0)
    root, prepared = tmp / "jpegs", tmp / "prepared"
    write_jpegs(root / "train", args.images, rng)  # all training: every run sees every file
    raw_bytes = sum(p.stat().st_size for p in root.rglob("*.jpg"))
    source, scan_s, scan_cpu = timed(lambda: directory_source(root, cache=tmp / "cache"))
    _, prep_s, prep_cpu = timed(lambda: prepare(root, prepared, log=lambda _: None))
    fast, open_s, _ = timed(lambda: load_source(prepared))
    prep_bytes = sum(p.stat().st_size for p in prepared.glob("*.tfrecord"))
    n = source.num_train - source.num_train % BATCH

    def dataset(src):
        return train_dataset(src, image_size=CROP, resize=RESIZE, batch_size=BATCH, seed=0)

    eigval, eigvec = np.array(IMAGENET_STATS.eigval), np.array(IMAGENET_STATS.eigvec)
    paths = sorted(str(p) for p in root.rglob("*.jpg"))[:n]
    runs = {
        "raw": drain(dataset(source)),
        "prepared": drain(dataset(fast)),
        "PIL": lambda: [None for _ in reference_batches(paths, eigval, eigvec, rng)],
    }
    return {
        "n": n, "rates": rates(runs, n, args.passes), "scan_s": scan_s, "open_s": open_s,
        "prepare": (args.images / prep_s, args.images / prep_cpu, prep_bytes / args.images),
        "raw_bytes": raw_bytes / args.images, "scan_cpu": scan_cpu,
        "steps": None if args.skip_train_step else train_step_rates(),
    }  # fmt: skip


def report(args, m):
    """The RESULTS.md section: provenance, the tables and the ratios."""
    r = m["rates"]
    lines = [
        common.provenance(),
        f"{args.images} photo-like 500x375 JPEGs (quality 90, {m['raw_bytes'] / 1e3:.0f} kB "
        f"each); best of {args.passes} passes of {m['n']} images; 1-minute load average at "
        f"the end {os.getloadavg()[0]:.1f} (other processes share the cores).",
        "",
        "| pipeline | images/s (wall clock) | images per CPU-second | vs PIL (per CPU-s) |",
        "|---|---|---|---|",
    ]
    names = {
        "raw": "raw JPEGs: `train_dataset` on the class folders",
        "prepared": "prepared: `train_dataset` on `prepare.py`'s shards",
        "PIL": "reference PIL/NumPy loop on the raw JPEGs",
    }
    for key, label in names.items():
        wall, cpu = r[key]
        lines.append(f"| {label} | {wall:.0f} | {cpu:.0f} | {cpu / r['PIL'][1]:.2f}x |")
    rate, per_cpu, size = m["prepare"]
    lines += [
        "",
        f"Prepared over raw, per CPU-second: {r['prepared'][1] / r['raw'][1]:.2f}x.",
        f"The prepare pass: {per_cpu:.0f} images per CPU-second ({rate:.0f} images/s), "
        f"{size / 1e3:.1f} kB per image on disk (256x256, quality 90, 4:4:4 chroma).",
        f"Opening the source: the folder's one-time decode scan {m['scan_s']:.2f} s "
        f"({m['scan_cpu'] / args.images * 1e3:.1f} CPU-ms per image); the prepared index "
        f"{m['open_s'] * 1e3:.1f} ms.",
        "",
        "What differs per image: raw decodes the whole 500x375 JPEG, reads its EXIF "
        "orientation through a Python call, rescales it to 256 and crops; prepared reads a "
        "256x256 JPEG already upright and rescaled, decodes only the 227x227 crop "
        "(`decode_and_crop_jpeg`), parses its records 64 at a time and adds the lighting "
        "to the whole batch; PIL does the raw steps in one Python thread.",
        "",
        f"Projected for a {HOST_CORES}-core host (per-CPU-second rate x {HOST_CORES}): raw "
        f"{r['raw'][1] * HOST_CORES:,.0f}, prepared {r['prepared'][1] * HOST_CORES:,.0f} "
        "images/s, against one H100 training the paper's AlexNet (SPEC section 5): "
        + ", ".join(f"{k} {v:,}" for k, v in GPU_RATES.items())
        + " images/s.",
    ]
    if m["steps"]:
        off, on = m["steps"][False], m["steps"][True]
        lines += [
            "",
            "| AlexNet training step, batch 128, float32 | images/s |",
            "|---|---|",
            f"| graph (default) | {off:.1f} |",
            f"| `--jit-compile` (XLA) | {on:.1f} |",
            f"| ratio | {on / off:.2f}x |",
            "",
            "`--jit-compile` stays off by default: on this CPU the graph step, with oneDNN's "
            "kernels, is the faster one (the ratio above).",
        ]
    return "\n".join(lines)


def main(args):
    """Measure, print the section, and write it to RESULTS.md with --write."""
    try:
        import PIL  # noqa: F401
    except ImportError:
        print("bench_pipeline: Pillow is not installed (pip install '.[bench]'); skipped")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        body = report(args, measure(args, Path(tmp)))
    print(body)
    if args.write:
        common.update_section("Input pipeline", body)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="JPEGs (default: %(default)s)")
    parser.add_argument("--passes", type=int, default=3, help="timed passes (default: %(default)s)")
    parser.add_argument(
        "--skip-train-step",
        action="store_true",
        help="do not time the AlexNet training step with and without XLA (default: off)",
    )
    parser.add_argument(
        "--write", action="store_true", help="replace the Input pipeline section of RESULTS.md"
    )
    sys.exit(main(parser.parse_args()))
