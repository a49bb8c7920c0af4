"""Loss functions, written with `keras.ops` (METHODS.md §1.2, §3.2).

Each returns a scalar float32 tensor averaged over this replica's samples; the training step
scales it for the replica count (`keras` convention), so gradients summed across replicas equal
those of the global batch.
"""

from __future__ import annotations

from keras import ops

from mixem_tf.distributed import gather_replicas, replica_info

__all__ = ["NTXentLoss", "l2_normalize"]

_MASKED = 1e9  # subtracted from a logit to exclude it; finite, so gradients stay finite


def l2_normalize(x, axis=-1, eps=1e-12):
    """x / max(‖x‖, eps): the cosine-similarity normalisation of NT-Xent."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, eps)


class NTXentLoss:
    """SimCLR's normalised-temperature cross entropy (Chen et al. 2020; METHODS.md §1.2.1).

    For 2B anchors (two views of B images) with cosine similarity s and positive p(i):
    ℓ_i = −log[exp(s(i,p(i))/τ) / Σ_{j≠i} exp(s(i,j)/τ)], averaged over the anchors.
    MIX'EM uses τ = 0.5 on its (un-normalised) mixed embedding; the cosine similarity
    normalises it here.

    Attributes:
        temperature: τ > 0.
        gather_distributed: under `tf.distribute`, take negatives from every replica's batch
            (2G − 2 negatives for a global batch G), as a single device would.

    Raises:
        ValueError: a temperature that is not positive.

    Example:
        >>> loss = NTXentLoss(temperature=0.5)
        >>> value = loss(z_view_a, z_view_b)   # [B, d] each
    """

    def __init__(self, temperature: float = 0.5, gather_distributed: bool = True):
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.gather_distributed = gather_distributed

    def per_anchor(self, z_a, z_b):
        """ℓ_i for the 2B local anchors [2B] (view a first, then view b)."""
        z_a = l2_normalize(ops.cast(z_a, "float32"))
        z_b = l2_normalize(ops.cast(z_b, "float32"))
        batch = ops.shape(z_a)[0]
        replica, _ = replica_info() if self.gather_distributed else (0, 1)
        all_a = gather_replicas(z_a) if self.gather_distributed else z_a
        all_b = gather_replicas(z_b) if self.gather_distributed else z_b
        global_batch = ops.shape(all_a)[0]

        anchors = ops.concatenate([z_a, z_b], axis=0)
        candidates = ops.concatenate([all_a, all_b], axis=0)
        logits = ops.matmul(anchors, ops.transpose(candidates)) / self.temperature

        local = ops.arange(batch, dtype="int32") + ops.cast(replica, "int32") * batch
        self_index = ops.concatenate([local, local + global_batch], axis=0)
        positive_index = ops.concatenate([local + global_batch, local], axis=0)
        self_mask = ops.one_hot(self_index, 2 * global_batch, dtype="float32")
        positive = ops.sum(logits * ops.one_hot(positive_index, 2 * global_batch), axis=1)
        return ops.logsumexp(logits - _MASKED * self_mask, axis=1) - positive

    def __call__(self, z_a, z_b):
        return ops.mean(self.per_anchor(z_a, z_b))

    def get_config(self):
        return {"temperature": self.temperature, "gather_distributed": self.gather_distributed}
