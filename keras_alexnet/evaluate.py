"""Top-1 / top-5 under the papers' test protocols, for a Keras, SavedModel or ONNX model.

- center: rescale the shorter side to Q (the model's resize, 256), take the central crop.
- ten_crop: AlexNet, Section 4.1: the four corner and the centre crops and their
  horizontal reflections; the ten softmax outputs are averaged.
- dense: VGG, Section 3.2: the FC layers applied as convolutions over the whole image
  rescaled to Q; the class score map is averaged spatially, and the mirrored image's
  scores are averaged in.
- multi_scale: VGG, Section 4.2: dense evaluation at several Q, the scores averaged.

A label counts as top-k when fewer than k classes score strictly higher than it (ties at
the boundary count as correct, as `tf.math.in_top_k` does).
"""

import time

import numpy as np

from keras_alexnet import fileio
from keras_alexnet.progress import Progress
from keras_alexnet.runtime import ModelPathError, Runtime, load

PROTOCOLS = ("center", "ten_crop", "dense", "multi_scale")
DEFAULT_SCALES = (256, 384, 512)
TIE_TOLERANCE = 1e-5


class EvaluationError(ValueError):
    """Arguments or data that cannot be evaluated, with what to do instead."""


def topk_correct(scores, labels, k):
    """Boolean [N]: whether each label is among the top `k` scores (fewer than k higher)."""
    scores = np.asarray(scores)
    labels = np.asarray(labels, np.int64)
    label_scores = scores[np.arange(len(labels)), labels]
    higher = (scores > label_scores[:, None]).sum(axis=1)
    return higher < k


def near_ties(scores, labels, tolerance=TIE_TOLERANCE):
    """Boolean [N]: whether another class scores within `tolerance` of the label's score.

    Only these images may be ranked differently by two runtimes whose scores differ by
    less than `tolerance`.
    """
    scores = np.asarray(scores)
    labels = np.asarray(labels, np.int64)
    label_scores = scores[np.arange(len(labels)), labels]
    close = np.abs(scores - label_scores[:, None]) <= tolerance
    close[np.arange(len(labels)), labels] = False
    return close.any(axis=1)


