"""The base model every method subclasses: views on device, backbone, loss terms, read-out.

A method adds its heads (`forward`) and its loss (`loss_terms`), nothing else. Keras' own
training step (TensorFlow or JAX) calls `call(images, training=True)`, which augments the uint8
batch into views on the accelerator and runs the network on each, then `compute_loss`, which
sums the method's terms, adds coupled L2 weight decay, logs every term, and scales the total for
the replica count as Keras expects. With `training=False`, `call` returns the evaluation
features of un-augmented images (same resize and normalisation as training).
"""

from __future__ import annotations

import keras
from keras import ops

from mixem_tf.augment import AugmentConfig, Augmenter, preprocess

__all__ = ["ClusteringMethod"]


def _scale_for_replicas(value):
    """Divides by the number of replicas under tf.distribute (Keras' loss convention)."""
    from mixem_tf.distributed import replica_info

    _, replicas = replica_info()
    return value if replicas == 1 else value / replicas


class ClusteringMethod(keras.Model):
    """Backbone + augmentation + per-term loss tracking, shared by every method.

    Attributes:
        backbone: a Keras model mapping float images [N, H, W, C] to h [N, D].
        augment_config: the views' `AugmentConfig`; its size and normalisation also define
            the evaluation preprocessing.
        num_clusters: K.
        coupled_weight_decay: λ of the L2 term (λ/2)·Σ‖w‖² added to the loss, as PyTorch's
            `weight_decay` (METHODS.md §5.3); 0 disables it.
        epoch: the epoch being trained (an int variable kept by `callbacks.EpochCounter`),
            for terms scheduled by epoch; part of the model state on either backend.
        num_views: augmented views per image (2 for SimCLR/MIX'EM, 3 for MiCE/method 3).
        loss_names: the names of `loss_terms`' entries, logged each epoch.
    """

    num_views = 2
    loss_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ("h",)
    readout_features: tuple[str, ...] | None = None  # default: feature_names
    default_readout = {"feature": "h", "normalize": True, "clustering": "kmeans"}

    @classmethod
    def options_from(cls, config) -> dict:
        """Constructor options of this method taken from a `TrainConfig`."""
        return {"temperature": config.temperature, **config.extra}

    def __init__(
        self,
        backbone: keras.Model,
        augment_config: AugmentConfig,
        *,
        num_clusters: int,
        coupled_weight_decay: float = 0.0,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(num_clusters) < 2:
            raise ValueError(f"the number of clusters must be at least 2, got {num_clusters}")
        if coupled_weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {coupled_weight_decay}")
        self.backbone = backbone
        self.augment_config = augment_config
        self.augmenter = Augmenter(augment_config, seed=seed)
        self.num_clusters = int(num_clusters)
        self.coupled_weight_decay = float(coupled_weight_decay)
        self.epoch = keras.Variable(0, dtype="int32", trainable=False, name="epoch")
        self.term_trackers = [keras.metrics.Mean(name=name) for name in self.loss_names]

    # -- what a method provides ---------------------------------------------------------
    def forward(self, images, training: bool) -> dict:
        """Network outputs for float images: at least {"h": backbone features}."""
        raise NotImplementedError

    def loss_terms(self, views: list[dict]) -> dict:
        """The method's loss terms (scalars) from the outputs of each view."""
        raise NotImplementedError

    # -- shared machinery ---------------------------------------------------------------
    def make_views(self, images):
        """`num_views` independent augmentations of a uint8 batch, made on the device."""
        return [self.augmenter(images) for _ in range(self.num_views)]

    def call(self, images, training=False):
        if training:
            return [self.forward(view, training=True) for view in self.make_views(images)]
        return self.embed(images)

    def embed(self, images):
        """Evaluation features (`feature_names`) of un-augmented uint8 images."""
        outputs = self.forward(preprocess(images, self.augment_config), training=False)
        return {name: outputs[name] for name in self.feature_names}

    def readout_inputs(self, features: dict) -> dict:
        """Arguments of `cluster.readout_table` beyond the labels: features to cluster, and
        for mixture methods the argmax components."""
        names = self.readout_features or self.feature_names
        return {"features": {name: features[name] for name in names}}

    def weight_decay_term(self):
        """(λ/2)·Σ‖w‖² over every trainable weight (BN and biases too, as the papers)."""
        if not self.coupled_weight_decay:
            return 0.0
        squares = [ops.sum(ops.square(ops.cast(w, "float32"))) for w in self.trainable_weights]
        return 0.5 * self.coupled_weight_decay * ops.sum(ops.stack(squares))

    def train_step(self, *args, **kwargs):
        """Keras' training step; under tf.distribute, the replicas' copies of the non-trainable
        float state (BatchNorm's moving statistics) are then averaged (`average_replicas`)."""
        result = super().train_step(*args, **kwargs)
        if keras.backend.backend() == "tensorflow":
            from mixem_tf.distributed import average_replicas

            average_replicas([v for v in self.non_trainable_variables
                              if v.aggregation == "none" and "float" in str(v.dtype)])
        return result

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras' logs; under multi-worker TensorFlow each one shaped [1] (see `multi_worker`)."""
        from mixem_tf.distributed import multi_worker

        logs = super().compute_metrics(x, y, y_pred, sample_weight)
        if multi_worker():
            logs = keras.tree.map_structure(lambda value: ops.reshape(value, (1,)), logs)
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Skips Keras' (TensorFlow trainer's) symbolic build of an already built model.

        Under a tf.distribute strategy it takes a batch from a fresh iterator of the training
        data and all-reduces it across replicas only to read its shapes: under
        MultiWorkerMirroredStrategy that reduce fails on the input tuple, and a one-shot
        generator would lose the batch. `train_run` builds the model and optimiser first.
        """
        if self.built and self.optimizer is not None and self.optimizer.built:
            return None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not training:
            return ops.zeros(())
        terms = self.loss_terms(y_pred)
        for tracker in self.term_trackers:
            tracker.update_state(terms[tracker.name])
        total = ops.sum(ops.stack([ops.cast(t, "float32") for t in terms.values()]))
        total = total + self.weight_decay_term()
        return _scale_for_replicas(total)
