"""Each weight source's preprocessing, as its project documents it, in our model's terms.

Our models take RGB pixels on the 0-255 scale and normalise them in-graph
(`InputNormalization`: ``(x - mean) * scale``). A source's preprocessing is written here
in those terms: `mean` and `std` are RGB, on the 0-255 scale, so the model's scale is
``1 / std``; `bgr` says whether the source's first layer reads its channels as B, G, R
(the importer then reverses that layer's input channels, so the model still takes RGB).
"""

import dataclasses

CHANNEL_ORDERS = ("rgb", "bgr")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preset:
    """How a source's weights expect their input, and the evaluation that goes with them."""

    name: str
    bgr: bool  # the source's first layer reads B, G, R
    mean: tuple[float, float, float]  # RGB order, 0-255 scale, subtracted
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)  # RGB order, 0-255 scale, divided by
    input_size: int  # the crop the weights were trained and evaluated at
    resize: int  # shorter side before the centre crop
    protocol: str = "center"  # the evaluation the published figures used
    documented_at: str  # where the source documents this preprocessing
    # Arguments of build_model the weights need (Caffe's AlexNet: lrn=CAFFE_LRN,
    # lrn_per_tower=False); not a preprocessing setting, so no flag overrides it.
    model_args: dict = dataclasses.field(default_factory=dict)

    @property
    def scale(self):
        """The in-graph scale after the mean: a float when every channel shares it."""
        scales = tuple(1.0 / s for s in self.std)
        return scales[0] if len(set(scales)) == 1 else scales

    def replace(self, **overrides):
        """Return a copy with the fields in `overrides` (None values ignored) replaced."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        for key in ("mean", "std"):
            if key in overrides:
                overrides[key] = _triple(overrides[key], key)
        return dataclasses.replace(self, **overrides)


def _triple(values, name):
    """Three floats from a sequence; ValueError naming `name` otherwise."""
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"{name} needs 3 values (R, G, B). Received: {name}={values}")
    if name == "std" and min(values) <= 0:
        raise ValueError(f"std must be positive. Received: std={values}")
    return values


def _times_255(values):
    """A 0-1 scale per-channel triple on the 0-255 scale."""
    return tuple(255.0 * v for v in values)


# keras.applications.vgg16.preprocess_input -> imagenet_utils "caffe" mode: RGB -> BGR, then
# subtract the ImageNet channel means [103.939, 116.779, 123.68] (B, G, R), no scaling.
KERAS_CAFFE = Preset(
    name="keras",
    bgr=True,
    mean=(123.68, 116.779, 103.939),
    input_size=224,
    resize=256,
    documented_at="https://keras.io/api/applications/vgg/ (preprocess_input: 'The images are "
    "converted from RGB to BGR, then each color channel is zero-centered with respect to the "
    "ImageNet dataset, without scaling'); keras/src/applications/imagenet_utils.py, mode 'caffe'",
)
# torchvision VGG*_Weights.IMAGENET1K_V1.transforms(): ImageClassification(crop_size=224,
# resize_size=256, bilinear), to [0, 1], then mean (0.485, 0.456, 0.406), std (0.229, 0.224,
# 0.225): on 0-255 pixels that is (x - 255 mean) / (255 std).
TORCHVISION = Preset(
    name="torchvision",
    bgr=False,
    mean=_times_255((0.485, 0.456, 0.406)),
    std=_times_255((0.229, 0.224, 0.225)),
    input_size=224,
    resize=256,
    documented_at="https://pytorch.org/vision/stable/models/generated/torchvision.models.vgg16."
    "html (VGG16_Weights.IMAGENET1K_V1.transforms: resize 256 bilinear, central crop 224, "
    "rescale to [0.0, 1.0], normalize mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]); "
    "torchvision/transforms/_presets.py ImageClassification",
)

# Caffe's bvlc_alexnet: its deploy net reads BGR 0-255 crops of 227 from 256 x 256 images
# minus the ILSVRC-2012 mean image, whose channel means are B 104.007, G 116.669, R 122.679.
CAFFE_ALEXNET = Preset(
    name="caffe",
    bgr=True,
    mean=(122.679, 116.669, 104.007),
    input_size=227,
    resize=256,
    documented_at="https://github.com/BVLC/caffe/tree/master/models/bvlc_alexnet (readme: "
    "57.1 / 80.2 %, centre crop; deploy.prototxt: 227 input, LRN local_size 5, alpha 1e-4, "
    "beta 0.75, group 2); caffe/examples/00-classification.ipynb (BGR channel swap, the "
    "ilsvrc_2012_mean channel means [104.00698793, 116.66876762, 122.67891434])",
)
# The ONNX model zoo's bvlcalexnet (Caffe -> Caffe2 -> ONNX, 224 input): its README gives no
# preprocessing and cites the evaluation behind its 54.80 / 78.23 %: Intel Neural Compressor's
# main.py, which resizes to 224 x 224, subtracts R 123.68, G 116.779, B 103.939, and feeds BGR.
ONNX_ZOO_ALEXNET = Preset(
    name="onnx_zoo_alexnet",
    bgr=True,
    mean=(123.68, 116.779, 103.939),
    input_size=224,
    resize=224,
    documented_at="https://github.com/onnx/models/tree/main/validated/vision/classification/"
    "alexnet (README: input data_0 float[1, 3, 224, 224], accuracy by the cited preprocess "
    "method); intel/neural-compressor examples/onnxrt/image_recognition/onnx_model_zoo/"
    "alexnet/quantization/ptq_static/main.py (resize to 224 x 224, mean R 123.68 G 116.779 "
    "B 103.939 subtracted, RGB -> BGR)",
)
# The ONNX model zoo's VGG 16 / 19 (MXNet Gluon -> ONNX): RGB in [0, 1], ImageNet mean and std.
ONNX_ZOO_VGG = dataclasses.replace(
    TORCHVISION,
    name="onnx_zoo_vgg",
    documented_at="https://github.com/onnx/models/tree/main/validated/vision/classification/"
    "vgg (README, Preprocessing: 'loaded in to a range of [0, 1] and then normalized using "
    "mean = [0.485, 0.456, 0.406] and std = [0.229, 0.224, 0.225]'; imagenet_preprocess.py: "
    "resize 256, centre crop 224)",
)

PRESETS = {
    p.name: p for p in (KERAS_CAFFE, TORCHVISION, CAFFE_ALEXNET, ONNX_ZOO_ALEXNET, ONNX_ZOO_VGG)
}
