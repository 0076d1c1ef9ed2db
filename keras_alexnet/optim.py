"""The papers' optimisation: SGD with coupled weight decay, the step, the lr schedules."""

import math


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


def _is_kernel(variable):
    """Whether a variable is a conv/dense kernel (decayed) rather than a bias."""
    return (
        variable.path.endswith("kernel") if hasattr(variable, "path") else "kernel" in variable.name
    )


def make_train_step(strategy, model, optimizer, global_batch, weight_decay, loss_scaling=False):
    """Return a tf.function running one SGD step on every replica; it returns (loss sum, hits).

    Cross-entropy on logits averaged over the global batch; the optimizer all-reduces
    the replicas' gradients, so every replica applies the same update.
    """
    import keras
    import tensorflow as tf

    def replica_step(images, labels):
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
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        hits = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
        )
        return loss * tf.cast(global_batch, tf.float32), hits

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
