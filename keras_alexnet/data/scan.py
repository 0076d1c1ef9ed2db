"""Reading image files once: header checks, decoding as the pipeline does, per-file moments.

A folder's files are decoded once when first listed (`scan_files`, cached by path, size and
mtime): files that do not decode are skipped and reported, and the training statistics
come from the same pass (`stats_from_moments`). The prepared-set writer uses the same checks.
"""

import concurrent.futures
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_alexnet import fileio
from keras_alexnet.data.stats import StatsAccumulator
from keras_alexnet.images import decode_tf, headers

MAX_PIXELS = headers.DATA_MAX_PIXELS  # larger images are skipped (headers says why)
REPORTED = 5  # how many skipped file names a report shows


def read_image_bytes(path):
    """A file's bytes, or (None, the reason it cannot be used) without decoding it."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, f"unreadable ({e.strerror})"
    return data, header_problem(data)


def header_problem(data):
    """Why encoded bytes cannot be used, from their header alone; None if they may be."""
    if not data:
        return "empty file"
    size = headers.header_size(data[:65536])
    if size is None:
        return "not a JPEG, PNG, GIF or BMP image"
    return headers.shape_problem(*size, MAX_PIXELS)  # refused before decoding


def decoded_problem(decode, *args):
    """Run `decode(*args)`; return (its result, None) or (None, why the image is unusable).

    The result's first element is the decoded [H, W, 3] image (a tensor).
    """
    try:
        result = decode(*args)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
        return None, "cannot be decoded: " + _decode_error(e)[:120]
    height, width = (int(v) for v in result[0].shape[:2])
    if height < 1 or width < 1:
        return None, "has no pixels"
    # A JPEG whose frame header the header read did not reach:
    return result, headers.shape_problem(width, height, MAX_PIXELS)


def _decode_error(error):
    """A TensorFlow decode error's own message, without a tf.function's wrapping lines.

    Those are "Graph execution error:", "Detected at node ..." and the indented Python
    frames and node lines around the kernel's message.
    """
    lines = [
        line for line in str(error.message).splitlines()
        if line.strip() and not line[0].isspace()
        and not line.startswith(("Graph execution error", "Detected at node"))
    ]  # fmt: skip
    return re.sub(r"\{\{[^}]*\}\}\s*", "", lines[0] if lines else type(error).__name__)


def pack_moments(count, total, outer):
    """One image's statistics row: (count, sum of RGB, upper triangle of sum of outer products)."""
    return np.concatenate([[count], total, np.asarray(outer)[np.triu_indices(3)]])


def scan_image(path):
    """Decode one file as the pipeline will; return (reason or None, pixel moments or None).

    The moments are `pack_moments`' row, the statistics' share of this image; they let the
    statistics of any subset be summed without decoding again.
    """
    data, problem = read_image_bytes(path)
    if problem:
        return problem, None
    result, problem = decoded_problem(lambda d: (decode_tf.decode(d),), data)
    if problem:
        return problem, None
    x = result[0].numpy().reshape(-1, 3).astype(np.float64)
    return None, pack_moments(len(x), x.sum(axis=0), x.T @ x)


def scan_files(paths, cache):
    """Scan every file once; results are cached per file by (path, size, mtime).

    Returns {path: (reason, moments)}. A second listing of an unchanged tree decodes
    nothing; a changed or added file is decoded again.
    """
    stamps = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:  # a link to nowhere or a loop: the scan says why it is unusable
            stamps[p] = (-1, -1)
            continue
        stamps[p] = (st.st_size, st.st_mtime_ns)
    key = hashlib.sha1(os.path.commonpath(paths).encode()).hexdigest() if paths else "none"
    cache_file = cache / "scan" / f"{key}.npz"
    known = {}
    if cache_file.exists():
        with np.load(cache_file) as z:
            arrays = {k: z[k] for k in z.files}
        names = arrays["paths"].tobytes().decode().split("\n")
        reasons = arrays["reasons"].tobytes().decode().split("\n")
        for i, p in enumerate(names):
            stamp = (int(arrays["size"][i]), int(arrays["mtime"][i]))
            known[p] = (stamp, reasons[i] or None, None if reasons[i] else arrays["moments"][i])
    results = {p: known[p][1:] for p in paths if p in known and known[p][0] == stamps[p]}
    todo = [p for p in paths if p not in results]
    if todo:
        with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results.update(zip(todo, pool.map(scan_image, todo), strict=True))
        merged = {p: (stamps[p], *results[p]) for p in paths}
        merged.update({p: v for p, v in known.items() if p not in merged})
        names = list(merged)
        with fileio.atomic_path(cache_file) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    paths=np.frombuffer("\n".join(names).encode(), np.uint8),
                    reasons=np.frombuffer(
                        "\n".join((merged[p][1] or "").replace("\n", " ") for p in names).encode(),
                        np.uint8,
                    ),
                    size=np.array([merged[p][0][0] for p in names], np.int64),
                    mtime=np.array([merged[p][0][1] for p in names], np.int64),
                    moments=np.stack(
                        [np.zeros(10) if merged[p][2] is None else merged[p][2] for p in names]
                    ),
                )
    return results


def stats_from_moments(moments):
    """DatasetStats from per-image moments rows (count, sum[3], upper outer[6])."""
    total = np.sum(moments, axis=0)
    acc = StatsAccumulator()
    acc.count = total[0]
    acc.total = total[1:4]
    outer = np.zeros((3, 3))
    outer[np.triu_indices(3)] = total[4:]
    acc.outer = outer + np.triu(outer, 1).T
    return acc.result()


def report_skipped(skipped):
    """Print once how many files were skipped, and the first few with the reason."""
    if not skipped:
        return
    shown = "; ".join(f"{p}: {r}" for p, r in skipped[:REPORTED])
    more = f" (and {len(skipped) - REPORTED} more)" if len(skipped) > REPORTED else ""
    print(f"keras_alexnet: skipping {len(skipped)} unusable file(s): {shown}{more}")
