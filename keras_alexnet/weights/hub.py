"""Published weights by name: each publisher's own file, fetched once into a cache, verified.

`build_model("vgg16", weights="torchvision")`, `import_weights --preset keras`,
`train --weights caffe`: a source name (`SOURCES`, or "imagenet" for the first source that
publishes the model) resolves to the publisher's file for that model (`PUBLISHED`), kept
under `<cache>/weights/` (`$KERAS_ALEXNET_CACHE`, default `~/.cache/keras_alexnet`). A
file already there is used as it is, offline. Otherwise it is downloaded (nothing else in
the package downloads anything, and only when a name is asked for): to a `.part` file that
a later call resumes from where a cut left it, with a progress bar, then checked against
the publisher's hash and moved into place; a file that does not match is removed. Every
failure is one line that names the URL and where to put the file by hand.

Where each URL and hash comes from (`Published.found_at`):
- torchvision: `torchvision/models/vgg.py` and `alexnet.py`, the `IMAGENET1K_V1` weights'
  `url`; the hex after the last '-' is the start of the file's SHA-256, which
  `torch.hub.load_state_dict_from_url(check_hash=True)` checks the same way.
- Keras Applications: `keras/src/applications/vgg16.py` and `vgg19.py`, `WEIGHTS_PATH` and
  the `file_hash` given to `get_file` (32 hex digits: an MD5).
- Caffe's model zoo: `models/bvlc_alexnet/readme.md` of BVLC/caffe, `caffemodel_url` and
  `sha1`.
"""

import dataclasses
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from keras_alexnet.data.cache import cache_dir
from keras_alexnet.errors import Error
from keras_alexnet.progress import Progress

IMAGENET = "imagenet"  # any source's ImageNet weights: the first of SOURCES with the model
SOURCES = ("keras", "torchvision", "caffe")
CHUNK = 1 << 20
TIMEOUT_S = 30
RANGE_NOT_SATISFIABLE = 416  # asked to resume a .part that ended exactly at the end
TORCHVISION_FOUND_AT = "torchvision/models/vgg.py, alexnet.py: IMAGENET1K_V1 url"
KERAS_FOUND_AT = "keras/src/applications/vgg16.py, vgg19.py: WEIGHTS_PATH, file_hash"
CAFFE_FOUND_AT = "BVLC/caffe models/bvlc_alexnet/readme.md: caffemodel_url, sha1"


class HubError(Error, ValueError):
    """Published weights that cannot be had: no such file, unreachable, or not as published."""


@dataclasses.dataclass(frozen=True)
class Published:
    """One publisher's weight file for one of our models, and how to check it."""

    source: str  # one of SOURCES
    model: str  # the registry name it loads into
    url: str
    algorithm: str  # hashlib name of the published digest
    digest: str  # the published hex digest, or its start (torchvision's file names)
    found_at: str

    @property
    def filename(self):
        """The publisher's file name (the last part of the URL)."""
        return self.url.rsplit("/", 1)[1]

    def matches(self, path):
        """Whether the file at `path` has the published digest (or starts with it)."""
        digest = hashlib.new(self.algorithm)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest().startswith(self.digest.lower())


def _torchvision(model, filename):
    """A torchvision IMAGENET1K_V1 file: the hex after its last '-' starts its SHA-256."""
    prefix = filename.rsplit("-", 1)[1].split(".")[0]
    url = f"https://download.pytorch.org/models/{filename}"
    return Published("torchvision", model, url, "sha256", prefix, TORCHVISION_FOUND_AT)


KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications"
PUBLISHED = (
    Published(
        "keras", "vgg_d", f"{KERAS_URL}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels.h5",
        "md5", "64373286793e3c8b2b4e3219cbf3544b", KERAS_FOUND_AT,
    ),
    Published(
        "keras", "vgg_e", f"{KERAS_URL}/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
        "md5", "cbe5617147190e668d6c5d5026f83318", KERAS_FOUND_AT,
    ),
    _torchvision("vgg_a", "vgg11-8a719046.pth"),
    _torchvision("vgg_b", "vgg13-19584684.pth"),
    _torchvision("vgg_d", "vgg16-397923af.pth"),
    _torchvision("vgg_e", "vgg19-dcbb9e9d.pth"),
    _torchvision("vgg11_bn", "vgg11_bn-6002323d.pth"),
    _torchvision("vgg13_bn", "vgg13_bn-abd245e5.pth"),
    _torchvision("vgg16_bn", "vgg16_bn-6c64b313.pth"),
    _torchvision("vgg19_bn", "vgg19_bn-c79401a0.pth"),
    _torchvision("alexnet_tv", "alexnet-owt-7be5be79.pth"),
    Published(
        "caffe", "alexnet", "http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel",
        "sha1", "9116a64c0fbe4459d18f4bb6b56d647b63920377", CAFFE_FOUND_AT,
    ),
)  # fmt: skip


def is_source_name(value):
    """Whether a `weights` value names a source ("torchvision", "imagenet", ...), not a path."""
    return isinstance(value, str) and value.lower() in (IMAGENET, *SOURCES)


def find(source, model):
    """The Published file of `source` ("imagenet": the first source with one) for `model`.

    `model` is a registry name (canonical: `vgg_d`, not its alias `vgg16`). HubError
    names the sources that do publish it.
    """
    source = source.lower()
    offered = [p for p in PUBLISHED if p.model == model]
    chosen = [p for p in offered if source in (IMAGENET, p.source)]
    if chosen:
        return min(chosen, key=lambda p: SOURCES.index(p.source))
    others = ", ".join(p.source for p in offered) or "none: import a file you have"
    raise HubError(f"{source} publishes no weights for {model}; sources that do: {others}")


def weights_dir(cache=None):
    """Where downloaded weight files are kept: <cache>/weights."""
    return cache_dir(cache) / "weights"


def fetch(published, cache=None, *, log=print):
    """The path of `published`'s file in the cache, downloaded and verified if not there yet."""
    path = weights_dir(cache) / published.filename
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    log(f"Downloading {published.url} to {path}")
    _download(published, part, path)
    if not published.matches(part):
        part.unlink()
        raise HubError(
            f"{published.url} does not match its published {published.algorithm} "
            f"({published.digest}): the download was removed; try again"
        )
    os.replace(part, path)
    return path


def _download(published, part, path):
    """Write the URL's bytes to `part`, resuming from what a cut download left there."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(published.url, headers=headers), timeout=TIMEOUT_S
        )
    except urllib.error.HTTPError as e:
        if e.code == RANGE_NOT_SATISFIABLE and have:  # the part holds the whole file already
            return
        raise HubError(_by_hand(published, path, f"HTTP {e.code} {e.reason}")) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise HubError(_by_hand(published, path, f"unreachable: {reason}")) from None
    with response:
        resumed = response.status == 206
        done = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = done + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f, Progress(total, "bytes", "B") as bar:
            bar.add(done)
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    bar.add(len(chunk))
            except (OSError, http.client.HTTPException) as e:
                raise HubError(
                    f"the download of {published.url} stopped after {f.tell()} bytes ({e}): "
                    "run again to resume it"
                ) from None
        if total is not None and part.stat().st_size < total:
            raise HubError(
                f"the download of {published.url} stopped after {part.stat().st_size} of "
                f"{total} bytes: run again to resume it"
            )


def _by_hand(published, path, why):
    """One line: the download failed, and where to put the file instead."""
    return (
        f"cannot download {published.url} ({why}): download {published.filename} yourself "
        f"and put it at {path}"
    )


def resolve(weights, model, cache=None, *, log=print):
    """A `weights` value as a path: a source name's file (fetched if needed), else itself."""
    if not is_source_name(weights) or Path(weights).exists():  # a file or run of that name
        return weights
    return fetch(find(weights, model), cache, log=log)


def table():
    """The published files as Markdown rows: source, model, file, hash, where it was found."""
    rows = ["| source | model | file | hash | found at |", "|---|---|---|---|---|"]
    for p in PUBLISHED:
        rows.append(
            f"| {p.source} | {p.model} | [{p.filename}]({p.url}) | {p.algorithm} "
            f"`{p.digest}` | {p.found_at} |"
        )
    return "\n".join(rows)
