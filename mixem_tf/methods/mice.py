"""MiCE: mixture of contrastive experts (Tsai, Li, Zhu, ICLR 2021; docs/METHODS.md §2).

Three augmented views per image: the student's K expert embeddings f_k of x¹, the EMA
teacher's expert embeddings v_k of x² (no gradient) and the student's gating embedding g of x³.
    log π_k = log softmax_k(⟨ω_k, g⟩ / κ)                           gating prior, ω fixed
    s⁺_k = ⟨v_k, f_k + μ̂_k⟩ / τ,   s⁻_kj = ⟨Q_jk, f_k + μ̂_k⟩ / τ        positive, ν queued keys
    log φ_k = s⁺_k − logsumexp(s⁺_k, s⁻_k1..s⁻_kν)                  expert k's likelihood
    r = softmax_k(log π_k + log φ_k)                                 posterior (E-step)
    L = −(1/B) Σ_i logsumexp_k(log π_ik + log φ_ik)                  negative ELBO
The last line equals the official −Σ r (log π + log φ − log r) with r the exact posterior, in
log-space (docs/METHODS.md §2.2). After the loss, the batch's teacher keys enter the FIFO queue Q;
after the optimiser step the teacher follows the student, θ_T ← m θ_T + (1 − m) θ_S
(parameters only; the teacher's BatchNorm keeps its own statistics, from batch statistics in
training mode); at each epoch end μ_k ← c_k/‖c_k‖ with c_k the epoch's sum of teacher keys v_k
of the images whose posterior argmax is k (the analytic M-step).

Deliberate differences from the official code: μ starts as random unit vectors (the original
leaves it uninitialised); an expert that no image chose during an epoch keeps its μ (the
original sets it to zero, where the gradient of its normalisation is unbounded); evaluation does
not push into the queue; under tf.distribute the queue takes the keys of the global batch, the
same on every replica. ShuffleBN (`MiCE.teacher_keys`) runs under a multi-replica TensorFlow
strategy; one device (the official code's single GPU) and JAX's data-parallel step, which
normalises over the global batch, need none.
"""

from __future__ import annotations

import math
import sys

import keras
import numpy as np
from keras import ops

from mixem_tf.distributed import gather_replicas, replica_info
from mixem_tf.heads import _torch_uniform
from mixem_tf.methods.base import ClusteringMethod
from mixem_tf.methods.declarations.mice import MiCEDeclaration, milestones
from mixem_tf.schedules import WarmupThenStep

__all__ = ["MiCE", "MiCEHeads", "negative_elbo", "simplex_prototypes"]


def simplex_prototypes(num_clusters: int, dim: int) -> np.ndarray:
    """K unit vectors in R^D with pairwise inner product −1/(K−1): MiCE's fixed gating
    prototypes ω (its `craft_MMcenters.m`), as float64 [K, D].

    Raises:
        ValueError: K < 2, or K > D + 1 (a regular simplex of K vertices needs K − 1 dimensions).
    """
    if num_clusters < 2 or num_clusters > dim + 1:
        raise ValueError(f"the gating prototypes need 2 <= K <= D + 1; got K = {num_clusters} "
                         f"with embedding size D = {dim} (raise embedding_dim)")
    target = -1.0 / (num_clusters - 1)
    omega = np.zeros((num_clusters, dim))
    omega[0, 0] = 1.0
    for k in range(1, num_clusters):
        for j in range(k):
            omega[k, j] = (target - omega[k] @ omega[j]) / omega[j, j]
        if k < dim:
            omega[k, k] = math.sqrt(max(1.0 - omega[k] @ omega[k], 0.0))
    return omega


def _l2_normalize(x, axis=-1):
    return x / ops.maximum(ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True)), 1e-12)


def _logsumexp_last(x):
    """logsumexp over the last axis of a [B, K, n] tensor, reduced as [B·K, n].

    tf2onnx rewrites a rank-3 max over the last axis into GlobalMaxPool, which ONNX's reference
    evaluator (onnx 1.23) reduces over the wrong axes; a rank-2 max stays a ReduceMax.
    """
    rows = ops.logsumexp(ops.reshape(x, (-1, ops.shape(x)[-1])), axis=-1)
    return ops.reshape(rows, ops.shape(x)[:-1])


