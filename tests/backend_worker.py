"""One Keras backend's side of tests/test_backends.py, run as `KERAS_BACKEND=jax python ...`.

The backend is fixed when Keras is imported, so each backend runs in its own process. It
reads the TensorFlow side's inputs and .keras files from DIR, writes what it computed to
DIR/<backend>.npz and its own .keras file to DIR/<backend>/alexnet/, prints "saved", then
loads the .keras directories named on stdin (one a line: those the other backends saved).
"""

import sys
from pathlib import Path

import keras
import numpy as np

from keras_alexnet import export, optim, runtime, training
from keras_alexnet.artifacts import KERAS_BEST, METADATA_FILENAME
from keras_alexnet.evaluation import evaluate, evaluate_arrays
from keras_alexnet.layers import GroupedConv2D, LocalResponseNormalization
from keras_alexnet.models import MODEL_NAMES

BACKEND = keras.backend.backend()


def layer_gradients(layer, x, cotangent):
    """d sum(layer(x) * cotangent) / d (x, *trainable variables), as NumPy arrays."""
    if BACKEND == "jax":
        import jax

        def loss(x, weights):
            y, _ = layer.stateless_call(weights, [], x)
            return (y * cotangent).sum()

        weights = [v.value for v in layer.trainable_variables]
        dx, dweights = jax.grad(loss, argnums=(0, 1))(x, weights)
        return [np.asarray(g) for g in (dx, *dweights)]
    import torch

    x = torch.tensor(x, requires_grad=True)
    (layer(x) * torch.tensor(cotangent)).sum().backward()
    return [g.numpy() for g in (x.grad, *(v.value.grad for v in layer.trainable_variables))]


def gradients(data):
    """Both custom layers' gradients on the shared inputs and weights."""
    conv = GroupedConv2D(6, 3, strides=2, padding="same", groups=2)
    conv.build(data["gconv_x"].shape)
    conv.set_weights([data["gconv_kernel"], data["gconv_bias"]])
    lrn = LocalResponseNormalization(groups=2)
    lrn.build(data["lrn_x"].shape)
    out = {
        f"grad_gconv_{i}": g
        for i, g in enumerate(layer_gradients(conv, data["gconv_x"], data["gconv_cot"]))
    }
    (out["grad_lrn_0"],) = layer_gradients(lrn, data["lrn_x"], data["lrn_cot"])
    return out


def fine_tune(directory, data):
    """Weights after model.fit with the paper's SGD (two steps) from the TF side's file."""
    model = keras.saving.load_model(directory / "finetune.keras")
    optim.compile_paper(model, lr=0.01, weight_decay=float(data["fit_decay"]), from_logits=True)
    model.fit(data["fit_x"], data["fit_y"], batch_size=2, epochs=1, shuffle=False, verbose=0)
    return {f"fit_{i}": w for i, w in enumerate(model.get_weights())}


def refusals(directory):
    """The one-line errors of the TensorFlow-only parts on this backend."""
    fake = directory / BACKEND / "fake_savedmodel"
    fake.mkdir(parents=True)
    (fake / "saved_model.pb").write_bytes(b"")
    calls = {
        "savedmodel": lambda: runtime.load(fake),
        "onnx_export": lambda: export.export_onnx(directory / "tensorflow" / "alexnet"),
        "savedmodel_export": lambda: export.export_savedmodel(directory / "tensorflow" / "alexnet"),
        "evaluate": lambda: evaluate(directory / "tensorflow" / "alexnet"),
        "train_step": lambda: optim.make_train_step(None, None, None, 1, 0.0),
        "train": lambda: training.train(training.TrainConfig(output=str(directory / "no_run"))),
    }
    messages = {}
    for name, call in calls.items():
        try:
            call()
        except Exception as e:  # the test checks the type and the text
            messages[f"error_{name}"] = np.array(f"{type(e).__name__}: {e}")
    return messages


def main(directory):
    """Compute everything test_backends compares, then load the other backends' files."""
    directory = Path(directory)
    data = dict(np.load(directory / "inputs.npz"))
    out = {}
    for name in MODEL_NAMES:
        loaded = runtime.load(directory / "tensorflow" / name)
        out[f"model_{name}"] = loaded.predict(data[f"input_{name}"])
    loaded_alexnet = runtime.load(directory / "tensorflow" / "alexnet")
    out["dense_alexnet"] = loaded_alexnet.predict(data["dense_input"])
    arrays = evaluate_arrays(loaded_alexnet, data["eval_images"], data["eval_labels"])
    out["eval_top1"], out["eval_top5"] = arrays["top1"], arrays["top5"]
    out.update(gradients(data), **fine_tune(directory, data), **refusals(directory))
    # Before saving: Keras's own serialisation imports TensorFlow whenever it is installed
    # (`tf.available` in serialization_lib), which this package cannot prevent.
    out["tensorflow_imported"] = np.array("tensorflow" in sys.modules)
    own = directory / BACKEND / "alexnet"
    own.mkdir(parents=True)
    model, metadata = runtime.load_keras_model(directory / "tensorflow" / "alexnet")
    model.save(own / KERAS_BEST)
    metadata.save(own / METADATA_FILENAME)
    print("saved", flush=True)
    for i, line in enumerate(sys.stdin):
        out[f"other_{i}"] = runtime.load(line.strip()).predict(data["input_alexnet"])
    np.savez(directory / f"{BACKEND}.npz", **out)


if __name__ == "__main__":
    main(sys.argv[1])
