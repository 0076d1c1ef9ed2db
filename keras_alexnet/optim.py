"""The papers' optimisation: SGD with coupled weight decay, the step, the lr schedules.

`compile_paper` sets a model up for `model.fit` with the paper's update on any Keras
backend; `make_train_step` is the TensorFlow training loop's step (tf.distribute).
"""

import contextlib
import math

from keras_alexnet.backend import require_tensorflow
from keras_alexnet.train_config import PAPER_LR, TrainConfig


def learning_rate_for(config, epoch):
    """The scheduled learning rate of `epoch` for the stateless schedules (step, cosine)."""
    if config.lr_schedule == "step":
        return config.lr * 0.1 ** min(epoch // config.step_epochs, config.max_lr_drops)
    if config.lr_schedule == "cosine":
        return 0.5 * config.lr * (1 + math.cos(math.pi * epoch / max(1, config.epochs)))
    return None


class Plateau:
    """AlexNet Section 5: divide the rate by 10 when the validation error stops improving.

    The paper did it three times; the state lives in tf.Variables so checkpoints keep it.
    """

    def __init__(self, patience, max_drops):
        import tensorflow as tf

        self.patience, self.max_drops = patience, max_drops
        self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="plateau_best")
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_wait")
        self.drops = tf.Variable(0, dtype=tf.int64, trainable=False, name="plateau_drops")

    def update(self, val_top1):
        """Record an epoch's validation top-1; return True when the rate must drop."""
        if val_top1 > float(self.best.numpy()):
            self.best.assign(val_top1)
            self.wait.assign(0)
            return False
        self.wait.assign_add(1)
        if int(self.wait.numpy()) >= self.patience and int(self.drops.numpy()) < self.max_drops:
            self.wait.assign(0)
            self.drops.assign_add(1)
            return True
        return False


def coupled_weight_decay(grads, variables, weight_decay):
    """Add `weight_decay * w` to each kernel's gradient: the paper's update rule.

    AlexNet Section 5: v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v. With SGD momentum
    that is an L2 term through the gradient (coupled with momentum), not Keras's
    decoupled `weight_decay`. Biases are not decayed (as in Caffe's reference nets).
    """
    if isinstance(weight_decay, (int, float)) and not weight_decay:
        return list(grads)
    return [
        g + weight_decay * v if _is_kernel(v) else g for g, v in zip(grads, variables, strict=True)
    ]


def add_weight_decay(model, weight_decay=TrainConfig.weight_decay):
    """Give every kernel of `model` the loss term (weight_decay / 2) * sum(w^2); return `model`.

    Its gradient is `weight_decay * w`, added to the loss's gradient before SGD's momentum:
    `coupled_weight_decay`'s update, expressed in the loss so that `model.fit` applies it on
    every Keras backend. Biases are not decayed. The term is a training setting, not saved
    with the model: call this again after loading a model to fine-tune it.
    """
    import keras

    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    for variable in model.trainable_variables:
        if _is_kernel(variable):
            variable.regularizer = regularizer
    return model


def compile_paper(
    model,
    *,
    lr=PAPER_LR,
    momentum=TrainConfig.momentum,
    weight_decay=TrainConfig.weight_decay,
    from_logits=False,
):
    """Compile `model` for `fit` with the paper's SGD: momentum, coupled decay, cross-entropy.

    AlexNet Section 5: v <- 0.9 v - 0.0005 lr w - lr grad; w <- w + v. Keras's SGD is
    v <- momentum v - lr g; w <- w + v, and `add_weight_decay` makes g = grad + decay w.
    `from_logits` for a model built with classifier_activation=None. Returns `model`.
    `fit` then logs `loss` (Keras's: cross-entropy plus the decay term), `cross_entropy`
    (what the train command reports as its loss) and `top1`; their difference is the
    decay term, `decay_term(model)` for the current weights.
    """
    import keras

    add_weight_decay(model, weight_decay)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=[
            keras.metrics.SparseCategoricalCrossentropy(
                name="cross_entropy", from_logits=from_logits
            ),
            keras.metrics.SparseCategoricalAccuracy(name="top1"),
        ],
    )
    return model


def decay_term(model):
    """The weight-decay term `add_weight_decay` adds to the loss, for the current weights."""
    import keras

    return float(sum(keras.ops.convert_to_numpy(loss) for loss in model.losses))


def _is_kernel(variable):
    """Whether a variable is a conv/dense kernel (decayed) rather than a bias."""
    return (
        variable.path.endswith("kernel") if hasattr(variable, "path") else "kernel" in variable.name
    )


def make_train_step(
    strategy, model, optimizer, global_batch, weight_decay, loss_scaling=False, jit_compile=False
):
    """Return a tf.function running one SGD step on every replica; it returns (loss sum, hits).

    Cross-entropy on logits averaged over the global batch; the optimizer all-reduces
    the replicas' gradients, so every replica applies the same update. `jit_compile`
    compiles each replica's forward and backward pass with XLA (the all-reduce and the
    update stay outside it: XLA cannot hold a cross-replica merge).
    """
    import keras

    require_tensorflow("the tf.distribute training loop", "optim.compile_paper and model.fit")
    import tensorflow as tf

    def gradients(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            scaled = optimizer.scale_loss(loss) if loss_scaling else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        # Scaled gradients get a scaled decay term: the optimizer divides both by the scale.
        decay = weight_decay * optimizer.dynamic_scale if loss_scaling else weight_decay
        grads = coupled_weight_decay(grads, model.trainable_variables, decay)
        hits = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        )
        return loss * tf.cast(global_batch, tf.float32), hits, grads

    if jit_compile:
        gradients = tf.function(gradients, jit_compile=True)

    def replica_step(images, labels):
        loss, hits, grads = gradients(images, labels)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss, hits

    @tf.function
    def step(images, labels):
        loss, hits = strategy.run(replica_step, args=(images, labels))
        return (
            strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None),
            strategy.reduce(tf.distribute.ReduceOp.SUM, hits, axis=None),
        )

    return step


def learning_rate_variable(optimizer):
    """The learning-rate variable (unwrapping a LossScaleOptimizer)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner.learning_rate


@contextlib.contextmanager
def global_precision(policy):
    """Keras's global dtype policy set to `policy` inside the block, the previous one after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
