"""The base every method subclasses: named views on device, loss terms, hooks, read-outs.

A method is a plug-in: its declaration (`MethodDeclaration`: name, options, recipes, protocol)
and its model, a subclass of that declaration and of `ClusteringMethod`, which declares views,
schedule and read-out rows and overrides the hooks it needs; the one training loop
(`train_run`) and the exporters only talk to this interface.

Keras' own training step (TensorFlow or JAX) calls `call(images, training=True)`, which turns the
uint8 batch into the method's named views on the accelerator and forwards each
(`forward_views`), then `compute_loss`, which sums the method's terms, adds coupled L2 weight
decay, logs every term, and scales the total for the replica count as Keras expects. With
`training=False`, `call` returns the evaluation features of clean images (same resize and
normalisation as training).

Lifecycle hooks, in the order a run reaches them:

| hook | when | where | may change |
| --- | --- | --- | --- |
| `initialize_state(images)` | before the first epoch of a new run, never on resume | eager | any variable |
| `prepare_training(images, run_dir, source, resume)` | before training, new run or resume | eager | any variable; what `training_batch` reads |
| `training_batch(images, indices, rng)` | for every batch, in the feeder's thread | numpy | nothing |
| `on_train_epoch_begin(epoch)` | before each epoch | eager | any variable |
| `update_after_loss(outputs)` | in each training step, after the loss | compiled, every replica | non-trainable variables |
| `update_after_step()` | in each training step, after the optimiser | compiled, every replica | non-trainable variables |
| `on_train_epoch_end(epoch, logs)` | after each epoch | eager | any variable; `logs` |

Known Keras 3 traps these hooks are shaped around: a layer frozen with `trainable = False` runs
its BatchNorm on moving statistics even with `training=True`; under JAX, `a.assign(b)` of one
variable's value to another makes two variables share a buffer that `fit` then donates twice
(assign a copy: `ops.copy(b.value)`); and a variable assigned inside `call` carries gradient
under JAX (so state updates go in the hooks, which see gradient-free values).
"""

from __future__ import annotations

from typing import ClassVar

import keras
from keras import ops

from mixem_tf.augment import AugmentConfig, Augmenter, preprocess
from mixem_tf.methods.declaration import MethodDeclaration
from mixem_tf.methods.options import MethodOptions
from mixem_tf.readouts import ReadoutSpec

__all__ = ["CLEAN", "ClusteringMethod"]

#: The view name that means "resize and normalisation only" (no augmentation).
CLEAN = "clean"


def _scale_for_replicas(value):
    """Divides by the number of replicas under tf.distribute (Keras' loss convention)."""
    from mixem_tf.distributed import replica_info

    _, replicas = replica_info()
    return value if replicas == 1 else value / replicas


