"""Cross-replica helpers for losses that need the global batch (docs/METHODS.md §5.12).

Under a TensorFlow `tf.distribute` strategy each replica runs the training step on its slice of
the global batch; contrastive losses need every replica's embeddings as negatives. Under JAX,
Keras' `DataParallel` distribution compiles one program over the global batch, so there is
nothing to gather and these helpers are identities. Without a strategy they are identities too.
`average_replicas` keeps per-replica state (BatchNorm's moving statistics) equal across replicas;
`multi_worker` tells the training step how Keras will reduce its logs. TensorFlow is imported
only when Keras runs on it.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["average_replicas", "gather_replicas", "multi_worker", "replica_info"]


def _tf_replica_context():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica_info():
    """(replica id, number of replicas) of the running training step; (0, 1) outside one."""
    context = _tf_replica_context()
    if context is None:
        return 0, 1
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def gather_replicas(x):
    """Concatenates `x` from every replica along axis 0, in replica order (differentiable).

    The gradient of each replica's loss reaches the replica that produced the rows, so local
    losses scaled by 1 / replicas sum to the single-device gradient of the global batch.
    """
    context = _tf_replica_context()
    if context is None:
        return x
    return context.all_gather(x, axis=0)


def average_replicas(variables) -> None:
    """Sets every replica's copy of `variables` to the copies' mean (inside a training step).

    Keras 3 creates BatchNormalization's moving statistics with aggregation "none": under
    tf.distribute each replica then updates only its own copy, from its own slice of the batch,
    and the copies drift apart (a checkpoint holds replica 0's; `predict` normalises each
    replica's slice with that replica's copy; each worker of a multi-worker run keeps its own).
    Averaging them after every step keeps them equal: moving averages of the replicas' batch
    moments, as tf.keras 2 kept them. A no-op outside a multi-replica TensorFlow step.
    """
    context = _tf_replica_context()
    if context is None or not variables:
        return
    # One all_gather of every value, flattened, stacked by replica: the collective the losses
    # already use (`all_reduce` finds no destination device for these reads under
    # MultiWorkerMirroredStrategy). Every replica then takes the same mean of the same rows.
    flat = ops.concatenate([ops.reshape(v.value, (-1,)) for v in variables], axis=0)
    means = ops.mean(context.all_gather(flat[None, :], axis=0), axis=0)
    start = 0
    for variable in variables:
        size = int(np.prod(variable.shape))
        variable.assign(ops.reshape(means[start:start + size], variable.shape))
        start += size


def multi_worker() -> bool:
    """True under a `MultiWorkerMirroredStrategy` that spans several workers.

    Keras' TensorFlow trainer reduces the logs of such a run with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalars a training step
    returns; `ClusteringMethod.compute_metrics` gives them a leading axis of 1 there.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return bool(in_multi_worker_mode()) if in_multi_worker_mode else True