def negative_elbo(f, v, g, mu, queue, omega, tau: float, kappa: float) -> dict:
    """MiCE's negative ELBO and its parts, in float32 (docs/METHODS.md §2.2).

    Args:
        f: student expert embeddings [B, K, D]; v: teacher expert embeddings [B, K, D];
        g: student gating embedding [B, D]; mu: expert prototypes [K, D] (normalised here);
        queue: negative keys [ν, K, D]; omega: gating prototypes [K, D].

    Returns:
        {"loss": −mean_b logsumexp_k(log π + log φ), "log_pi", "log_phi", "r": [B, K]}.
    """
    f, v, g, mu, queue, omega = (ops.cast(x, "float32") for x in (f, v, g, mu, queue, omega))
    log_pi = ops.log_softmax(ops.einsum("bd,kd->bk", g, omega) / kappa, axis=-1)
    mu = _l2_normalize(mu)
    positive = (ops.sum(v * f, axis=-1) + ops.einsum("bkd,kd->bk", v, mu)) / tau
    negative = (ops.einsum("vkd,bkd->bkv", queue, f)
                + ops.einsum("vkd,kd->kv", queue, mu)[None]) / tau        # [B, K, ν]
    # A logsumexp of the pair, not logaddexp: TensorFlow lowers that to Log1p, which tf2onnx
    # cannot convert, and the posterior is part of the exported graph.
    both = ops.stack([positive, _logsumexp_last(negative)], axis=-1)
    log_phi = positive - _logsumexp_last(both)
    log_joint = log_pi + log_phi
    return {"loss": -ops.mean(ops.logsumexp(log_joint, axis=-1)), "log_pi": log_pi,
            "log_phi": log_phi, "r": ops.softmax(log_joint, axis=-1)}


@keras.saving.register_keras_serializable("mixem_tf")
class MiCEHeads(keras.layers.Layer):
    """MiCE's K expert heads and its gating head on h (docs/METHODS.md §2.1): one Linear h → D each,
    L2-normalised, initialised as PyTorch's `nn.Linear`; the experts as one batched product.

    Returns {"f": experts [N, K, D], "g": gating [N, D]}, float32.
    """

    def __init__(self, num_experts: int, embedding_dim: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.num_experts = int(num_experts)
        self.embedding_dim = int(embedding_dim)

    def build(self, input_shape):
        fan_in, k, d = int(input_shape[-1]), self.num_experts, self.embedding_dim
        init = _torch_uniform(fan_in)
        self.expert_kernel = self.add_weight((k, fan_in, d), init, name="expert_kernel")
        self.expert_bias = self.add_weight((k, d), init, name="expert_bias")
        self.gating_kernel = self.add_weight((fan_in, d), init, name="gating_kernel")
        self.gating_bias = self.add_weight((d,), init, name="gating_bias")

    def call(self, h):
        f = ops.einsum("ni,kid->nkd", h, self.expert_kernel) + self.expert_bias
        g = ops.matmul(h, self.gating_kernel) + self.gating_bias
        return {"f": _l2_normalize(ops.cast(f, "float32")),
                "g": _l2_normalize(ops.cast(g, "float32"))}

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts,
                "embedding_dim": self.embedding_dim}