def parse_scales(text):
    """Parse "256,384,512" into a tuple of ints."""
    try:
        scales = tuple(int(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise EvaluationError(
            f"--scales takes integers like 256,384,512. Received: {text!r}"
        ) from None
    if not scales or min(scales) < 1:
        raise EvaluationError(f"--scales takes positive integers. Received: {text!r}")
    return scales


def _views(source, runtime, protocol, split, image_size, resize, scales, batch_size):
    """Yield (scores [B, classes], labels [B]) batches of `split` under `protocol`."""
    from keras_alexnet.data import eval_dataset

    predict = runtime.predict
    if protocol in ("center", "ten_crop"):
        ds = eval_dataset(
            source, protocol=protocol, image_size=image_size, resize=resize,
            batch_size=batch_size, split=split,
        )  # fmt: skip
        for images, labels in ds:
            images = images.numpy()
            if protocol == "ten_crop":
                b = images.shape[0]
                scores = predict(images.reshape(-1, *images.shape[2:]))
                scores = scores.reshape(b, 10, -1).mean(axis=1)
            else:
                scores = predict(images)
            yield scores, labels.numpy()
        return
    import tensorflow as tf

    sizes = (resize,) if protocol == "dense" else scales
    datasets = [
        eval_dataset(source, protocol="dense", image_size=image_size, resize=q, split=split)
        for q in sizes
    ]
    for elements in tf.data.Dataset.zip(tuple(datasets)):
        scores = [predict(views.numpy()).mean(axis=0) for views, _ in elements]
        yield np.mean(scores, axis=0)[None], elements[0][1].numpy()


def _check(runtime, source, split, protocol, image_size, resize, scales):
    """Raise EvaluationError for a model/data/protocol combination that cannot work."""
    metadata = runtime.metadata
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"--protocol must be one of {PROTOCOLS}. Received: {protocol!r}")
    if runtime.input_size is not None and runtime.input_size != image_size:
        raise EvaluationError(
            f"{runtime.path} takes {runtime.input_size}x{runtime.input_size} images but the "
            f"data is cropped to {image_size}x{image_size}: pass --image-size "
            f"{runtime.input_size} or re-export the model with scripts/export_onnx.py"
        )
    if protocol in ("dense", "multi_scale") and not runtime.dense:
        raise EvaluationError(
            f"{runtime.path} takes only {runtime.input_size}px crops, so it cannot run "
            f"--protocol {protocol}: use center or ten_crop, or export with "
            "scripts/export_onnx.py (its exports take whole images)"
        )
    smallest = min(scales) if protocol == "multi_scale" else resize
    if smallest < image_size:
        raise EvaluationError(
            f"the images are rescaled to {smallest}, smaller than the {image_size}px input: "
            "use a resize / scales of at least the input size"
        )
    if list(source.class_names) != list(metadata.class_names):
        raise EvaluationError(
            f"the data {source.name!r} has {len(source.class_names)} classes "
            f"{_names(source.class_names)} but the model was trained on "
            f"{len(metadata.class_names)} {_names(metadata.class_names)}: pass the data it "
            "was trained on with --data"
        )
    if not source.sizes.get(split):
        raise EvaluationError(
            f"split {split!r} of {source.name!r} is empty or missing (it has "
            f"{ {k: v for k, v in source.sizes.items()} }): pass another --split or --data"
        )


def _names(names, shown=3):
    """A short rendering of a list of class names."""
    names = list(names)
    more = ", ..." if len(names) > shown else ""
    return "(" + ", ".join(names[:shown]) + more + ")"


def evaluate(
    model,
    *,
    data=None,
    data_dir=None,
    split="val",
    protocol=None,
    scales=DEFAULT_SCALES,
    image_size=None,
    resize=None,
    batch_size=32,
    threads=None,
    provider="auto",
    verbose=True,
    return_scores=False,
):
    """Evaluate a model path (or a loaded Runtime) under a protocol; return a dict of results.

    `data` None means the data recorded in the model's metadata (itself None for the
    bundled demo set); `protocol` None the model's paper protocol (AlexNet ten_crop, VGG
    dense); `image_size` and `resize` default to the metadata's. Keys: top1, top5 (accuracy
    fractions), top1_error, top5_error, count, near_ties (images whose label ties another
    class within 1e-5), protocol, runtime, images_per_second, seconds, model, data, split,
    input_size, resize, scales; with `return_scores` also scores and labels (NumPy).
    """
    from keras_alexnet.data import load_source

    runtime = (
        model if isinstance(model, Runtime) else load(model, threads=threads, provider=provider)
    )
    metadata = runtime.metadata
    protocol = protocol or metadata.protocol
    image_size = int(image_size or metadata.input_size)
    resize = int(resize or metadata.resize)
    scales = tuple(int(s) for s in scales)
    if data is None:
        data, data_dir = metadata.data, data_dir or metadata.data_dir
    try:
        source = load_source(data, data_dir)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise EvaluationError(f"cannot open the data {data!r}: {e}") from e
    _check(runtime, source, split, protocol, image_size, resize, scales)
    all_scores, all_labels = [], []
    start = time.perf_counter()
    views = _views(source, runtime, protocol, split, image_size, resize, scales, batch_size)
    with Progress(source.sizes[split], "images", "img", enabled=verbose) as bar:
        for scores, labels in views:
            all_scores.append(np.asarray(scores, np.float32))
            all_labels.append(np.asarray(labels))
            bar.add(len(labels))
    seconds = time.perf_counter() - start
    if not all_labels:
        raise EvaluationError(f"split {split!r} of {source.name!r} yielded no images")
    scores, labels = np.concatenate(all_scores), np.concatenate(all_labels)
    count = len(labels)
    k = min(5, scores.shape[1])
    top1 = float(topk_correct(scores, labels, 1).mean())
    top5 = float(topk_correct(scores, labels, k).mean())
    results = {
        "top1": top1,
        "top5": top5,
        "top1_error": 1.0 - top1,
        "top5_error": 1.0 - top5,
        "count": count,
        "near_ties": int(near_ties(scores, labels).sum()),
        "protocol": protocol,
        "runtime": runtime.name,
        "images_per_second": count / seconds if seconds > 0 else float("inf"),
        "seconds": seconds,
        "model": str(runtime.path),
        "data": source.name,
        "split": split,
        "input_size": image_size,
        "resize": resize,
        "scales": list(scales) if protocol == "multi_scale" else None,
    }
    if return_scores:
        results["scores"], results["labels"] = scores, labels
    return results


def format_table(results):
    """Render evaluation results as a two-column text table."""
    protocol = results["protocol"]
    if results.get("scales"):
        protocol += " (Q = " + ", ".join(str(s) for s in results["scales"]) + ")"
    elif protocol in ("center", "ten_crop", "dense"):
        protocol += f" (Q = {results['resize']})"
    rows = [
        ("model", results["model"]),
        ("runtime", results["runtime"]),
        ("data", f"{results['data']} / {results['split']}"),
        ("protocol", protocol),
        ("images", f"{results['count']:,}"),
        ("top-1 accuracy", f"{results['top1']:.2%}  (error {results['top1_error']:.2%})"),
        ("top-5 accuracy", f"{results['top5']:.2%}  (error {results['top5_error']:.2%})"),
        ("images/s", f"{results['images_per_second']:.1f}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_results(path, results):
    """Write the JSON-serialisable part of `results` to `path` atomically."""
    keep = {k: v for k, v in results.items() if k not in ("scores", "labels")}
    fileio.write_json(path, keep)


__all__ = [
    "DEFAULT_SCALES",
    "PROTOCOLS",
    "EvaluationError",
    "ModelPathError",
    "evaluate",
    "format_table",
    "near_ties",
    "parse_scales",
    "topk_correct",
    "write_results",
]
