"""Heads on top of the backbone representation h (METHODS.md §1.1, §5.4).

Dense layers here are initialised as PyTorch's `nn.Linear` (weights and biases
U(±1/√fan_in)), as the papers' heads were, rather than Keras' Glorot-uniform and zero bias.
"""

from __future__ import annotations

import math

import keras

__all__ = ["ProjectionHead", "torch_dense"]


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
