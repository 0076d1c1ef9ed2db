"""Caffe's bvlc_alexnet and the ONNX model zoo's AlexNet / VGG files, imported and checked.

Nothing is downloaded. The Caffe tests write a .caffemodel with random weights (a protobuf
writer here, not the importer's reader) and compare our model with a Caffe-semantics forward
in NumPy written here (BGR minus the mean, grouped convolutions, LRN across all channels
with alpha / n, max-pools that round up). The ONNX tests build files in the zoo's layout
with onnx.helper (initializer names meaningless on purpose) and compare with onnxruntime.
"""

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import TOLERANCE
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from keras_alexnet import build_model
from keras_alexnet.export import relative_error
from keras_alexnet.layers import CAFFE_LRN, LocalResponseNormalization
from keras_alexnet.metadata import Metadata
from keras_alexnet.models import get_spec
from keras_alexnet.training import TrainConfig, TrainingError, train
from keras_alexnet.weights import WeightsError, import_weights, read

CAFFE_MEAN_BGR = (104.007, 116.669, 122.679)
# Caffe's AlexNet at width 1/8: (name, filters, kernel, stride, pad, group), then FC units.
CONVS = [
    ("conv1", 12, 11, 4, 0, 1),
    ("conv2", 32, 5, 1, 2, 2),
    ("conv3", 48, 3, 1, 1, 1),
    ("conv4", 48, 3, 1, 1, 2),
    ("conv5", 32, 3, 1, 1, 2),
]
FC = [("fc6", 512), ("fc7", 512), ("fc8", 1000)]
WIDTH = 1 / 8


