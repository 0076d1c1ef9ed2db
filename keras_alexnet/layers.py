"""The layers Keras does not export cleanly: grouped conv, LRN, adaptive average pooling.

Both run on every Keras backend. On TensorFlow they call `tf.nn` (the grouped
`tf.nn.conv2d` that exports to one ONNX `Conv`, `tf.nn.local_response_normalization`);
on JAX and PyTorch they are written with `keras.ops`. TensorFlow is imported only on the
TensorFlow backend.
"""

import keras
from keras import ops

from keras_alexnet.backend import is_tensorflow

PACKAGE = "keras_alexnet"


def _conv_padding(padding):
    """Validate a Conv2D-style padding string and return tf.nn's spelling."""
    padding = str(padding).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"padding must be 'valid' or 'same'. Received: padding={padding!r}")
    return padding.upper()


def onednn_enabled():
    """Whether TensorFlow runs its CPU kernels through oneDNN in this process."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow without the (private) query: assume Eigen
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def grouped_conv2d(inputs, kernel, strides, padding):
    """`tf.nn.conv2d` with a grouped kernel, differentiable on CPU in every precision.

    The forward pass is one grouped `Conv2D` op (one ONNX `Conv` with `group=G`). oneDNN's
    CPU kernels differentiate it natively in float32 only; TF's Eigen
    `Conv2DBackpropFilter` rejects grouped kernels ("filter_size does not have enough
    elements", tensorflow/tensorflow#50397), and so does oneDNN's in float16 and bfloat16
    (mixed precision). There the gradient is computed tower by tower.
    """
    import tensorflow as tf

    groups = inputs.shape[-1] // kernel.shape[2]
    if groups == 1 or (onednn_enabled() and inputs.dtype == tf.float32):
        return tf.nn.conv2d(inputs, kernel, strides=strides, padding=padding)

    @tf.custom_gradient
    def conv(x, k):
        def grad(dy):
            xs, ks, dys = (tf.split(t, groups, axis=-1) for t in (x, k, dy))
            dx = [
                tf.raw_ops.Conv2DBackpropInput(
                    input_sizes=tf.shape(xi), filter=ki, out_backprop=dyi,
                    strides=strides, padding=padding,
                )
                for xi, ki, dyi in zip(xs, ks, dys, strict=True)
            ]  # fmt: skip
            dk = [
                tf.raw_ops.Conv2DBackpropFilter(
                    input=xi, filter_sizes=tf.shape(ki), out_backprop=dyi,
                    strides=strides, padding=padding,
                )
                for xi, ki, dyi in zip(xs, ks, dys, strict=True)
            ]  # fmt: skip
            return tf.concat(dx, axis=-1), tf.concat(dk, axis=-1)

        return tf.nn.conv2d(x, k, strides=strides, padding=padding), grad

    return conv(inputs, kernel)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroupedConv2D(keras.layers.Layer):
    """2D convolution split into `groups` towers, each seeing only its own input channels.

    AlexNet (NIPS 2012, Section 3.5) runs conv2, conv4 and conv5 on two GPUs whose
    kernels "take input only from those kernel maps ... which reside on the same GPU".
    On one device that is a grouped convolution. Keras's `Conv2D(groups=2)` runs it
    through an XLA-compiled function on CPU that tf2onnx cannot convert; this layer calls
    `tf.nn.conv2d` with a (kh, kw, in_channels / groups, filters) kernel instead, which
    trains on CPU and exports to one ONNX `Conv` with `group=groups`. On JAX and PyTorch
    it is `keras.ops.conv`, grouped by the same kernel. The kernel has the same shape as
    `keras.layers.Conv2D(groups=...)`'s, so weights move between the two.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        padding="valid",
        groups=1,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self._tf_padding = _conv_padding(padding)
        self.padding = padding.lower()
        self.groups = int(groups)
        if self.groups < 1 or self.filters % self.groups:
            raise ValueError(
                "filters must be a positive multiple of groups. "
                f"Received: filters={filters}, groups={groups}"
            )
        self.activation = keras.activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        """Create the (kh, kw, in/groups, filters) kernel and the bias."""
        in_channels = input_shape[-1]
        if in_channels is None or in_channels % self.groups:
            raise ValueError(
                f"{self.name}: input channels must be known and divisible by groups. "
                f"Received: input_shape={input_shape}, groups={self.groups}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(*self.kernel_size, in_channels // self.groups, self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
            )
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: in_channels})

    def call(self, inputs):
        """Convolve each tower's channels with its own kernels in one grouped op."""
        if is_tensorflow():
            return self.activation(self._call_tensorflow(inputs))
        # keras.ops.conv takes the groups from the kernel's input depth (JAX's
        # feature_group_count, PyTorch's groups): one grouped convolution, as on TF.
        kernel = ops.cast(self.kernel, inputs.dtype)
        outputs = ops.conv(inputs, kernel, strides=self.strides, padding=self.padding)
        if self.bias is not None:
            outputs = outputs + ops.cast(self.bias, inputs.dtype)
        return self.activation(outputs)

    def _call_tensorflow(self, inputs):
        """The grouped `tf.nn.conv2d` plus bias that tf2onnx turns into one ONNX `Conv`."""
        import tensorflow as tf

        kernel = tf.cast(self.kernel, inputs.dtype)
        outputs = grouped_conv2d(
            inputs, kernel, strides=(1, *self.strides, 1), padding=self._tf_padding
        )
        if self.bias is None:
            return outputs
        bias = tf.cast(self.bias, inputs.dtype)
        if onednn_enabled():  # fused into oneDNN's grouped conv and its filter gradient
            return tf.nn.bias_add(outputs, bias)
        # A plain add: grappler fuses Conv2D+BiasAdd(+Relu) into _FusedConv2D, whose Eigen
        # CPU kernel rejects grouped convolutions ("Fused conv implementation does not
        # support grouped convolutions"). onnxruntime folds the add back.
        return outputs + bias

    def compute_output_shape(self, input_shape):
        """Spatial size as Conv2D computes it for 'valid' or 'same' padding."""
        spatial = []
        for size, k, s in zip(input_shape[1:3], self.kernel_size, self.strides, strict=True):
            if size is None:
                spatial.append(None)
            elif self.padding == "same":
                spatial.append(-(-size // s))
            else:
                spatial.append((size - k) // s + 1)
        return (input_shape[0], *spatial, self.filters)

    def get_config(self):
        """Return the constructor's arguments."""
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            padding=self.padding,
            groups=self.groups,
            activation=keras.activations.serialize(self.activation),
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
            kernel_regularizer=keras.regularizers.serialize(self.kernel_regularizer),
            bias_regularizer=keras.regularizers.serialize(self.bias_regularizer),
        )
        return config


# AlexNet Section 3.3 (k=2, n=5, alpha=1e-4, beta=0.75) in
# tf.nn.local_response_normalization's terms: depth_radius = n // 2, bias = k, and alpha
# NOT divided by n (Caffe, PyTorch and ONNX divide it: the same layer there reads alpha 5e-4).
PAPER_LRN = {"depth_radius": 2, "bias": 2.0, "alpha": 1e-4, "beta": 0.75}
# Caffe's bvlc_alexnet (local_size 5, alpha 1e-4 in Caffe's alpha/n convention, k=1) in the
# same terms; Caffe also normalises across both towers.
CAFFE_LRN = {"depth_radius": 2, "bias": 1.0, "alpha": 2e-5, "beta": 0.75}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LocalResponseNormalization(keras.layers.Layer):
    """Local response normalisation across channels, within each of `groups` towers.

    AlexNet, Section 3.3: ``b[c] = a[c] / (k + alpha * sum_{c'=c-n/2}^{c+n/2} a[c']^2)^beta``
    with k=2, n=5, alpha=1e-4, beta=0.75, the sum running over the tower's own maps only.
    In `tf.nn.local_response_normalization`'s terms that is depth_radius=n//2, bias=k,
    alpha (not divided by n, unlike Caffe / PyTorch / ONNX, which use alpha/n), beta.
    With groups=2 each half of the channels is normalised on its own, so channel
    C/2 - 1 never sees channel C/2 (one LRN over all channels would let them interact).
    """

    def __init__(
        self,
        depth_radius=PAPER_LRN["depth_radius"],
        bias=PAPER_LRN["bias"],
        alpha=PAPER_LRN["alpha"],
        beta=PAPER_LRN["beta"],
        groups=1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.groups = int(groups)
        if self.depth_radius < 0 or self.groups < 1:
            raise ValueError(
                "depth_radius must be >= 0 and groups >= 1. "
                f"Received: depth_radius={depth_radius}, groups={groups}"
            )
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        """Check that the channels split evenly into the towers."""
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"{self.name}: channels must be known and divisible by groups. "
                f"Received: input_shape={input_shape}, groups={self.groups}"
            )

    def call(self, inputs):
        """Normalise each tower's channels on its own (tf.nn's LRN on TensorFlow)."""
        if is_tensorflow():
            return self._call_tensorflow(inputs)
        x = ops.cast(inputs, "float32")  # as on TF: float32 sums under mixed precision
        towers = ops.split(x, self.groups, axis=-1) if self.groups > 1 else [x]
        outputs = [self._normalise(t) for t in towers]
        y = ops.concatenate(outputs, axis=-1) if self.groups > 1 else outputs[0]
        return ops.cast(y, inputs.dtype)

    def _normalise(self, x):
        """One tower's LRN in keras.ops: the squares summed over a zero-padded channel window."""
        r = self.depth_radius
        channels = x.shape[-1]
        squares = ops.pad(ops.square(x), [(0, 0)] * (len(x.shape) - 1) + [(r, r)])
        # 2r + 1 shifted slices added elementwise: exact float32 sums on every device (a
        # banded matmul would run in TF32 on a GPU).
        total = squares[..., :channels]
        for shift in range(1, 2 * r + 1):
            total = total + squares[..., shift : shift + channels]
        return x * ops.power(self.bias + self.alpha * total, -self.beta)

    def _call_tensorflow(self, inputs):
        """`tf.nn.local_response_normalization` per tower (one ONNX `LRN` each)."""
        import tensorflow as tf

        # TF's CPU LRN kernel has no float16; compute in float32 under mixed precision.
        x = tf.cast(inputs, tf.float32)
        towers = tf.split(x, self.groups, axis=-1) if self.groups > 1 else [x]
        outputs = [
            tf.nn.local_response_normalization(
                t, depth_radius=self.depth_radius, bias=self.bias, alpha=self.alpha, beta=self.beta
            )
            for t in towers
        ]
        y = tf.concat(outputs, axis=-1) if self.groups > 1 else outputs[0]
        return tf.cast(y, inputs.dtype)

    def compute_output_shape(self, input_shape):
        """LRN keeps the shape."""
        return input_shape

    def get_config(self):
        """Return the constructor's arguments."""
        config = super().get_config()
        config.update(
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
            groups=self.groups,
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class InputNormalization(keras.layers.Layer):
    """Subtract the training set's per-channel RGB mean, then multiply by `scale`.

    Both papers subtract the mean RGB value of the training set from every pixel
    (AlexNet Section 2, VGG Section 2.1). Keeping it in the graph means the mean travels
    with the saved model and its ONNX export: clients send RGB pixels on a 0-255 scale.
    `scale` is one float or one per channel (torchvision's weights divide by a per-channel
    std); a per-channel scale whose values are equal is kept as the one float.
    """

    def __init__(self, mean=(0.0, 0.0, 0.0), scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.scale = _scale(scale, len(self.mean))

    def call(self, inputs):
        """Return (inputs - mean) * scale in the input's dtype."""
        x = ops.cast(inputs, self.compute_dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=x.dtype)
        return (x - mean) * ops.convert_to_tensor(self.scale, dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        """Normalisation keeps the shape."""
        return input_shape

    def get_config(self):
        """Return the constructor's arguments."""
        config = super().get_config()
        scale = self.scale if isinstance(self.scale, float) else list(self.scale)
        config.update(mean=list(self.mean), scale=scale)
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AdaptiveAveragePooling2D(keras.layers.Layer):
    """Average pooling to a fixed grid with PyTorch's bins, on NHWC maps of any size.

    Bin i of n over a side of length H averages rows floor(i*H/n) .. ceil((i+1)*H/n) - 1,
    as `torch.nn.AdaptiveAvgPool2d` does (neighbouring bins overlap when n does not divide
    H). Written as two products with small (n, H) and (n, W) averaging matrices built from
    the input's shape at run time, so the layer also runs in the fully convolutional twin
    (inputs of unknown size) and exports to ONNX; `keras.layers.AdaptiveAveragePooling2D`
    uses the same bins but needs the sizes when the model is built.
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        self.output_size = _pair(output_size, "output_size")

    def call(self, inputs):
        """Return the [N, h, w, C] bin averages of [N, H, W, C] inputs."""
        shape = ops.shape(inputs)
        rows = adaptive_bins(shape[1], self.output_size[0], inputs.dtype)
        cols = adaptive_bins(shape[2], self.output_size[1], inputs.dtype)
        x = ops.einsum("ih,nhwc->niwc", rows, inputs)
        return ops.einsum("jw,niwc->nijc", cols, x)

    def compute_output_shape(self, input_shape):
        """[N, h, w, C] for the output size (h, w)."""
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self):
        """Return the constructor's arguments."""
        return {**super().get_config(), "output_size": list(self.output_size)}


def adaptive_bins(size, bins, dtype):
    """The (bins, size) matrix averaging PyTorch's adaptive bins over a side of `size`."""
    index = ops.arange(bins)
    start = (index * size) // bins
    end = ((index + 1) * size + bins - 1) // bins  # ceil((i + 1) * size / bins)
    position = ops.arange(size)
    inside = ops.logical_and(position[None, :] >= start[:, None], position[None, :] < end[:, None])
    return ops.cast(inside, dtype) / ops.cast(end - start, dtype)[:, None]


def _scale(scale, channels):
    """A float, or a tuple of one float per channel when they differ."""
    if isinstance(scale, int | float):
        return float(scale)
    values = tuple(float(v) for v in scale)
    if len(values) != channels:
        raise ValueError(
            f"scale must be a float or one value per channel ({channels}). Received: "
            f"scale={scale!r}"
        )
    return values[0] if len(set(values)) == 1 else values


def _pair(value, name):
    """Return an (int, int) pair from an int or a 2-sequence."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair. Received: {name}={value}")
    return value
