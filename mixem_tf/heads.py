"""Heads on top of the backbone representation h (docs/METHODS.md §1.1, §3.1, §5.4, "SCAN and
self-labelling").

Dense layers here are initialised as PyTorch's `nn.Linear` (weights and biases
U(±1/√fan_in)), as the papers' heads were, rather than Keras' Glorot-uniform and zero bias.
"""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["ClusterHead", "MixtureHead", "ProjectionHead", "StudentTAssignment", "torch_dense"]


def torch_dense(units: int, fan_in: int, *, name: str | None = None, **kwargs):
    """A Dense layer initialised like PyTorch's `nn.Linear(fan_in, units)` (§5.4)."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.layers.Dense(
        units,
        kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform"),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound),
        name=name,
        **kwargs,
    )


@keras.saving.register_keras_serializable("mixem_tf")
class ProjectionHead(keras.layers.Layer):
    """MLP h → hidden → ReLU → out: SimCLR's projection head.

    Defaults reproduce MIX'EM's non-mixture head (512 → 512 → ReLU → 32, its `resnet.py`);
    SimCLR's own paper uses out_dim 128.

    Example:
        >>> z = ProjectionHead(hidden_dim=512, out_dim=32)(h)   # h: [N, 512]
    """

    def __init__(self, hidden_dim: int = 512, out_dim: int = 32, **kwargs):
        super().__init__(**kwargs)
        if hidden_dim < 1 or out_dim < 1:
            raise ValueError(f"head sizes must be positive, got {hidden_dim} and {out_dim}")
        self.hidden_dim = int(hidden_dim)
        self.out_dim = int(out_dim)

    def build(self, input_shape):
        fan_in = int(input_shape[-1])
        self.hidden = torch_dense(self.hidden_dim, fan_in, activation="relu", name="hidden")
        self.output_layer = torch_dense(self.out_dim, self.hidden_dim, name="output")
        self.hidden.build(input_shape)
        self.output_layer.build((*input_shape[:-1], self.hidden_dim))

    def call(self, h):
        return self.output_layer(self.hidden(h))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.out_dim)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "out_dim": self.out_dim}


def _torch_uniform(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-bound, bound)


@keras.saving.register_keras_serializable("mixem_tf")
class MixtureHead(keras.layers.Layer):
    """MIX'EM's mixture of embeddings (docs/METHODS.md §1.1).

    K component MLPs h → hidden → ReLU → d give u_k; each is L2-normalised to e_k. A mixing MLP
    h → hidden → ReLU → K gives logits a and π = softmax(a). The mixed embedding is
    z = Σ_k π_k e_k (not re-normalised; ‖z‖ ≤ 1). The K components run as batched tensor
    products (one einsum per layer), not a Python loop. Defaults are the paper's: K = 10,
    d = 32, hidden 512; weights initialised as PyTorch's `nn.Linear`.

    Returns a dict: logits [N, K], pi [N, K], components e [N, K, d], z [N, d], and
    e_max [N, d] (the component that argmax π selects).

    Example:
        >>> out = MixtureHead(num_components=10, embedding_dim=32)(h)
        >>> out["z"].shape, out["pi"].shape      # (N, 32), (N, 10)
    """

    def __init__(self, num_components: int = 10, embedding_dim: int = 32,
                 hidden_dim: int = 512, **kwargs):
        super().__init__(**kwargs)
        if num_components < 2:
            raise ValueError(f"a mixture needs at least 2 components, got {num_components}")
        if embedding_dim < 1 or hidden_dim < 1:
            raise ValueError(f"head sizes must be positive, got {embedding_dim}, {hidden_dim}")
        self.num_components = int(num_components)
        self.embedding_dim = int(embedding_dim)
        self.hidden_dim = int(hidden_dim)

    def build(self, input_shape):
        fan_in, k = int(input_shape[-1]), self.num_components
        self.w1 = self.add_weight((k, fan_in, self.hidden_dim), _torch_uniform(fan_in), name="w1")
        self.b1 = self.add_weight((k, self.hidden_dim), _torch_uniform(fan_in), name="b1")
        self.w2 = self.add_weight((k, self.hidden_dim, self.embedding_dim),
                                  _torch_uniform(self.hidden_dim), name="w2")
        self.b2 = self.add_weight((k, self.embedding_dim), _torch_uniform(self.hidden_dim),
                                  name="b2")
        self.mixing_hidden = torch_dense(self.hidden_dim, fan_in, activation="relu",
                                         name="mixing_hidden")
        self.mixing_logits = torch_dense(k, self.hidden_dim, name="mixing_logits")
        self.mixing_hidden.build(input_shape)
        self.mixing_logits.build((*input_shape[:-1], self.hidden_dim))

    def call(self, h):
        hidden = ops.relu(ops.einsum("ni,kih->nkh", h, self.w1) + self.b1)
        u = ops.einsum("nkh,khd->nkd", hidden, self.w2) + self.b2
        u = ops.cast(u, "float32")
        norm = ops.sqrt(ops.sum(ops.square(u), axis=-1, keepdims=True))
        components = u / ops.maximum(norm, 1e-12)
        logits = ops.cast(self.mixing_logits(self.mixing_hidden(h)), "float32")
        pi = ops.softmax(logits, axis=-1)
        z = ops.einsum("nk,nkd->nd", pi, components)
        chosen = ops.one_hot(ops.argmax(pi, axis=-1), self.num_components, dtype="float32")
        e_max = ops.einsum("nk,nkd->nd", chosen, components)
        return {"logits": logits, "pi": pi, "components": components, "z": z, "e_max": e_max}

    def get_config(self):
        return {**super().get_config(), "num_components": self.num_components,
                "embedding_dim": self.embedding_dim, "hidden_dim": self.hidden_dim}


@keras.saving.register_keras_serializable("mixem_tf")
class StudentTAssignment(keras.layers.Layer):
    """DEC's clustering layer (Xie et al. 2016; cdec, docs/METHODS.md §3.1): K trainable centres
    μ_k in the space of h and the Student-t soft assignment
    q_ik ∝ (1 + ‖h_i − μ_k‖² / α)^(−(α+1)/2), normalised over k (α = 1 in the paper), computed
    as a softmax of the log-kernel so that far points do not underflow.

    The centres start at zero; a method sets them (e.g. K-means on h) before training.

    Example:
        >>> q = StudentTAssignment(num_clusters=10)(h)      # [N, 10], rows sum to 1
    """

    def __init__(self, num_clusters: int = 10, alpha: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if num_clusters < 2:
            raise ValueError(f"need at least 2 centres, got {num_clusters}")
        if not alpha > 0:
            raise ValueError(f"the Student-t alpha must be positive, got {alpha}")
        self.num_clusters = int(num_clusters)
        self.alpha = float(alpha)

    def build(self, input_shape):
        self.centres = self.add_weight((self.num_clusters, int(input_shape[-1])), "zeros",
                                       name="centres")

    def call(self, h):
        h = ops.cast(h, "float32")
        squared = (ops.sum(ops.square(h), axis=-1, keepdims=True)
                   - 2.0 * ops.matmul(h, ops.transpose(self.centres))
                   + ops.sum(ops.square(self.centres), axis=-1)[None, :])
        squared = ops.maximum(squared, 0.0)
        # log(1 + x), not log1p: tf2onnx has no Log1p, and x >= 0 keeps it accurate enough.
        log_kernel = -(self.alpha + 1.0) / 2.0 * ops.log(1.0 + squared / self.alpha)
        return ops.softmax(log_kernel, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_clusters)

    def get_config(self):
        return {**super().get_config(), "num_clusters": self.num_clusters, "alpha": self.alpha}


@keras.saving.register_keras_serializable("mixem_tf")
class ClusterHead(keras.layers.Layer):
    """SCAN's cluster head (arXiv 2005.12320; its official `ClusteringModel`): one linear
    layer h → K logits, initialised as PyTorch's `nn.Linear`; p = softmax(logits).

    Example:
        >>> logits = ClusterHead(num_clusters=10)(h)          # [N, 10]
    """

    def __init__(self, num_clusters: int = 10, **kwargs):
        super().__init__(**kwargs)
        if num_clusters < 2:
            raise ValueError(f"need at least 2 clusters, got {num_clusters}")
        self.num_clusters = int(num_clusters)

    def build(self, input_shape):
        self.linear = torch_dense(self.num_clusters, int(input_shape[-1]), name="linear")
        self.linear.build(input_shape)

    def call(self, h):
        return ops.cast(self.linear(h), "float32")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_clusters)

    def get_config(self):
        return {**super().get_config(), "num_clusters": self.num_clusters}