def smooth_images(count, size, seed=0):
    """RGB 0-255 images: random colours bilinearly enlarged from 6 x 6, a little noise."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (count, 6, 6, 3)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(s).resize((size, size))) for s in small])
    return np.clip(big + rng.normal(0, 3, big.shape), 0, 255).astype(np.float32)


def caffe_alexnet_weights(seed):
    """Random weights in Caffe's layout: conv (out, in / group, kh, kw), fc (out, in)."""
    rng = np.random.default_rng(seed)
    weights, channels = {}, 3
    for name, filters, kernel, _, _, group in CONVS:
        fan_in = channels // group * kernel * kernel
        w = rng.normal(0, np.sqrt(2 / fan_in), (filters, channels // group, kernel, kernel))
        weights[name] = [w, rng.normal(0, 0.1, filters)]
        channels = filters
    inputs = channels * 6 * 6
    for name, units in FC:
        weights[name] = [rng.normal(0, np.sqrt(2 / inputs), (units, inputs)),
                         rng.normal(0, 0.1, units)]  # fmt: skip
        inputs = units
    return {k: [a.astype(np.float32) for a in v] for k, v in weights.items()}


# --- an independent Caffe-semantics forward (NCHW, float64) ------------------------------


def caffe_conv(x, weight, bias, stride, pad, group):
    """Caffe's ConvolutionLayer: zero padding, `group` groups of filters and channels."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out, per_group, kh, kw = weight.shape
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    parts = [
        np.einsum("ncyxij,ocij->noyx", windows[:, g * per_group : (g + 1) * per_group],
                  weight[g * out // group : (g + 1) * out // group])
        for g in range(group)
    ]  # fmt: skip
    return np.concatenate(parts, axis=1) + bias[None, :, None, None]


def caffe_lrn(x, size=5, alpha=1e-4, beta=0.75, k=1.0):
    """Caffe's LRN ACROSS_CHANNELS: a / (k + alpha / size * sum of squares) ** beta."""
    squares = np.pad(x**2, ((0, 0), (size // 2, size // 2), (0, 0), (0, 0)))
    total = sum(squares[:, i : i + x.shape[1]] for i in range(size))
    return x / (k + alpha / size * total) ** beta


def caffe_max_pool(x, kernel=3, stride=2):
    """Caffe's max PoolingLayer: ceil((n - kernel) / stride) + 1 windows, clipped at the end."""
    h, w = x.shape[2:]
    oh, ow = -(-(h - kernel) // stride) + 1, -(-(w - kernel) // stride) + 1
    out = np.empty((*x.shape[:2], oh, ow))
    for i in range(oh):
        for j in range(ow):
            window = x[:, :, i * stride : i * stride + kernel, j * stride : j * stride + kernel]
            out[:, :, i, j] = window.max(axis=(2, 3))
    return out


def caffe_features(weights, images, mean_bgr=CAFFE_MEAN_BGR):
    """bvlc_alexnet's deploy net up to fc7 on RGB 0-255 images: BGR minus the mean first."""
    x = (images[..., ::-1].astype(np.float64) - mean_bgr).transpose(0, 3, 1, 2)
    for name, _, _, stride, pad, group in CONVS:
        x = np.maximum(caffe_conv(x, *weights[name], stride, pad, group), 0)
        if name in ("conv1", "conv2"):
            x = caffe_lrn(x)
        if name in ("conv1", "conv2", "conv5"):
            x = caffe_max_pool(x)
    x = x.reshape(len(x), -1)  # Caffe's InnerProduct flattens (c, h, w)
    for name in ("fc6", "fc7"):
        w, b = weights[name]
        x = np.maximum(x @ w.T + b, 0)
    return x


def softmax(logits):
    """Softmax over the last axis."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def temper_fc8(weights, features, spread=2.0):
    """Scale fc8 so its logits have std `spread`: a softmax where differences show."""
    w, b = weights["fc8"]
    factor = spread / np.std(features @ w.T + b)
    weights["fc8"] = [(w * factor).astype(np.float32), (b * factor).astype(np.float32)]


def caffe_probabilities(weights, images):
    """The Caffe-semantics forward's softmax scores."""
    w, b = weights["fc8"]
    return softmax(caffe_features(weights, images) @ w.T + b)


# --- a protobuf writer (not the importer's reader) ---------------------------------------


def varint(value):
    """Protobuf's base-128 varint."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number, payload):
    """A length-delimited field (wire type 2)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def int_field(number, value):
    """A varint field (wire type 0)."""
    return varint(number << 3) + varint(value)


def blob_v2(array):
    """BlobProto with a BlobShape (packed int64 dims) and packed float data."""
    dims = b"".join(varint(d) for d in array.shape)
    data = np.ascontiguousarray(array, "<f4").tobytes()
    return field(7, field(1, dims)) + field(5, data)


def blob_legacy(array):
    """BlobProto as old files have it: num, channels, height, width; one float per field."""
    shape = (1,) * (4 - array.ndim) + array.shape
    header = b"".join(int_field(n, d) for n, d in zip((1, 2, 3, 4), shape, strict=True))
    floats = np.empty(array.size, dtype=[("key", "u1"), ("value", "<f4")])
    floats["key"], floats["value"] = 5 << 3 | 5, array.reshape(-1)  # field 5, fixed32
    return header + floats.tobytes()


def caffemodel(weights, version):
    """A NetParameter with AlexNet's deploy layers: V2 `layer` (100) or V1 `layers` (2)."""
    steps = [("data", "Input", None)]
    for name in (n for n in weights if n.startswith("conv")):
        steps.append((name, "Convolution", name))
        steps.append((f"relu{name[-1]}", "ReLU", None))
        if name in ("conv1", "conv2", "conv5"):
            steps.append((f"pool{name[-1]}", "Pooling", None))
    for name in (n for n in weights if n.startswith("fc")):
        steps += [(name, "InnerProduct", name), (f"drop{name[-1]}", "Dropout", None)]
    enums = {"Convolution": 4, "InnerProduct": 14, "ReLU": 18, "Pooling": 17, "Dropout": 6,
             "Input": 5}  # fmt: skip
    net = field(1, b"AlexNet")
    for name, kind, key in steps:
        arrays = weights[key] if key else []
        if version == 2:  # LayerParameter: name 1, type 2, bottom 3, top 4, blobs 7
            body = field(1, name.encode()) + field(2, kind.encode()) + field(4, name.encode())
            body += b"".join(field(7, blob_v2(a)) for a in arrays)
            net += field(100, body)
        else:  # V1LayerParameter: bottom 2, top 3, name 4, type 5 (enum), blobs 6
            body = field(3, name.encode()) + field(4, name.encode()) + int_field(5, enums[kind])
            body += b"".join(field(6, blob_legacy(a)) for a in arrays)
            net += field(2, body)
    return net


# --- Caffe ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caffe_weights():
    """Random Caffe AlexNet weights at width 1/8, fc8 tempered on the test images at 227."""
    weights = caffe_alexnet_weights(seed=11)
    temper_fc8(weights, caffe_features(weights, smooth_images(2, 227, seed=1)))
    return weights


def test_caffemodel_imports_into_a_run_directory_equal_to_a_caffe_forward(tmp_path, caffe_weights):
    path = tmp_path / "bvlc_alexnet.caffemodel"
    path.write_bytes(caffemodel(caffe_weights, version=2))
    run = import_weights(path, "alexnet", tmp_path / "run")
    ours = keras.saving.load_model(run / "best.keras")
    images = smooth_images(2, 227, seed=1)
    expected = caffe_probabilities(caffe_weights, images)
    assert expected.max() > 0.05  # not a flat softmax: the comparison tells models apart
    assert relative_error(ours.predict_on_batch(images), expected) < TOLERANCE
    assert ours.get_layer("conv1").kernel.shape == (11, 11, 3, 12)  # width 1/8 from the blobs
    metadata = Metadata.load(run / "metadata.json")
    assert (metadata.model, metadata.input_size, metadata.resize) == ("alexnet", 227, 256)
    assert metadata.mean == (122.679, 116.669, 104.007) and metadata.protocol == "center"


def test_v1_caffemodel_at_224_pools_with_caffes_ceil_rounding(tmp_path, caffe_weights):
    # Old files use V1 `layers`, enum types and num/channels/height/width blobs. At 224
    # conv1 gives 54 maps: Caffe pools them to 27 (ceil), a floor pool to 26 (fc6 then
    # would not fit), so this also checks that the import pools as Caffe does.
    path = tmp_path / "old.caffemodel"
    path.write_bytes(caffemodel(caffe_weights, version=1))
    ours = build_model("alexnet", weights=path, input_shape=(224, 224, 3))
    images = smooth_images(2, 224, seed=2)
    expected = caffe_probabilities(caffe_weights, images)
    assert relative_error(ours.predict_on_batch(images), expected) < TOLERANCE
    assert ours.get_layer("pool1").output.shape[1] == 27


def test_caffemodel_with_other_layers_or_cut_short_is_refused_in_one_line(tmp_path, caffe_weights):
    short = tmp_path / "short.caffemodel"
    short.write_bytes(caffemodel(caffe_weights, version=2)[:5000])
    with pytest.raises(WeightsError, match="truncated"):
        build_model("alexnet", weights=short)
    fewer = {k: v for k, v in caffe_weights.items() if k != "conv5"}
    other = tmp_path / "other.caffemodel"
    other.write_bytes(caffemodel(fewer, version=2))
    with pytest.raises(WeightsError, match="not Caffe's AlexNet"):
        build_model("alexnet", weights=other)
    with pytest.raises(WeightsError, match="which import into alexnet. Received: model=.vgg_d."):
        build_model("vgg16", weights=other)


def ten_classes(weights):
    """The same net with a 10-way fc8 (its first ten outputs): a file fine-tuned elsewhere."""
    return {**weights, "fc8": [weights["fc8"][0][:10], weights["fc8"][1][:10]]}


@pytest.mark.parametrize("fmt", ["caffemodel", "onnx"])
def test_a_10_class_caffe_or_zoo_file_keeps_its_10_classes_not_imagenets_names(
    tmp_path, caffe_weights, fmt
):
    weights = ten_classes(caffe_weights)
    path = tmp_path / f"finetuned.{fmt}"
    if fmt == "caffemodel":
        path.write_bytes(caffemodel(weights, version=2))
    else:
        zoo_alexnet(path, weights, size=227)
    run = import_weights(path, "alexnet", tmp_path / "run")
    ours = keras.saving.load_model(run / "best.keras")
    images = smooth_images(2, 227, seed=1)
    mean = CAFFE_MEAN_BGR if fmt == "caffemodel" else ZOO_ALEXNET_MEAN_BGR
    logits = caffe_features(weights, images, mean) @ weights["fc8"][0].T + weights["fc8"][1]
    assert relative_error(ours.predict_on_batch(images), softmax(logits)) < TOLERANCE
    metadata = Metadata.load(run / "metadata.json")
    assert metadata.class_names == tuple(str(i) for i in range(10))


def test_caffemodel_errors_name_the_file_and_say_what_is_wrong(tmp_path, caffe_weights):
    empty = {**caffe_weights, "fc7": [np.zeros(0, np.float32), caffe_weights["fc7"][1]]}
    path = tmp_path / "empty.caffemodel"
    path.write_bytes(caffemodel(empty, version=2))
    with pytest.raises(WeightsError) as error:
        build_model("alexnet", weights=path)
    assert str(error.value).startswith(f"{path}: layer fc7's weight blob is empty")
    short = tmp_path / "short.caffemodel"
    short.write_bytes(caffemodel(caffe_weights, version=2)[:5000])
    with pytest.raises(WeightsError, match=f"^{short}: truncated protobuf"):
        build_model("alexnet", weights=short)
    odd = {**caffe_weights, "fc7": [caffe_weights["fc7"][0][:-1], caffe_weights["fc7"][1]]}
    path = tmp_path / "odd.caffemodel"
    path.write_bytes(caffemodel(odd, version=2))
    with pytest.raises(WeightsError, match="fc7's weight blob of shape .* does not fit its 512"):
        build_model("alexnet", weights=path)


def lrn_constants(model):
    """Each LRN layer's (depth_radius, bias, alpha, beta, groups)."""
    keys = ("depth_radius", "bias", "alpha", "beta", "groups")
    return [
        tuple(layer.get_config()[k] for k in keys)
        for layer in model.layers
        if isinstance(layer, LocalResponseNormalization)
    ]


def test_fine_tuning_from_an_imported_caffe_run_builds_caffes_net_as_from_the_file(
    tiny_data, tmp_path, caffe_weights
):
    path = tmp_path / "bvlc_alexnet.caffemodel"
    path.write_bytes(caffemodel(caffe_weights, version=2))
    run = import_weights(path, "alexnet", tmp_path / "imported")
    assert Metadata.load(run / "metadata.json").model_args["lrn"] == CAFFE_LRN
    # 227: the file's fc6 takes conv5's 6 x 6 map. The rate is all but 0 (it must be
    # positive): both runs keep the weights, so their outputs compare the nets built.
    base = dict(model="alexnet", data=str(tiny_data), width=WIDTH, image_size=227,
                resize=(256, 256), batch_size=2, epochs=1, steps_per_epoch=1, val_steps=1,
                lr=1e-20, cache=str(tmp_path / "cache"))  # fmt: skip
    models = {}
    for name, start in (("run", run), ("file", path)):
        config = TrainConfig(**base, weights=str(start), output=str(tmp_path / name))
        result = train(config, log=lambda *a: None)
        models[name] = keras.saving.load_model(result.best_model)
    caffe = (CAFFE_LRN["depth_radius"], CAFFE_LRN["bias"], CAFFE_LRN["alpha"],
             CAFFE_LRN["beta"], 1)  # fmt: skip
    assert lrn_constants(models["run"]) == lrn_constants(models["file"]) == [caffe, caffe]
    images = smooth_images(3, 227, seed=7)
    got, expected = (models[n].predict_on_batch(images) for n in ("run", "file"))
    assert relative_error(got, expected) < TOLERANCE
    # The fine-tuned run records what it was built with, for whoever starts from it next.
    assert Metadata.load(tmp_path / "run" / "metadata.json").model_args["lrn_per_tower"] is False
    with pytest.raises(TrainingError, match="--no-lrn does not fit `weights`"):
        train(TrainConfig(**base, weights=str(run), model_args={"use_lrn": False},
                          output=str(tmp_path / "x")))  # fmt: skip


def test_a_resumed_run_is_rebuilt_with_the_architecture_its_metadata_records(tmp_path):
    from keras_alexnet.finetune import architecture as _architecture

    run = tmp_path / "run"
    run.mkdir()
    caffe = {"lrn": CAFFE_LRN, "lrn_per_tower": False, "ceil_mode": True, "width": WIDTH}
    Metadata(model="alexnet", class_names=("a", "b"), input_size=227, resize=256,
             mean=(0.0, 0.0, 0.0),
             model_args={**caffe, "towers": 2, "use_lrn": True, "pool": "overlapping"},
             ).save(run / "metadata.json")  # fmt: skip
    spec = get_spec("alexnet")
    resumed = TrainConfig(model="alexnet", data="photos", output=str(run)).resolved(spec)
    assert _architecture(resumed, spec, None) == {
        **caffe,
        "towers": 2,
        "use_lrn": True,
        "pool": "overlapping",
    }
    other = TrainConfig(model="alexnet", data="photos", output=str(run), model_args={"towers": 1})
    with pytest.raises(TrainingError, match=f"--towers 1 does not fit the run {run}"):
        _architecture(other.resolved(spec), spec, None)


def test_metadata_without_model_args_loads_as_the_papers_and_round_trips_them(tmp_path):
    old = {"model": "alexnet", "class_names": ["a", "b"], "input_size": 227, "resize": 256,
           "mean": [1, 2, 3]}  # fmt: skip
    assert Metadata.from_json(old).architecture() == {}
    caffe = Metadata.from_json({**old, "model_args": {"lrn": CAFFE_LRN, "ceil_mode": True}})
    again = Metadata.from_properties(caffe.to_properties())  # as an ONNX export carries it
    assert again.architecture() == {"lrn": CAFFE_LRN, "ceil_mode": True}
    model = build_model("alexnet", width=1 / 16, **again.architecture())
    assert lrn_constants(model)[0][:4] == tuple(CAFFE_LRN.values())


# --- the ONNX model zoo -----------------------------------------------------------------

ZOO_ALEXNET_MEAN_BGR = (103.939, 116.779, 123.68)  # presets.ONNX_ZOO_ALEXNET's source
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VGG_A = [8, "M", 16, "M", 32, 32, "M", 64, 64, "M", 64, 64, "M"]  # config A at width 1/8


class GraphWriter:
    """Nodes and initializers of a chain graph; initializers get meaningless shuffled names."""

    def __init__(self, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.initializers, self.x = [], [], "data_0"

    def const(self, array):
        name = f"w{self.rng.integers(10**9)}"
        self.initializers.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def add(self, op, *inputs, **attributes):
        y = f"y{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, [self.x, *inputs], [y], **attributes))
        self.x = y

    def save(self, path, size, opset):
        order = self.rng.permutation(len(self.initializers))
        graph = helper.make_graph(
            self.nodes, "zoo", [helper.make_tensor_value_info("data_0", TensorProto.FLOAT,
                                                              [1, 3, size, size])],
            [helper.make_tensor_value_info(self.x, TensorProto.FLOAT, [1, "classes"])],
            [self.initializers[i] for i in order],
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 7
        onnx.checker.check_model(model)
        onnx.save(model, path)


def zoo_alexnet(path, weights, size=224, lrn=(5, 1e-4, 0.75, 1.0)):
    """bvlcalexnet's layout (Caffe -> Caffe2 -> ONNX, opset 12): pools padded at the end."""
    g, side = GraphWriter(seed=3), size
    for name, _, kernel, stride, pad, group in CONVS:
        w, b = (g.const(a) for a in weights[name])
        g.add("Conv", w, b, kernel_shape=[kernel] * 2, strides=[stride] * 2, pads=[pad] * 4,
              group=group)  # fmt: skip
        side = (side + 2 * pad - kernel) // stride + 1
        g.add("Relu")
        if name in ("conv1", "conv2"):
            g.add("LRN", size=lrn[0], alpha=lrn[1], beta=lrn[2], bias=lrn[3])
        if name in ("conv1", "conv2", "conv5"):
            end = (3 - side) % 2  # Caffe's ceil rounding as Caffe2 exports it
            g.add("MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, end, end])
            side = (side + end - 3) // 2 + 1
    g.add("Flatten", axis=1)
    for name, _ in FC:
        g.add("Gemm", g.const(weights[name][0]), g.const(weights[name][1]), transB=1)
        if name != "fc8":
            g.add("Relu")
            g.add("Dropout")
    g.add("Softmax", axis=1)
    g.save(path, size, opset=12)


def ort_run(path, nchw):
    """onnxruntime's output for an NCHW float32 batch, one image at a time (batch 1 graphs)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None]})[0] for x in nchw.astype(np.float32)])


def test_zoo_alexnet_at_224_equals_onnxruntime_on_the_file(tmp_path, caffe_weights):
    path = tmp_path / "bvlcalexnet-12.onnx"
    zoo_alexnet(path, caffe_weights)
    run = import_weights(path, "alexnet", tmp_path / "run")
    ours = keras.saving.load_model(run / "best.keras")
    images = smooth_images(2, 224, seed=4)
    bgr = (images[..., ::-1] - ZOO_ALEXNET_MEAN_BGR).transpose(0, 3, 1, 2)
    expected = ort_run(path, bgr)
    assert expected.max() > 0.05
    assert relative_error(ours.predict_on_batch(images), expected) < TOLERANCE
    metadata = Metadata.load(run / "metadata.json")
    assert (metadata.input_size, metadata.resize) == (224, 224)
    assert metadata.mean == (123.68, 116.779, 103.939)


def route_weight(path, out, ops):
    """Rewrite `path`'s first Conv to take its weight through a chain of `ops` nodes.

    Identity and Cast (to float) pass a constant through; Relu computes a new tensor.
    """
    model = onnx.load(path)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    name, nodes = conv.input[1], []
    for i, op in enumerate(ops):
        extra = {"to": TensorProto.FLOAT} if op == "Cast" else {}
        nodes.append(helper.make_node(op, [name], [f"routed{i}"], name=f"{op.lower()}{i}", **extra))
        name = f"routed{i}"
    conv.input[1] = name
    for node in reversed(nodes):
        model.graph.node.insert(0, node)
    onnx.checker.check_model(model)
    onnx.save(model, out)


def test_zoo_conv_weight_behind_identity_and_cast_is_followed_or_refused_naming_the_node(
    tmp_path, caffe_weights
):
    zoo_alexnet(tmp_path / "plain.onnx", caffe_weights)
    route_weight(tmp_path / "plain.onnx", tmp_path / "routed.onnx", ["Identity", "Cast"])
    spec = get_spec("alexnet")
    plain, _ = read(tmp_path / "plain.onnx", spec)
    routed, _ = read(tmp_path / "routed.onnx", spec)
    for layer in plain:
        for a, b in zip(routed[layer], plain[layer], strict=True):
            np.testing.assert_array_equal(a, b)
    route_weight(tmp_path / "plain.onnx", tmp_path / "computed.onnx", ["Identity", "Relu"])
    with pytest.raises(WeightsError, match=r"comes from node relu1 \(Relu\), not an initializer"):
        read(tmp_path / "computed.onnx", spec)


def test_zoo_alexnet_with_other_lrn_constants_is_refused(tmp_path, caffe_weights):
    path = tmp_path / "paper_lrn.onnx"
    zoo_alexnet(path, caffe_weights, lrn=(5, 5e-4, 0.75, 2.0))  # the paper's k = 2
    with pytest.raises(WeightsError, match="not Caffe's AlexNet's"):
        build_model("alexnet", weights=path)


def zoo_vgg(path, size, scale=1.0, seed=5):
    """The zoo's MXNet VGG layout (opset 7): padded 3x3 Conv, MaxPool 2/2, Gemm, no softmax."""
    rng, g = np.random.default_rng(seed), GraphWriter(seed=seed)
    channels, side = 3, size
    for cell in VGG_A:
        if cell == "M":
            g.add("MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0])
            side //= 2
            continue
        w = rng.normal(0, np.sqrt(2 / (9 * channels)), (cell, channels, 3, 3))
        g.add("Conv", g.const(w), g.const(rng.normal(0, 0.1, cell)), kernel_shape=[3, 3],
              strides=[1, 1], pads=[1, 1, 1, 1])  # fmt: skip
        g.add("Relu")
        channels = cell
    g.add("Flatten", axis=1)
    inputs = channels * side * side
    for units, last in ((512, False), (512, False), (1000, True)):
        w, b = rng.normal(0, np.sqrt(2 / inputs), (units, inputs)), rng.normal(0, 0.1, units)
        g.add("Gemm", g.const(w * (scale if last else 1)), g.const(b * (scale if last else 1)),
              alpha=1.0, beta=1.0, transB=1)  # fmt: skip
        if not last:
            g.add("Relu")
            g.add("Dropout", ratio=0.5)
        inputs = units
    g.save(path, size, opset=7)


def test_zoo_vgg_equals_onnxruntime_on_the_file_with_its_preprocessing(tmp_path):
    # 64 x 64 leaves fc1 a 2 x 2 map, so fc1's (c, h, w) -> (h, w, c) reordering shows.
    images = smooth_images(2, 64, seed=6)
    normalised = ((images / 255 - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2)
    zoo_vgg(tmp_path / "probe.onnx", 64)
    logits = ort_run(tmp_path / "probe.onnx", normalised)
    path = tmp_path / "vgg11.onnx"
    zoo_vgg(path, 64, scale=2.0 / np.std(logits))  # logits of std 2: differences show
    expected = softmax(ort_run(path, normalised).astype(np.float64))  # the zoo applies softmax
    ours = build_model("vgg11", weights=path)
    assert ours.input_shape == (None, 64, 64, 3) and expected.max() > 0.05
    assert relative_error(ours.predict_on_batch(images), expected) < TOLERANCE
