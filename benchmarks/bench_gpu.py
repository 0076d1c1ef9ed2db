"""Training step and inference on Keras-JAX (fp32, bf16) against PyTorch (eager, compile).

Our AlexNet (227) and VGG D (224) as `build_model` builds them, on Keras's JAX backend,
against the independent PyTorch reference of the same nets (`tests/torch_reference.py`), in one
run on the same device. The training step is the paper's optimiser on both sides: SGD with
momentum 0.9 and weight decay 5e-4 coupled into the gradient, on kernels only
(`keras_alexnet.optim.add_weight_decay`; PyTorch's SGD `weight_decay` on the >1-D
parameters). Keras's step is one jit-compiled `stateless_call` + `stateless_apply`, the
arrays donated; inference is a jit-compiled forward pass. bf16 is Keras's
`mixed_bfloat16` policy and PyTorch's `autocast(bfloat16)`.

Needs only JAX, Keras and PyTorch (no TensorFlow is imported), e.g. on a lent GPU machine:

    python benchmarks/bench_gpu.py                    # full size, the GPU
    python benchmarks/bench_gpu.py --steps 2 --batch 2 --size 67 --width 0.0625 --no-compile

The second line runs anywhere in seconds (a CPU check of the script, not a measurement).
"""

import argparse
import functools
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# The PyTorch reference of our nets lives with the tests, its other user.
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "tests"))

MODELS = ("alexnet", "vgg_d")
BATCHES = {"alexnet": 256, "vgg_d": 64}  # the batches of SPEC's H100 figures
PRECISIONS = ("fp32", "bf16")
KERAS_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4  # AlexNet Section 5
CLASSES = 1000
COLUMNS = ("keras_jax", "torch_eager", "torch_compile")


def get_args_parser():
    """The benchmark's flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="(default: %(default)s)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="(default: %(default)s)")
    parser.add_argument("--batch", type=int, help="batch of every model (default: 256 / 64)")
    parser.add_argument("--size", type=int, help="input size (default: the paper's crop)")
    parser.add_argument("--width", type=float, default=1.0, help="(default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="(default: %(default)s)")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip torch.compile (slow to build on a CPU)"
    )
    return parser


def throughput(run, sync, batch, steps, warmup):
    """Images per second of `run()` over `steps` calls after `warmup` untimed ones."""
    out = None
    for _ in range(warmup):
        out = run()
    sync(out)
    start = time.perf_counter()
    for _ in range(steps):
        out = run()
    sync(out)
    return batch * steps / (time.perf_counter() - start)


def keras_model(name, precision, args):
    """Our model on Keras-JAX under the precision's dtype policy, logits out."""
    import keras

    from keras_alexnet.models import build_model, get_spec

    keras.config.set_dtype_policy(KERAS_POLICIES[precision])
    try:
        size = args.size or get_spec(name).input_size
        return build_model(
            name, classes=CLASSES, input_shape=(size, size, 3), width=args.width,
            init="glorot", classifier_activation=None, seed=0,
        )  # fmt: skip
    finally:
        keras.config.set_dtype_policy("float32")


def keras_train_step(model):
    """(step, state): one jit-compiled SGD step of the paper's optimiser, arrays donated."""
    import jax
    import keras

    from keras_alexnet.optim import add_weight_decay

    add_weight_decay(model, WEIGHT_DECAY)
    optimizer = keras.optimizers.SGD(LR, momentum=MOMENTUM)
    optimizer.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(trainable, non_trainable, x, y):
        logits, non_trainable, extra = model.stateless_call(
            trainable, non_trainable, x, training=True, return_losses=True
        )
        return loss_fn(y, logits) + sum(extra), non_trainable  # extra: the decay term

    grad = jax.value_and_grad(loss, has_aux=True)

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, x, y):
        trainable, non_trainable, slots = state
        (value, non_trainable), grads = grad(trainable, non_trainable, x, y)
        trainable, slots = optimizer.stateless_apply(slots, grads, trainable)
        return (trainable, non_trainable, slots), value

    state = tuple(
        [v.value for v in variables]
        for variables in (model.trainable_variables, model.non_trainable_variables,
                          optimizer.variables)
    )  # fmt: skip
    return step, state