class ClusteringMethod(MethodDeclaration, keras.Model):
    """Backbone + named views + per-term loss tracking, shared by every method.

    Class attributes a method sets, beyond its declaration's (`MethodDeclaration`):
        views: view names, in the order they are drawn; `CLEAN` is the un-augmented image,
            any other name an independent augmented view.
        loss_names: the names of `loss_terms`' entries, logged each epoch.
        feature_names: evaluation outputs; readout_features: those K-means clusters.
        readout_kinds: the read-out kinds (`mixem_tf.readouts.READOUT_KINDS`) fitted on each
            of `readout_features`, raw and L2-normalised.
        own_readouts: (feature, kind) of the method's own assignments (an argmax of a
            probability vector the network outputs).
        embedding_feature: the feature an export gives as `embedding` when it serves one of
            the method's own (argmax) read-outs.

    Attributes:
        backbone: a Keras model mapping float images [N, H, W, C] to h [N, D].
        augment_config: the augmented views' `AugmentConfig`; its size and normalisation also
            define the clean view and the evaluation preprocessing.
        options: the method's `Options`.
        num_clusters: K.
        coupled_weight_decay: λ of the L2 term (λ/2)·Σ‖w‖² added to the loss, as PyTorch's
            `weight_decay` (docs/METHODS.md §5.3); 0 disables it.
        epoch: the epoch being trained (an int variable set by `on_train_epoch_begin`), for
            terms scheduled by epoch; part of the model state on either backend.
    """

    views: ClassVar[tuple[str, ...]] = ("a", "b")
    loss_names: ClassVar[tuple[str, ...]] = ()
    feature_names: ClassVar[tuple[str, ...]] = ("h",)
    readout_features: ClassVar[tuple[str, ...] | None] = None  # default: feature_names
    readout_kinds: ClassVar[tuple[str, ...]] = ("kmeans",)
    own_readouts: ClassVar[tuple[tuple[str, str], ...]] = ()
    embedding_feature: ClassVar[str] = "h"  # exported as `embedding` beside an argmax read-out

    # -- what a method declares about runs -----------------------------------------------
    @classmethod
    def model_class(cls):
        """The model is its own model class (so a model registered directly also builds)."""
        return cls

    @classmethod
    def learning_rate(cls, config, steps_per_epoch: int):
        """The optimiser's learning rate for a resolved `TrainConfig`: a float or a schedule."""
        return config.lr

    # -- construction and saving ---------------------------------------------------------
    def __init__(self, backbone: keras.Model, augment_config: AugmentConfig, *,
                 num_clusters: int, options: MethodOptions | dict | None = None,
                 coupled_weight_decay: float = 0.0, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        if int(num_clusters) < 2:
            raise ValueError(f"the number of clusters must be at least 2, got {num_clusters}")
        if coupled_weight_decay < 0:
            raise ValueError(f"weight decay must be >= 0, got {coupled_weight_decay}")
        if options is None:
            options = self.Options()
        elif isinstance(options, dict):
            options = self.Options.from_dict(options, self.name)
        options.validate()
        self.options = options
        self.backbone = backbone
        self.augment_config = augment_config
        self.seed = int(seed)
        self.augmenter = Augmenter(augment_config, seed=seed)
        self.num_clusters = int(num_clusters)
        self.coupled_weight_decay = float(coupled_weight_decay)
        self.epoch = keras.Variable(0, dtype="int32", trainable=False, name="epoch")
        self.term_trackers = [keras.metrics.Mean(name=name) for name in self.loss_names]

    def get_config(self):
        return {"name": super().get_config()["name"],
                "backbone": keras.saving.serialize_keras_object(self.backbone),
                "augment_config": self.augment_config.to_dict(),
                "num_clusters": self.num_clusters, "options": self.options.to_dict(),
                "coupled_weight_decay": self.coupled_weight_decay, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone"))
        augment = AugmentConfig.from_dict(config.pop("augment_config"))
        return cls(backbone, augment, **config)

    # -- what a method computes ----------------------------------------------------------
    def forward(self, images, training: bool) -> dict:
        """Network outputs for float images: at least {"h": backbone features}."""
        raise NotImplementedError

    def forward_views(self, views: dict) -> dict:
        """Outputs of every view during training: {view name: output dict}. By default each
        view runs through `forward`; a method may forward views through other networks."""
        return {name: self.forward(images, training=True) for name, images in views.items()}

    def loss_terms(self, outputs: dict) -> dict:
        """The method's loss terms (scalars) from `forward_views`' outputs."""
        raise NotImplementedError

    @classmethod
    def readout_specs(cls) -> list[ReadoutSpec]:
        """Every read-out of the method's table: each kind on each K-means feature (raw and
        L2-normalised), then the method's own assignments."""
        return ([ReadoutSpec(feature, normalize, kind)
                 for feature in cls.readout_features or cls.feature_names
                 for normalize in (False, True) for kind in cls.readout_kinds]
                + [ReadoutSpec(feature, False, kind) for feature, kind in cls.own_readouts])

    @classmethod
    def default_spec(cls) -> ReadoutSpec:
        """The default read-out's spec."""
        row = cls.default_readout
        return ReadoutSpec(row["feature"], bool(row["normalize"]),
                           row.get("clustering", "kmeans"))

    def readout_context(self, features: dict) -> dict:
        """What the method's read-out kinds need beyond the features (MIX'EM: its mixture
        components for `kmeans_component_init`)."""
        return {}

    def monitors(self, images, out_dir) -> list:
        """The method's own Keras callbacks for a run (e.g. cluster-size alarms); `images` is
        a sample of training images, `out_dir` the run directory (None off the chief)."""
        return []

    # -- lifecycle hooks (see the module docstring) ---------------------------------------
    def initialize_state(self, images) -> None:
        """Before the first epoch of a new run, on the uint8 training images. Not on resume:
        the checkpoint holds the state."""

    def prepare_training(self, images, run_dir, *, source=None, resume: bool = False) -> None:
        """Before training, on a new run (after `initialize_state`) and on a resume (after the
        checkpoint is restored), on the uint8 training images: builds what `training_batch`
        needs (SCAN's neighbours). `run_dir` is the run directory (None off the chief), where
        such state is kept so a resume reads it back; `source` the `--init-from` run or None."""

    def training_batch(self, images, indices, rng):
        """The uint8 array the training step gets for the samples `indices` of the training
        `images`: by default `images[indices]` (`read_rows`). Runs in the feeder's thread;
        `rng` is a numpy Generator seeded by (seed, epoch, step), so a resumed run gets the
        batches an uninterrupted one would. Its first axis must stay the batch."""
        from mixem_tf.data.cache import read_rows

        return read_rows(images, indices)

    def on_train_epoch_begin(self, epoch: int) -> None:
        """Before each epoch (0-based): sets `epoch`."""
        self.epoch.assign(epoch)

    def update_after_loss(self, outputs: dict) -> None:
        """In the training step after the loss, with `outputs` free of gradient."""

    def update_after_step(self) -> None:
        """In the training step after the optimiser has updated the trainable weights."""

    def on_train_epoch_end(self, epoch: int, logs: dict) -> None:
        """After each epoch (0-based); may add entries to `logs`."""

    # -- shared machinery ------------------------------------------------------------------
    def make_views(self, images) -> dict:
        """The method's named views of a uint8 batch, drawn on the device in `views` order."""
        return {name: preprocess(images, self.augment_config) if name == CLEAN
                else self.augmenter(images) for name in self.views}

    def call(self, images, training=False):
        if training:
            return self.forward_views(self.make_views(images))
        return self.embed(images)

    def embed(self, images):
        """Evaluation features (`feature_names`) of un-augmented uint8 images."""
        return self.embed_prepared(preprocess(images, self.augment_config))

    def embed_prepared(self, x):
        """Evaluation features of float images already resized and normalised: a clean image
        (`preprocess`) or an augmented view (the label-free scores embed both)."""
        outputs = self.forward(x, training=False)
        return {name: outputs[name] for name in self.feature_names}

    def weight_decay_term(self):
        """(λ/2)·Σ‖w‖² over every trainable weight (BN and biases too, as the papers)."""
        if not self.coupled_weight_decay:
            return 0.0
        squares = [ops.sum(ops.square(ops.cast(w, "float32"))) for w in self.trainable_weights]
        return 0.5 * self.coupled_weight_decay * ops.sum(ops.stack(squares))

    def batchnorm_statistics(self) -> list:
        """Every BatchNormalization layer's moving mean and variance."""
        return [variable for layer in self._flatten_layers()
                if isinstance(layer, keras.layers.BatchNormalization)
                for variable in (layer.moving_mean, layer.moving_variance)]

    def train_step(self, *args, **kwargs):
        """Keras' training step, then `update_after_step`. Under tf.distribute the replicas'
        BatchNorm statistics are first averaged (`average_replicas`); under JAX the hook runs
        on the step's new state (a stateless scope) and its assignments join that state."""
        result = super().train_step(*args, **kwargs)
        if keras.backend.backend() == "jax":
            logs, state = result
            return logs, self._state_after_step(state)
        from mixem_tf.distributed import average_replicas

        average_replicas(self.batchnorm_statistics())
        self.update_after_step()
        return result

    def _state_after_step(self, state):
        """JAX: `update_after_step` applied to the (trainable, non-trainable, optimiser,
        metrics) values of a training step's state."""
        if type(self).update_after_step is ClusteringMethod.update_after_step:
            return state
        trainable, non_trainable, *rest = state
        mapping = [*zip(self.trainable_variables, trainable),
                   *zip(self.non_trainable_variables, non_trainable)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            self.update_after_step()
        non_trainable = [scope.get_current_value(v) for v in self.non_trainable_variables]
        return (trainable, non_trainable, *rest)

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
        self.update_after_loss(keras.tree.map_structure(ops.stop_gradient, y_pred))
        return _scale_for_replicas(total)
