"""Top-1 / top-5 under the papers' test protocols, for a Keras, SavedModel or ONNX model.

The protocols (center, ten_crop, dense, multi_scale) are `keras_alexnet.protocols.PROTOCOLS`:
the data pipeline makes each image's views, their scores are averaged here.

A label counts as top-k when fewer than k classes score strictly higher than it (ties at
the boundary count as correct, as `tf.math.in_top_k` does).

`evaluate` reads a data source through tf.data (the TensorFlow backend);
`evaluate_arrays` cuts the same views from in-memory images in NumPy, on any Keras backend.
"""

import time

import numpy as np

from keras_alexnet import fileio
from keras_alexnet.backend import require_tensorflow
from keras_alexnet.errors import Error, field
from keras_alexnet.images.crop import EvalTransform, resize_bilinear, shorter_side_shape
from keras_alexnet.progress import Progress
from keras_alexnet.protocols import PROTOCOLS, fit_scales, paper_scales
from keras_alexnet.runtime import ModelPathError, Runtime, load

TIE_TOLERANCE = 1e-5


class EvaluationError(Error, ValueError):
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
            f"{field('scales')} takes integers like 256,384,512. Received: {text!r}"
        ) from None
    if not scales or min(scales) < 1:
        raise EvaluationError(f"{field('scales')} takes positive integers. Received: {text!r}")
    return scales


def _views(source, runtime, protocol, split, transform, scales, batch_size):
    """Yield (scores [B, classes], labels [B]) batches of `split` under `protocol`.

    Each image's views are scored at every test scale, averaged over its views, then over
    the scales.
    """
    import tensorflow as tf

    from keras_alexnet.data import eval_dataset

    datasets = tuple(
        eval_dataset(
            source,
            protocol=protocol.name,
            image_size=transform.crop,
            resize=q,
            batch_size=batch_size,
            split=split,
        )
        for q in protocol.test_scales(transform.resize, scales)
    )
    for elements in tf.data.Dataset.zip(datasets):
        labels = elements[0][1].numpy()
        scores = []
        for views, _ in elements:
            views = views.numpy()
            flat = runtime.predict(views.reshape(-1, *views.shape[-3:]))
            scores.append(protocol.reduce(flat, len(labels)))
        yield np.mean(scores, axis=0), labels


def _protocol(name):
    """The Protocol called `name`; EvaluationError naming the choices for any other."""
    if name not in PROTOCOLS:
        raise EvaluationError(
            f"{field('protocol')} must be one of {tuple(PROTOCOLS)}. Received: {name!r}"
        )
    return PROTOCOLS[name]


def resolve_scales(protocol, metadata, crop, scales=None):
    """(Q, note): multi_scale's test scales, `scales` or the paper's for the model, else None.

    By default VGG Section 4.2's for the training scale the metadata records
    (`protocols.paper_scales`), each Q below the `crop` raised to it, which `note` says.
    """
    if not protocol.multi_scale:
        return None, None
    if scales is not None:
        return tuple(int(s) for s in scales), None
    smin, smax = metadata.resize, metadata.resize_max
    paper = paper_scales(smin, smax)
    fitted = fit_scales(paper, crop)
    if fitted == paper:
        return fitted, None
    trained = f"S = {smin}" if smax in (None, smin) else f"S in [{smin}, {smax}]"
    low = ", ".join(str(q) for q in paper if q < crop)
    note = (
        f"Q = {low} raised to the {crop}px input (VGG Section 4.2 gives "
        f"{', '.join(str(q) for q in paper)} for {trained})"
    )
    return fitted, note


def _check(runtime, source, split, protocol, transform, scales):
    """Raise EvaluationError for a model/data/protocol combination that cannot work."""
    _check_model(runtime, protocol, transform, scales)
    _check_data(runtime.metadata, source, split)