@keras.saving.register_keras_serializable("mixem_tf")
class MiCE(MiCEDeclaration, ClusteringMethod):
    """Student (backbone + `MiCEHeads`), EMA teacher, fixed simplex gating prototypes ω,
    expert prototypes μ and a FIFO queue of teacher keys; loss `negative_elbo`.

    State (all in checkpoints): the teacher (a copy of backbone and heads whose variables are
    non-trainable while its layers stay trainable, so its BatchNorm uses batch statistics in
    training mode), μ (trainable, also set at each epoch end), ω, the float32 queue and its
    position, and the epoch's per-expert key sums.

    Example:
        >>> model = MiCE(build_backbone("resnet34", (32, 32, 3)), MiCE.augmentation("cifar10"),
        ...              num_clusters=10)
    """

    views = ("student", "teacher", "gating")  # x¹ → f, x² → v (teacher), x³ → g
    loss_names = ("neg_elbo",)
    diagnostics = ("expected_log_prior", "expected_log_likelihood", "posterior_entropy")
    feature_names = ("h", "r", "pi")
    readout_features = ("h",)
    own_readouts = (("r", "argmax"), ("pi", "argmax"))
    embedding_feature = "h"

    @classmethod
    def learning_rate(cls, config, steps_per_epoch):
        options = config.options
        return WarmupThenStep(config.lr, steps_per_epoch, options["warmup_epochs"],
                              milestones(options["lr_milestones"]), options["lr_decay"])

    def __init__(self, backbone, augment_config, *, num_clusters, **kwargs):
        super().__init__(backbone, augment_config, num_clusters=num_clusters, **kwargs)
        k, d = self.num_clusters, self.options.embedding_dim
        omega = simplex_prototypes(k, d)
        features = backbone.output_shape[-1]
        self.heads = MiCEHeads(k, d, name="heads")
        self.heads.build((None, features))
        config = keras.saving.serialize_keras_object(backbone)
        config["config"]["name"] = f"teacher_{backbone.name}"
        self.teacher_backbone = keras.saving.deserialize_keras_object(config)
        self.teacher_heads = MiCEHeads(k, d, name="teacher_heads")
        self.teacher_heads.build((None, features))
        for variable in [*self.teacher_backbone.weights, *self.teacher_heads.weights]:
            variable.trainable = False  # out of the optimiser; the layers stay trainable
        self.copy_student_to_teacher()
        rng = np.random.default_rng(self.seed)
        mu = rng.normal(size=(k, d))
        self.expert_prototypes = keras.Variable(
            (mu / np.linalg.norm(mu, axis=1, keepdims=True)).astype("float32"),
            name="expert_prototypes", autocast=False)
        self.gating_prototypes = keras.Variable(omega.astype("float32"), trainable=False,
                                                name="gating_prototypes", autocast=False)
        bound = 1.0 / math.sqrt(d / 3.0)  # the official uniform(-a, a) start
        queue = (2 * rng.random((self.options.queue_size, k, d), dtype=np.float32) - 1) * bound
        self.queue = keras.Variable(queue, trainable=False, name="queue", autocast=False)
        self.queue_position = keras.Variable(0, dtype="int32", trainable=False,
                                             name="queue_position")
        self.key_sums = keras.Variable(np.zeros((k, d), "float32"), trainable=False,
                                       name="key_sums", autocast=False)
        self.diagnostic_trackers = [keras.metrics.Mean(name=n) for n in self.diagnostics]
        self.shuffle_seed = keras.random.SeedGenerator(self.seed, name="shuffle_seed")

    def teacher_pairs(self):
        """(teacher variable, student variable) of backbone and heads, in the same order."""
        return list(zip([*self.teacher_backbone.weights, *self.teacher_heads.weights],
                        [*self.backbone.weights, *self.heads.weights]))

    # -- networks ----------------------------------------------------------------------------
    def forward(self, images, training):
        h = self.backbone(images, training=training)
        return {"h": h, **self.heads(h)}

    def teacher(self, images, training):
        """The teacher's expert embeddings v [N, K, D], without gradient."""
        h = self.teacher_backbone(images, training=training)
        return ops.stop_gradient(self.teacher_heads(h)["f"])

    def teacher_keys(self, images, training):
        """The teacher's keys v of a batch, with ShuffleBN under a multi-replica TensorFlow
        strategy (MoCo's; the official `get_shuffle_ids`): each replica's teacher normalises a
        random share of the global batch, not the images its student sees, then the keys go
        back to their images. On one device (the official single GPU) and under JAX (one
        program over the global batch) BatchNorm already sees the whole batch."""
        replica, replicas = replica_info()
        if replicas == 1:
            return self.teacher(images, training)
        everything = gather_replicas(images)
        order = keras.random.shuffle(ops.arange(ops.shape(everything)[0]),
                                     seed=self.shuffle_seed)  # the same on every replica
        mine = ops.take(ops.reshape(order, (replicas, -1)), replica, axis=0)
        keys = gather_replicas(self.teacher(ops.take(everything, mine, axis=0), training))
        keys = ops.take(keys, ops.argsort(order), axis=0)  # row j: the key of image j
        keys = ops.reshape(keys, (replicas, -1, self.num_clusters, self.options.embedding_dim))
        return ops.take(keys, replica, axis=0)

    def elbo_parts(self, f, v, g):
        """`negative_elbo` with the model's μ, queue, ω and temperatures."""
        return negative_elbo(f, v, g, self.expert_prototypes, self.queue,
                             self.gating_prototypes, self.options.temperature,
                             self.options.gating_temperature)

    def forward_views(self, views):
        """Student on x¹ (experts) and x³ (gating), teacher on x², and the ELBO's parts."""
        student = self.forward(views["student"], training=True)
        v = self.teacher_keys(views["teacher"], training=True)
        g = self.forward(views["gating"], training=True)["g"]
        return {"f": student["f"], "v": v, "g": g, **self.elbo_parts(student["f"], v, g)}

    def embed_prepared(self, x):
        """h, the posterior r and the gating prior π of prepared images: the same image through
        student and teacher in inference mode, with the stored μ and queue (not updated)."""
        student = self.forward(x, training=False)
        parts = self.elbo_parts(student["f"], self.teacher(x, training=False), student["g"])
        return {"h": student["h"], "r": parts["r"], "pi": ops.exp(parts["log_pi"])}

    def loss_terms(self, outputs):
        return {"neg_elbo": outputs["loss"]}

    # -- state updates -----------------------------------------------------------------------
    def copy_student_to_teacher(self):
        """Teacher ← student, every weight (copies: under JAX an assigned buffer is shared)."""
        for teacher, student in self.teacher_pairs():
            teacher.assign(ops.copy(student.value))

    def initialize_state(self, images):
        """The teacher starts as an exact copy of the student (after --init-from, if any)."""
        self.copy_student_to_teacher()
        if self.options.queue_size > len(images):
            print(f"warning: queue_size {self.options.queue_size} exceeds the {len(images)} "
                  "training images: the queue holds several keys of each image as negatives; "
                  "lower --queue-size", file=sys.stderr)

    def on_train_epoch_begin(self, epoch):
        super().on_train_epoch_begin(epoch)
        self.key_sums.assign(ops.zeros_like(self.key_sums.value))

    def update_after_loss(self, outputs):
        """Enqueues the global batch's teacher keys (FIFO, wrapping) and adds them, per
        posterior-argmax expert, to the epoch's key sums; logs the ELBO's parts."""
        v, r = gather_replicas(outputs["v"]), gather_replicas(outputs["r"])
        batch, size = ops.shape(v)[0], self.options.queue_size
        if isinstance(batch, int) and batch > size:
            raise ValueError(f"queue_size {size} is smaller than the batch ({batch})")
        slots = ops.mod(self.queue_position + ops.arange(batch, dtype="int32"), size)
        self.queue.assign(ops.scatter_update(self.queue.value, slots[:, None], v))
        self.queue_position.assign(ops.mod(self.queue_position + batch, size))
        hard = ops.one_hot(ops.argmax(r, axis=-1), self.num_clusters, dtype="float32")
        self.key_sums.assign(self.key_sums + ops.einsum("bk,bkd->kd", hard, v))
        r, log_pi, log_phi = outputs["r"], outputs["log_pi"], outputs["log_phi"]
        values = (ops.sum(r * log_pi, axis=-1), ops.sum(r * log_phi, axis=-1),
                  -ops.sum(r * ops.log(ops.maximum(r, 1e-30)), axis=-1))
        for tracker, value in zip(self.diagnostic_trackers, values):
            tracker.update_state(ops.mean(value))

    def update_after_step(self):
        """θ_T ← m θ_T + (1 − m) θ_S for the student's trainable weights (not BN statistics)."""
        m = self.options.ema_momentum
        for teacher, student in self.teacher_pairs():
            if student.trainable:
                teacher.assign(m * teacher + (1.0 - m) * student)

    def on_train_epoch_end(self, epoch, logs):
        """μ_k ← c_k / ‖c_k‖ for every expert that some image chose this epoch."""
        sums = ops.convert_to_numpy(self.key_sums.value)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        mu = ops.convert_to_numpy(self.expert_prototypes.value)
        chosen = norms[:, 0] > 0
        mu[chosen] = sums[chosen] / norms[chosen]
        self.expert_prototypes.assign(mu)
        logs["experts_chosen"] = float(chosen.sum())

    def monitors(self, images, out_dir):
        from mixem_tf.callbacks import ClusterSizeMonitor
        from mixem_tf.runs import OCCUPANCY_FILE

        return [ClusterSizeMonitor(images[:2048], "r", out_dir and out_dir / OCCUPANCY_FILE,
                                   what="expert", advice="lower the learning rate or raise "
                                   "the queue size")]
