"""Loss functions, written with `keras.ops` (docs/METHODS.md §1.2, §3.2, "SCAN and
self-labelling").

Each returns a scalar float32 tensor averaged over this replica's samples; the training step
scales it for the replica count (`keras` convention), so gradients summed across replicas equal
those of the global batch.
"""

from __future__ import annotations

from keras import ops

from mixem_tf.distributed import gather_replicas, replica_info

__all__ = [
    "NTXentLoss",
    "associative_pull_push",
    "confidence_cross_entropy",
    "dec_target",
    "kl_divergence",
    "l2_normalize",
    "marginal_negative_entropy",
    "scan_loss",
    "sharpening",
]

_MASKED = 1e9  # subtracted from a logit to exclude it; finite, so gradients stay finite


def l2_normalize(x, axis=-1, eps=1e-12):
    """x / max(‖x‖, eps): the cosine-similarity normalisation of NT-Xent."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=axis, keepdims=True))
    return x / ops.maximum(norm, eps)


class NTXentLoss:
    """SimCLR's normalised-temperature cross entropy (Chen et al. 2020; docs/METHODS.md §1.2.1).

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


def _safe_norm(x, axis=-1, eps=1e-12):
    """‖x‖ with a finite gradient at 0 (a lone dummy sits exactly on its mean)."""
    return ops.sqrt(ops.sum(ops.square(x), axis=axis) + eps)


def marginal_negative_entropy(pi, eps=1e-12):
    """MIX'EM term (i), one view: Σ_k p̄_k log p̄_k with p̄ = batch mean of π [N, K].

    Minimising it maximises the entropy of the batch-marginal component distribution, which
    keeps every component in use (docs/METHODS.md §1.2.2). p̄ is clipped at `eps` before the log.
    """
    marginal = ops.mean(ops.cast(pi, "float32"), axis=0)
    return ops.sum(marginal * ops.log(ops.maximum(marginal, eps)))


def sharpening(logits, variant: str = "max"):
    """MIX'EM term (ii), one view: make each instance pick one component (docs/METHODS.md §1.2.3).

    Args:
        logits: mixing logits a [N, K] (π = softmax(a)).
        variant: "max", the official code's mean(1 − max_k π); or "entropy", the paper's
            "instance conditioned component entropy" mean(H(π_n)), computed from log-softmax
            so a one-hot π gives 0, not NaN.
    """
    logits = ops.cast(logits, "float32")
    if variant == "max":
        return ops.mean(1.0 - ops.max(ops.softmax(logits, axis=-1), axis=-1))
    if variant == "entropy":
        log_pi = ops.log_softmax(logits, axis=-1)
        return ops.mean(-ops.sum(ops.exp(log_pi) * log_pi, axis=-1))
    raise ValueError(f"sharpening variant must be 'max' or 'entropy', got {variant!r}")


def associative_pull_push(z, pi):
    """MIX'EM term (iii), one view: associative embedding pull and push (docs/METHODS.md §1.2.4).

    Samples are assigned to c_n = argmax_k π_n (no gradient through the argmax). K zero
    "dummy" embeddings, the k-th assigned to k, join the batch so every component has a member
    (as the official code, after CenterNet); m_k is the mean of component k's members, dummy
    included. pull = (1/K) Σ_k mean over k's members (dummy included) of ‖z_n − m_k‖;
    push = −(1/(K(K−1))) Σ_{k≠l} ‖m_k − m_l‖. Gradients reach z (so both the components and π).

    Returns:
        (pull, push), scalars; the method weighs them (w_pull 0.1, w_push 0.05).
    """
    z = ops.cast(z, "float32")
    num_components = ops.shape(pi)[-1]
    assigned = ops.one_hot(ops.argmax(ops.stop_gradient(pi), axis=-1), num_components,
                           dtype="float32")
    members = ops.concatenate([assigned, ops.eye(num_components, dtype="float32")], axis=0)
    points = ops.concatenate([z, ops.zeros((num_components, ops.shape(z)[-1]), "float32")],
                             axis=0)
    counts = ops.sum(members, axis=0)                                   # [K], each >= 1
    means = ops.matmul(ops.transpose(members), points) / counts[:, None]  # [K, d]
    distances = _safe_norm(points[:, None, :] - means[None, :, :])       # [N + K, K]
    pull = ops.mean(ops.sum(members * distances, axis=0) / counts)
    pairwise = _safe_norm(means[:, None, :] - means[None, :, :])         # [K, K]
    off_diagonal = 1.0 - ops.eye(num_components, dtype="float32")
    k = ops.cast(num_components, "float32")
    push = -ops.sum(pairwise * off_diagonal) / (k * (k - 1.0))
    return pull, push