def _check_model(runtime, protocol, transform, scales):
    """Raise EvaluationError for a model that cannot take this protocol's views."""
    image_size = transform.crop
    if runtime.input_size is not None and runtime.input_size != image_size:
        raise EvaluationError(
            f"{runtime.path} takes {runtime.input_size}x{runtime.input_size} images but the "
            f"data is cropped to {image_size}x{image_size}: pass {field('image_size')} "
            f"{runtime.input_size} or re-export the model with keras-alexnet-export-onnx"
        )
    if protocol.whole_image and not runtime.dense:
        raise EvaluationError(
            f"{runtime.path} takes only {runtime.input_size}px crops, so it cannot run "
            f"{field('protocol')} {protocol.name}: use center or ten_crop, or export with "
            "keras-alexnet-export-onnx (its exports take whole images)"
        )
    smallest = min(protocol.test_scales(transform.resize, scales))
    if smallest < image_size:
        raise EvaluationError(
            f"the images are rescaled to {smallest}, smaller than the {image_size}px input: "
            f"use a {field('resize')} / {field('scales')} of at least the input size"
        )


def _check_data(metadata, source, split):
    """Raise EvaluationError for data the model was not trained on, or an empty split."""
    if list(source.class_names) != list(metadata.class_names):
        raise EvaluationError(
            f"the data {source.name!r} has {len(source.class_names)} classes "
            f"{_names(source.class_names)} but the model was trained on "
            f"{len(metadata.class_names)} {_names(metadata.class_names)}: pass the data it "
            f"was trained on with {field('data')}"
        )
    if not source.sizes.get(split):
        raise EvaluationError(
            f"split {split!r} of {source.name!r} is empty or missing (it has "
            f"{ {k: v for k, v in source.sizes.items()} }): pass another {field('split')} or "
            f"{field('data')}"
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
    scales=None,
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
    bundled demo set); `protocol` None the metadata's (`protocols.trained_protocol`);
    `scales` None multi_scale's Q from the model's training scale (`resolve_scales`);
    `image_size` and `resize` default to the metadata's. Keys: top1, top5 (accuracy
    fractions), top1_error, top5_error, count, near_ties (images whose label ties another
    class within 1e-5), protocol, runtime, images_per_second, seconds, model, data, split,
    input_size, resize, scales, scales_note; with `return_scores` also scores and labels.
    """
    require_tensorflow("evaluate (a tf.data pipeline)", "evaluate_arrays on images in memory")
    runtime = (
        model if isinstance(model, Runtime) else load(model, threads=threads, provider=provider)
    )
    metadata = runtime.metadata
    protocol = _protocol(protocol or metadata.protocol)
    transform = EvalTransform.from_metadata(metadata, resize=resize, crop=image_size)
    scales, note = resolve_scales(protocol, metadata, transform.crop, scales)
    if data is None:
        data, data_dir = metadata.data, data_dir or metadata.data_dir
    source = _open_data(data, data_dir)
    _check(runtime, source, split, protocol, transform, scales)
    views = _views(source, runtime, protocol, split, transform, scales, batch_size)
    scores, labels, seconds = _score(views, source.sizes[split], verbose)
    if labels is None:
        raise EvaluationError(f"split {split!r} of {source.name!r} yielded no images")
    results = {
        **_accuracy(scores, labels),
        "protocol": protocol.name,
        "runtime": runtime.name,
        "images_per_second": len(labels) / seconds if seconds > 0 else float("inf"),
        "seconds": seconds,
        "model": str(runtime.path),
        "data": source.name,
        "split": split,
        "input_size": transform.crop,
        "resize": transform.resize,
        "scales": list(scales) if protocol.multi_scale else None,
        "scales_note": note,
    }
    if return_scores:
        results["scores"], results["labels"] = scores, labels
    return results


ALL = "all"  # evaluate's --protocol that runs every protocol


def evaluate_all(
    model,
    *,
    data=None,
    data_dir=None,
    split="val",
    scales=None,
    image_size=None,
    resize=None,
    batch_size=32,
    threads=None,
    provider="auto",
    verbose=True,
):
    """`evaluate` under every protocol of PROTOCOLS in one pass: a list of result dicts.

    The model is loaded once and each image decoded once: every protocol's views at every
    scale Q are cut from that decode (an image rescaled to a Q once for all views at that
    Q), and views shared by two protocols (dense's and multi_scale's at Q = resize) are
    scored once. The numbers are `evaluate`'s under each protocol alone; `scales` applies
    to multi_scale only, `resize` and `image_size` to all. A protocol the runtime cannot
    run (dense or multi_scale on a fixed-size runtime) gives a dict with its `protocol` and
    the reason under `skipped`. Each dict's `own` says whether it is the model's protocol
    (its metadata's); `seconds` and `images_per_second` are the shared pass's.
    """
    require_tensorflow("evaluate (a tf.data pipeline)", "evaluate_arrays on images in memory")
    runtime = (
        model if isinstance(model, Runtime) else load(model, threads=threads, provider=provider)
    )
    metadata = runtime.metadata
    transform = EvalTransform.from_metadata(metadata, resize=resize, crop=image_size)
    if data is None:
        data, data_dir = metadata.data, data_dir or metadata.data_dir
    source = _open_data(data, data_dir)
    plans = {name: _plan(runtime, source, protocol, transform, scales)
             for name, protocol in PROTOCOLS.items()}  # fmt: skip
    _check_data(metadata, source, split)
    keys = list(
        dict.fromkeys(key for plan in plans.values() if "keys" in plan for key in plan["keys"])
    )
    scored, labels, seconds = _score_shared(
        source, runtime, split, keys, transform, batch_size, verbose
    )
    if labels is None:
        raise EvaluationError(f"split {split!r} of {source.name!r} yielded no images")
    results = []
    for name, plan in plans.items():
        own = name == metadata.protocol
        if "skipped" in plan:
            results.append({"protocol": name, "skipped": plan["skipped"], "own": own})
            continue
        scores = np.mean([scored[key] for key in plan["keys"]], axis=0).astype(np.float32)
        results.append({
            **_accuracy(scores, labels),
            "protocol": name,
            "runtime": runtime.name,
            "images_per_second": len(labels) / seconds if seconds > 0 else float("inf"),
            "seconds": seconds,
            "model": str(runtime.path),
            "data": source.name,
            "split": split,
            "input_size": transform.crop,
            "resize": transform.resize,
            "scales": plan["scales"],
            "scales_note": plan["note"],
            "own": own,
        })  # fmt: skip
    return results


def _plan(runtime, source, protocol, transform, scales):
    """{keys: the (views, Q) this protocol averages, scales, note} or {skipped: why}.

    Only a whole-image or multi-scale protocol may be skipped: center's and ten_crop's
    errors are the model's or the data's, and every protocol would fail alike.
    """
    from keras_alexnet.data.pipeline import _check_prepared_scale

    qs, note = resolve_scales(protocol, runtime.metadata, transform.crop, scales)
    try:
        _check_model(runtime, protocol, transform, qs)
        for q in protocol.test_scales(transform.resize, qs):
            try:
                _check_prepared_scale(source, q)
            except ValueError as e:
                raise EvaluationError(str(e)) from None
    except EvaluationError as e:
        if not (protocol.whole_image or protocol.multi_scale):
            raise
        return {"skipped": str(e)}
    keys = [(protocol.views, q) for q in protocol.test_scales(transform.resize, qs)]
    return {"keys": keys, "scales": list(qs) if protocol.multi_scale else None, "note": note}


def _shared_views(source, split, keys, crop):
    """A tf.data pipeline of (views at each (kind, Q) of `keys`, label), one decode per image.

    The views are `data.eval_dataset`'s, cut with the same ops.
    """
    import tensorflow as tf

    from keras_alexnet.data.pipeline import _options, decoder
    from keras_alexnet.images import crop_tf

    decode = decoder(source)
    cut = {"center": crop_tf.center_crop, "ten_crop": crop_tf.ten_crop}

    def views(contents, label):
        image = decode(contents)
        rescaled = {q: crop_tf.resize_shorter(image, q) for q in dict.fromkeys(q for _, q in keys)}
        out = tuple(
            crop_tf.dense_views(rescaled[q]) if kind == "dense" else cut[kind](rescaled[q], crop)
            for kind, q in keys
        )
        return out, label

    ds = source.encoded(split).map(views, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def _score_shared(source, runtime, split, keys, transform, batch_size, verbose):
    """Score every (kind, Q) of `keys` in one pass: ({key: scores [N, classes]}, labels, seconds).

    Crops go to the model in batches of `batch_size` images, as `evaluate` sends them;
    whole images one by one.
    """
    reducer = {p.views: p for p in PROTOCOLS.values()}
    scored = {key: [] for key in keys}
    pending, labels = {key: [] for key in keys if key[0] != "dense"}, []

    def flush():
        for (kind, q), crops in pending.items():
            if crops:
                views = np.stack(crops)
                flat = runtime.predict(views.reshape(-1, *views.shape[-3:]))
                scored[kind, q].append(reducer[kind].reduce(flat, len(crops)))
                crops.clear()

    ds = _shared_views(source, split, keys, transform.crop)
    start, batched = time.perf_counter(), 0
    with Progress(source.sizes[split], "images", "img", enabled=verbose) as bar:
        for views, label in ds:
            for (kind, q), view in zip(keys, views, strict=True):
                if kind == "dense":
                    scored[kind, q].append(reducer[kind].reduce(runtime.predict(view.numpy()), 1))
                else:
                    pending[kind, q].append(view.numpy())
            labels.append(int(label.numpy()))
            batched += 1
            if batched == batch_size:
                flush()
                batched = 0
            bar.add(1)
        flush()
    seconds = time.perf_counter() - start
    if not labels:
        return None, None, seconds
    scores = {key: np.concatenate(parts).astype(np.float32) for key, parts in scored.items()}
    return scores, np.asarray(labels), seconds


def format_all(results):
    """Render `evaluate_all`'s results as one table: a row per protocol, top-1 and top-5 in %."""
    ran = next(r for r in results if "skipped" not in r)
    lines = [
        f"model    {ran['model']} ({ran['runtime']})",
        f"data     {ran['data']} / {ran['split']}, {ran['count']:,} images",
        "",
        f"{'protocol':<22}  {'top-1 %':>8}  {'top-5 %':>8}",
    ]
    for result in results:
        name = result["protocol"] + (" *" if result["own"] else "")
        if "skipped" in result:
            lines.append(f"{name:<22}  {'-':>8}  {'-':>8}  {result['skipped']}")
            continue
        scales = result.get("scales") or [result["resize"]]
        label = f"{name} (Q {','.join(str(q) for q in scales)})"
        lines.append(f"{label:<22}  {100 * result['top1']:>8.2f}  {100 * result['top5']:>8.2f}")
    lines.append("* the model's own protocol (its metadata's)")
    return "\n".join(lines)


def evaluate_arrays(model, images, labels, *, protocol=None, scales=None, batch_size=32):
    """Evaluate a model path or Runtime on uint8 [H, W, 3] images in memory, on any backend.

    The views are those of `evaluate` (the model's metadata gives resize and crop), cut in
    NumPy; returns top1, top5, their errors, count, near_ties, protocol, runtime and scales.
    """
    runtime = model if isinstance(model, Runtime) else load(model)
    protocol = _protocol(protocol or runtime.metadata.protocol)
    transform = EvalTransform.from_metadata(runtime.metadata)
    scales, note = resolve_scales(protocol, runtime.metadata, transform.crop, scales)
    _check_model(runtime, protocol, transform, scales)
    labels = np.asarray(labels, np.int64)
    batches = []
    for start in range(0, len(labels), batch_size):
        chunk = images[start : start + batch_size]
        per_scale = [
            protocol.reduce(_predict_views(runtime, chunk, protocol, q, transform.crop), len(chunk))
            for q in protocol.test_scales(transform.resize, scales)
        ]
        batches.append(np.mean(per_scale, axis=0))
    results = _accuracy(np.concatenate(batches), labels)
    return {
        **results,
        "protocol": protocol.name,
        "runtime": runtime.name,
        "scales": list(scales) if protocol.multi_scale else None,
        "scales_note": note,
    }


def _predict_views(runtime, images, protocol, resize, crop):
    """Scores [len(images) * views, classes] of each image's views (whole images one by one)."""
    views = [numpy_views(np.asarray(image), protocol.views, resize, crop) for image in images]
    if protocol.whole_image:
        return np.concatenate([runtime.predict(v) for v in views])
    return runtime.predict(np.concatenate(views))


def numpy_views(image, views, resize, crop):
    """One image's views [V, h, w, 3] float32 in NumPy, as `data.eval_dataset` cuts them.

    The shorter side is rescaled to `resize`; "center" is the central `crop` square,
    "ten_crop" the corners and centre then their reflections, "dense" the whole image and
    its reflection.
    """
    h, w = shorter_side_shape(image.shape[0], image.shape[1], resize)
    if views == "dense":
        whole = resize_bilinear(image, h, w)
        return np.stack([whole, whole[:, ::-1]])
    centre = ((h - crop) // 2, (w - crop) // 2)
    corners = [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop)]
    spots = [centre] if views == "center" else [*corners, centre]
    crops = np.stack([resize_bilinear(image, h, w, top=t, left=x, crop=crop) for t, x in spots])
    return crops if views == "center" else np.concatenate([crops, crops[:, :, ::-1]])


def _open_data(data, data_dir):
    """The data source, or EvaluationError saying why it cannot be opened."""
    from keras_alexnet.data import load_source

    try:
        return load_source(data, data_dir)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise EvaluationError(f"cannot open the data {data!r}: {e}") from e


def _score(views, total, verbose):
    """Run the (scores, labels) batches with a progress bar: (scores, labels, seconds)."""
    all_scores, all_labels = [], []
    start = time.perf_counter()
    with Progress(total, "images", "img", enabled=verbose) as bar:
        for scores, labels in views:
            all_scores.append(np.asarray(scores, np.float32))
            all_labels.append(np.asarray(labels))
            bar.add(len(labels))
    seconds = time.perf_counter() - start
    if not all_labels:
        return None, None, seconds
    return np.concatenate(all_scores), np.concatenate(all_labels), seconds


def _accuracy(scores, labels):
    """Top-1/top-5 accuracy and error, the count and the near ties of a pass's scores."""
    count = len(labels)
    top1 = float(topk_correct(scores, labels, 1).mean())
    top5 = float(topk_correct(scores, labels, min(5, scores.shape[1])).mean())
    return {
        "top1": top1,
        "top5": top5,
        "top1_error": 1.0 - top1,
        "top5_error": 1.0 - top5,
        "count": count,
        "near_ties": int(near_ties(scores, labels).sum()),
    }


def format_table(results):
    """Render evaluation results as a two-column text table."""
    protocol = results["protocol"]
    if results.get("scales"):
        protocol += " (Q = " + ", ".join(str(s) for s in results["scales"]) + ")"
    elif protocol in PROTOCOLS:
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
    if results.get("scales_note"):
        rows.insert(4, ("note", results["scales_note"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def write_results(path, results):
    """Write the JSON-serialisable part of `results` to `path` atomically."""
    keep = {k: v for k, v in results.items() if k not in ("scores", "labels")}
    fileio.write_json(path, keep)


__all__ = [
    "PROTOCOLS",
    "EvaluationError",
    "ModelPathError",
    "evaluate",
    "evaluate_all",
    "evaluate_arrays",
    "format_all",
    "format_table",
    "near_ties",
    "numpy_views",
    "parse_scales",
    "resolve_scales",
    "topk_correct",
    "write_results",
]
