"""Learning-rate schedules, as functions of the optimiser step (backend-neutral)."""

from __future__ import annotations

import math

import keras
from keras import ops

__all__ = ["ConstantThenCosine", "WarmupThenStep"]


@keras.saving.register_keras_serializable("mixem_tf")
class ConstantThenCosine(keras.optimizers.schedules.LearningRateSchedule):
    """MIX'EM's schedule (docs/METHODS.md §1.3): constant, then cosine annealing stepped per epoch.

    lr(e) = base · ½(1 + cos(π · max(0, e + 1 − max(constant_epochs, 1)) / cosine_epochs)) for
    the 0-based epoch e = step // steps_per_epoch: `constant_epochs` epochs (at least one) at the
    base rate, then one cosine step per epoch. With constant_epochs = 10 and cosine_epochs =
    total epochs this is the official loop, whose epochs count from 1 and which steps
    `CosineAnnealingLR(T_max=epochs)` at the end of every epoch from epoch 10 on. constant_epochs
    ≥ total epochs gives a constant rate.
    """

    def __init__(self, base_lr: float, steps_per_epoch: int, constant_epochs: int = 10,
                 cosine_epochs: int = 200):
        if base_lr <= 0:
            raise ValueError(f"the learning rate must be positive, got {base_lr}")
        if steps_per_epoch < 1 or cosine_epochs < 1 or constant_epochs < 0:
            raise ValueError("steps_per_epoch and cosine_epochs must be >= 1, "
                             "constant_epochs >= 0")
        self.base_lr = float(base_lr)
        self.steps_per_epoch = int(steps_per_epoch)
        self.constant_epochs = int(constant_epochs)
        self.cosine_epochs = int(cosine_epochs)

    def __call__(self, step):
        epoch = ops.floor_divide(ops.cast(step, "int32"), self.steps_per_epoch)
        first_cosine_epoch = max(self.constant_epochs, 1)
        progress = ops.maximum(ops.cast(epoch + 1 - first_cosine_epoch, "float32"), 0.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress / self.cosine_epochs))
        return self.base_lr * cosine

    def get_config(self):
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "constant_epochs": self.constant_epochs, "cosine_epochs": self.cosine_epochs}


@keras.saving.register_keras_serializable("mixem_tf")
class WarmupThenStep(keras.optimizers.schedules.LearningRateSchedule):
    """MiCE's schedule (docs/METHODS.md §2.3; its `util.adjust_learning_rate`), set per epoch.

    For the 0-based epoch e = step // steps_per_epoch: lr = base · e / warmup_epochs while
    e < warmup_epochs (epoch 0 at rate 0), base at e = warmup_epochs, and after it
    base · decay^(number of milestones m with e > m). As in the official loop, milestones are
    not applied during the warm-up; warmup_epochs = 0 starts at the base rate.
    """

    def __init__(self, base_lr: float, steps_per_epoch: int, warmup_epochs: int = 10,
                 milestones=(480, 640, 800), decay: float = 0.1):
        if base_lr <= 0 or decay <= 0:
            raise ValueError(f"the learning rate and decay must be positive, got {base_lr} "
                             f"and {decay}")
        if steps_per_epoch < 1 or warmup_epochs < 0:
            raise ValueError("steps_per_epoch must be >= 1 and warmup_epochs >= 0")
        self.base_lr, self.decay = float(base_lr), float(decay)
        self.steps_per_epoch, self.warmup_epochs = int(steps_per_epoch), int(warmup_epochs)
        self.milestones = [int(m) for m in milestones]

    def __call__(self, step):
        epoch = ops.cast(ops.floor_divide(ops.cast(step, "int32"), self.steps_per_epoch),
                         "float32")
        drops = sum((ops.cast(epoch > m, "float32") for m in self.milestones), 0.0)
        stepped = ops.power(self.decay, drops)
        if self.warmup_epochs:
            ramp = ops.minimum(epoch / self.warmup_epochs, 1.0)
            stepped = ops.where(epoch <= self.warmup_epochs, ramp, stepped)
        return self.base_lr * stepped

    def get_config(self):
        return {"base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "warmup_epochs": self.warmup_epochs, "milestones": self.milestones,
                "decay": self.decay}