def keras_figures(name, precision, batch, args):
    """Keras-JAX training and inference images/s of one model at one precision."""
    import jax

    model = keras_model(name, precision, args)
    size = model.input_shape[1]
    key_x, key_y = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.uniform(key_x, (batch, size, size, 3), minval=-1.0, maxval=1.0)
    y = jax.random.randint(key_y, (batch,), 0, CLASSES)
    step, state = keras_train_step(model)

    def train():
        nonlocal state
        state, value = step(state, x, y)
        return value

    trainable, non_trainable = state[0], state[1]
    forward = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
    measure = functools.partial(
        throughput, sync=jax.block_until_ready, batch=batch, steps=args.steps, warmup=args.warmup
    )
    infer = measure(lambda: forward(trainable, non_trainable, x))
    return {"train": measure(train), "infer": infer}


def torch_figures(name, precision, batch, compiled, args):
    """PyTorch training and inference images/s of the reference net, eager or compiled."""
    import torch
    import torch_reference

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    size = args.size or (227 if name == "alexnet" else 224)
    model = torch_reference.build(name, CLASSES, width=args.width, input_size=size).to(device)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(memory_format=layout)
    x = torch.rand(batch, 3, size, size, device=device).to(memory_format=layout) * 2 - 1
    y = torch.randint(0, CLASSES, (batch,), device=device)
    groups = [
        {"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.SGD(groups, lr=LR, momentum=MOMENTUM)
    net = torch.compile(model) if compiled else model
    autocast = functools.partial(
        torch.autocast, device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )

    def train():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss

    def infer():
        with torch.inference_mode(), autocast():
            return net(x)

    def sync(_):
        if device.type == "cuda":
            torch.cuda.synchronize()

    measure = functools.partial(
        throughput, sync=sync, batch=batch, steps=args.steps, warmup=args.warmup
    )
    return {"train": measure(train), "infer": measure(infer)}


def devices():
    """One line naming the JAX and PyTorch devices."""
    import jax
    import torch

    torch_device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    jax_device = jax.devices()[0].device_kind
    return f"JAX {jax.__version__} on {jax_device}; PyTorch {torch.__version__} on {torch_device}"


def table(rows):
    """A Markdown table of the figures and Keras-JAX's ratio to each PyTorch mode."""
    lines = [
        "| model | workload | precision | Keras-JAX img/s | PyTorch eager | PyTorch compile "
        "| JAX / eager | JAX / compile |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, workload, precision), figures in rows.items():
        jax_ips = figures["keras_jax"]
        cells = [f"{figures[c]:,.1f}" if c in figures else "-" for c in COLUMNS]
        ratios = [f"{jax_ips / figures[c]:.2f}x" if c in figures else "-" for c in COLUMNS[1:]]
        lines.append(f"| {name} | {workload} | {precision} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines)


def main(args):
    """Measure every model, precision and runtime in this process; print the table."""
    rows = {}
    for name in args.models.split(","):
        batch = args.batch or BATCHES.get(name, 64)
        for precision in args.precisions.split(","):
            measured = {"keras_jax": keras_figures(name, precision, batch, args)}
            modes = (False,) if args.no_compile else (False, True)
            for compiled in modes:
                column = COLUMNS[2] if compiled else COLUMNS[1]
                measured[column] = torch_figures(name, precision, batch, compiled, args)
            for workload in ("train", "infer"):
                rows[name, workload, precision] = {c: m[workload] for c, m in measured.items()}
    print(devices())
    print(table(rows))
    print("target: Keras-JAX train >= PyTorch compile bf16 (JAX / compile >= 1.00x)")
    return rows


if __name__ == "__main__":
    # The benchmark is Keras on JAX: set before Keras is imported (an entry point may).
    os.environ["KERAS_BACKEND"] = "jax"
    main(get_args_parser().parse_args())