def dec_target(q, eps=1e-8):
    """DEC's sharpened target (Xie et al. 2016; docs/METHODS.md §3.2), a constant:
    p_ik = (q_ik² / f_k) / Σ_l (q_il² / f_l) with cluster frequencies f_k = Σ_i q_ik over the
    global batch (gathered across replicas); `eps` keeps an empty cluster's f_k from dividing by
    zero."""
    q = ops.stop_gradient(ops.cast(q, "float32"))
    frequencies = ops.sum(gather_replicas(q), axis=0)
    weighted = ops.square(q) / (frequencies + eps)
    return weighted / ops.maximum(ops.sum(weighted, axis=-1, keepdims=True), eps)


def kl_divergence(p, q, eps=1e-8):
    """Mean over samples of KL(p‖q) = Σ_k p_k log(p_k / q_k), with `eps` inside both logs."""
    p, q = ops.cast(p, "float32"), ops.cast(q, "float32")
    return ops.mean(ops.sum(p * (ops.log(p + eps) - ops.log(q + eps)), axis=-1))


#: The smallest normal float32: SCAN's log of a similarity is floored there (log ≥ −87.3),
#: where PyTorch's BCELoss clamps the log at −100, so its gradient stays finite.
_TINY = 1.1754944e-38


def scan_loss(anchor_logits, neighbour_logits, entropy_weight: float = 5.0, eps=1e-8):
    """SCAN's clustering loss (Van Gansbeke et al., arXiv 2005.12320, eq. 2; its official
    `SCANLoss`; docs/METHODS.md, "SCAN and self-labelling").

    With p = softmax of the anchors' logits and p' of their sampled neighbours' [B, K]:
        consistency = −mean_i log⟨p_i, p'_i⟩
        entropy     = −Σ_k p̄_k log p̄_k,  p̄ = mean_i p_i (clamped at `eps` inside, as the
                      official `entropy`)
    and the loss is consistency − entropy_weight · entropy (the official sign: a high
    entropy of the mean prediction, i.e. every cluster in use, lowers the loss). Gradients
    reach both the anchors and the neighbours, as in the official code.

    Returns:
        (consistency, entropy): scalars; the method logs both and combines them.
    """
    if entropy_weight < 0:
        raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
    anchors = ops.softmax(ops.cast(anchor_logits, "float32"), axis=-1)
    neighbours = ops.softmax(ops.cast(neighbour_logits, "float32"), axis=-1)
    similarity = ops.sum(anchors * neighbours, axis=-1)
    consistency = -ops.mean(ops.log(ops.maximum(similarity, _TINY)))
    marginal = ops.maximum(ops.mean(anchors, axis=0), eps)
    entropy = -ops.sum(marginal * ops.log(marginal))
    return consistency, entropy


def confidence_cross_entropy(weak_logits, strong_logits, threshold: float = 0.99,
                             balance: bool = True):
    """SCAN's self-labelling loss (arXiv 2005.12320 §2.3; its official `ConfidenceBasedCE`).

    The weak view's prediction (no gradient) gives each image a pseudo-label (its argmax) and
    a confidence (its max probability); the images with confidence > `threshold` are the
    confident set S. The loss is the cross-entropy of the strong view's logits against those
    labels over S. With `balance`, each class c present in S weighs |S| / |S_c| (inverse to
    its confident count) and the mean is weighted (Σ w ℓ / Σ w, PyTorch's weighted mean), so
    every confident class counts equally. An empty confident set gives 0 and no gradient
    (the official code raises an error there).

    Returns:
        (loss, confident fraction of the batch), scalars.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"the confidence threshold must be in [0, 1), got {threshold}")
    weak = ops.softmax(ops.stop_gradient(ops.cast(weak_logits, "float32")), axis=-1)
    num_clusters = ops.shape(weak)[-1]
    confident = ops.cast(ops.max(weak, axis=-1) > threshold, "float32")             # [B]
    labels = ops.one_hot(ops.argmax(weak, axis=-1), num_clusters, dtype="float32")  # [B, K]
    if balance:
        counts = ops.sum(labels * confident[:, None], axis=0)                      # [K]
        class_weight = ops.where(counts > 0, ops.sum(confident) / ops.maximum(counts, 1.0),
                                 1.0)
        weights = confident * ops.sum(labels * class_weight[None, :], axis=-1)
    else:
        weights = confident
    log_p = ops.log_softmax(ops.cast(strong_logits, "float32"), axis=-1)
    cross_entropy = -ops.sum(labels * log_p, axis=-1)
    loss = ops.sum(weights * cross_entropy) / ops.maximum(ops.sum(weights), 1.0)
    return loss, ops.mean(confident)
