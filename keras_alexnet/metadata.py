"""The one source of a trained model's preprocessing and labels, saved beside every artifact.

Training writes it into the run directory (`metadata.json`), export copies it into the
ONNX file's metadata properties and the SavedModel's assets, and evaluation and serving
read it back, so the resize size, crop size, mean and class names never have to be
remembered by the user.
"""

import dataclasses
import json

from keras_alexnet import __version__, fileio
from keras_alexnet.artifacts import PROPERTY_PREFIX


@dataclasses.dataclass(frozen=True)
class Metadata:
    """Preprocessing, labels and provenance of a trained model."""

    model: str  # registry name, e.g. "alexnet", "vgg_d"
    class_names: tuple[str, ...]
    input_size: int  # the crop the model takes (227 AlexNet, 224 VGG)
    resize: int  # shorter side before the centre crop (256); the training scale S (or Smin)
    mean: tuple[float, float, float]  # RGB mean on the 0-255 scale, subtracted in-graph
    # multiplier after mean subtraction, in-graph: one, or one per RGB channel
    scale: float | tuple[float, float, float] = 1.0
    protocol: str = "center"  # the paper's test protocol for this model
    # The largest training scale when S was jittered in [resize, resize_max] (VGG Section
    # 3.1); None: trained at S = resize. multi_scale's test scales Q follow from them.
    resize_max: int | None = None
    data: str | None = None  # what it was trained on (None: the bundled demo set)
    data_dir: str | None = None
    version: str = __version__
    # The builder's architecture arguments: the family's options as the run set them
    # (AlexNet's towers, use_lrn, pool) and any others the weights need (Caffe's AlexNet: its
    # LRN constants, lrn_per_tower False, ceil_mode True; a width other than 1); None or {}:
    # the published model. Fine-tuning from the run builds with them (--weights,
    # --init-from). Files written before 0.2 kept AlexNet's options in fields of their own
    # (towers, lrn, pool): `from_json` moves them here.
    model_args: dict | None = None

    def to_json(self):
        """Return a JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, obj):
        """Build from a dict written by `to_json` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        obj = _fold_old_fields(obj)
        obj = {k: v for k, v in obj.items() if k in names}
        obj["class_names"] = tuple(obj["class_names"])
        obj["mean"] = tuple(float(m) for m in obj["mean"])
        if isinstance(obj.get("scale"), list):
            obj["scale"] = tuple(float(s) for s in obj["scale"])
        if obj.get("model_args") is not None and not isinstance(obj["model_args"], dict):
            raise TypeError(f"model_args must be a mapping. Received: {obj['model_args']!r}")
        return cls(**obj)

    def architecture(self):
        """The builder arguments the model was built with beyond its defaults (`model_args`)."""
        return dict(self.model_args or {})

    def to_properties(self):
        """Return string key/value pairs for ONNX metadata_props (values JSON-encoded)."""
        return {f"{PROPERTY_PREFIX}{k}": json.dumps(v) for k, v in self.to_json().items()}

    @classmethod
    def from_properties(cls, props):
        """Inverse of `to_properties`."""
        return cls.from_json(
            {
                k.removeprefix(PROPERTY_PREFIX): json.loads(v)
                for k, v in props.items()
                if k.startswith(PROPERTY_PREFIX)
            }
        )

    def save(self, path):
        """Write as JSON atomically."""
        fileio.write_json(path, self.to_json())

    @classmethod
    def load(cls, path):
        """Read a JSON file written by `save`."""
        return cls.from_json(fileio.read_json(path))


# Metadata fields of files written before 0.2, and the builder arguments they now are.
OLD_FIELDS = {"towers": "towers", "lrn": "use_lrn", "pool": "pool"}


def _fold_old_fields(obj):
    """`obj` with an older file's AlexNet fields (towers, lrn, pool) moved into model_args.

    None there meant "not AlexNet" or "not recorded" (the paper's): nothing to move.
    """
    old = {new: obj[key] for key, new in OLD_FIELDS.items() if obj.get(key) is not None}
    if not old:
        return obj
    return {**obj, "model_args": {**old, **(obj.get("model_args") or {})}}
