"""The one training loop every method uses: data → model → fit → checkpoints → read-outs.

`train_run` validates everything it can before it touches the disk (settings, dataset, K, batch
size, the output folder, and the model itself, built before anything is written), then writes
the run directory:

    runs/NAME/config.json      every setting, library versions, backend
    runs/NAME/checkpoints/     model + optimiser after every epoch (atomic), checkpoint.json
    runs/NAME/history.csv      per-epoch logs (every loss term, throughput)
    runs/NAME/logs/            TensorBoard logs (when TensorFlow is installed); logs/projector:
                               the default read-out's embeddings for its projector
    runs/NAME/features/        evaluation features of the latest checkpoint (mixem_tf.features)
    runs/NAME/metrics.json     the read-out table with cluster-size histograms (mixem_tf.readouts)
    runs/NAME/readout.npz      every read-out's fitted parameters (for export)
    runs/NAME/skipped_files.csv  `folder:` data: every file not used, with the reason
    runs/NAME/.lock            while a command writes the run (mixem_tf/runlock.py)
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import keras

from mixem_tf import checkpoints
from mixem_tf.callbacks import (EpochCheckpoint, EpochLines, EpochTimeEstimate, HistoryCSV,
                                MethodHooks, NonFiniteLossError, StopOnNonFiniteLoss,
                                StopOnSignal, Throughput, gpu_visible)
from mixem_tf.cluster import SETTINGS_BY_NAME
from mixem_tf.feeding import EpochBatches
from mixem_tf.interrupts import StopSignals, TrainingStopped
from mixem_tf.methods import build_method, method_class
from mixem_tf.recipes import describe_cpu_recipe, uses_cpu_recipe
from mixem_tf.settings import TrainConfig
from mixem_tf.readouts import Readout, fit_readout, quick_budget, save_readouts
from mixem_tf.runs import CONFIG_FILE, load_run, load_run_config
from mixem_tf.report import readout_report, scores_text
from mixem_tf.run_failures import check_writable, is_write_failure, stopped, write_failure
from mixem_tf.runlock import LOCK_FILE, run_lock
from mixem_tf.versions import library_versions

SKIPPED_FILE = "skipped_files.csv"
LOG_DIR = "logs"
#: metrics.json's entry for the pixel baseline's label-free scores (`assessment.assess_pixels`).
PIXELS_ENTRY = "pixels"

__all__ = ["READOUT_MODES", "RunResult", "evaluate_run", "make_optimizer", "train_run"]

#: What a run's evaluation fits: the default read-out only; every read-out, the non-default
#: K-means rows at a smaller budget (`readouts.quick_budget`); every read-out at the run's.
READOUT_MODES = ("default", "all", "paper")


@dataclass
class RunResult:
    """What a finished run produced."""

    out_dir: Path
    config: TrainConfig
    history: dict = field(default_factory=dict)
    readouts: list[Readout] = field(default_factory=list)
    pixels: dict = field(default_factory=dict)  # the pixel baseline's label-free scores
    images_per_s: list = field(default_factory=list)
    model: keras.Model | None = None
    k_choice: object = None  # choosing_k.KChoice of a run with --clusters auto

    @property
    def default_readout(self) -> Readout:
        return next(r for r in self.readouts if r.row["default"])


def _check_writable(out_dir: Path) -> None:
    ancestor = out_dir
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {out_dir}: cannot create it ({ancestor} is not a "
                              "writable folder)")


def _is_unstarted_run(out_dir: Path) -> bool:
    """A run folder whose start was refused or killed before its first checkpoint."""
    return ((out_dir / CONFIG_FILE).is_file()
            and checkpoints.latest_checkpoint(out_dir / "checkpoints") is None)


def _check_out_path(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a folder")
    _check_writable(out_dir)


def _check_new_run_dir(out_dir: Path, overwrite: bool) -> None:
    _check_out_path(out_dir)
    if (out_dir.exists() and any(p.name != LOCK_FILE for p in out_dir.iterdir())
            and not overwrite and not _is_unstarted_run(out_dir)):
        raise ValueError(f"--out {out_dir} already exists; pass --overwrite to replace it "
                         "or --resume to continue it")


def prepare_run_dir(out_dir: Path, overwrite: bool) -> None:
    """Creates `out_dir`, or with `overwrite` empties it. A link to a folder elsewhere (a run
    kept on another disk) stays a link: its target is emptied or created, never the link
    removed."""
    target = out_dir.resolve()
    try:
        if (overwrite or _is_unstarted_run(target)) and target.is_dir():
            for entry in target.iterdir():
                if entry.name == LOCK_FILE:  # held by this process
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(f"--out {out_dir}: cannot create it ({error.strerror})") from None


def load_backbone(model, run_dir) -> None:
    """Starts `model`'s backbone from the latest checkpoint of another run (`--init-from`).

    Raises:
        ValueError: the folder holds no run or no checkpoint.
        CheckpointMismatchError: the run's backbone has another architecture.
    """
    run_dir = Path(run_dir)
    source, source_config, _ = load_run(run_dir, flag="--init-from")
    try:
        checkpoints.copy_variables(source.backbone.variables, model.backbone.variables,
                                   "backbone")
    except checkpoints.CheckpointMismatchError as error:
        raise checkpoints.CheckpointMismatchError(
            f"--init-from: the backbone of {run_dir} ({source_config.backbone}) does not fit "
            f"this model's ({model.backbone.name}): {error}") from None


def make_optimizer(config: TrainConfig, steps_per_epoch: int):
    """The run's optimiser with its method's learning-rate schedule and the weight-decay mode
    (§5.3)."""
    schedule = method_class(config.method).learning_rate(config, steps_per_epoch)
    decoupled = config.weight_decay if config.weight_decay_mode == "decoupled" else None
    if config.optimizer == "adam":
        return keras.optimizers.Adam(schedule, weight_decay=decoupled)
    return keras.optimizers.SGD(schedule, momentum=config.momentum, weight_decay=decoupled)


class _Strategy:
    """The distribution setting: a scope to build in, worker index/count, chief or not."""

    def __init__(self, name: str):
        self.name, self.worker, self.workers = name, 0, 1
        self.tf_strategy = None
        if name == "default":
            return
        if keras.backend.backend() == "jax":
            if name == "multiworker":
                raise ValueError("--strategy multiworker needs KERAS_BACKEND=tensorflow")
            keras.distribution.set_distribution(keras.distribution.DataParallel())
            return
        if keras.backend.backend() != "tensorflow":
            raise ValueError(f"--strategy {name} needs KERAS_BACKEND=tensorflow or jax")
        import tensorflow as tf

        if name == "mirrored":
            self.tf_strategy = tf.distribute.MirroredStrategy()
        else:
            tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
            if not tf_config.get("cluster"):
                raise ValueError("--strategy multiworker needs TF_CONFIG describing the cluster")
            self.tf_strategy = tf.distribute.MultiWorkerMirroredStrategy()
            task = tf_config.get("task", {})
            self.workers = len(tf_config["cluster"].get("worker", [])) or 1
            self.worker = int(task.get("index", 0)) if task.get("type") == "worker" else 0

    @property
    def is_chief(self) -> bool:
        return self.worker == 0

    def scope(self):
        import contextlib

        return self.tf_strategy.scope() if self.tf_strategy else contextlib.nullcontext()


def _check_batch_split(config, strategy: _Strategy) -> None:
    """The global batch must split evenly over the workers and over every replica."""
    replicas = strategy.tf_strategy.num_replicas_in_sync if strategy.tf_strategy else 1
    for count, what in ((strategy.workers, "workers"), (replicas, "replicas")):
        if config.batch_size % count:
            raise ValueError(f"batch size {config.batch_size} must divide by the {count} {what}")


def _method_batches(model, images):
    """The feeder's `make_batch` for a method that builds its own batches (SCAN's pairs of
    neighbours), or None: plain rows of `images`."""
    from mixem_tf.methods.base import ClusteringMethod

    if type(model).training_batch is ClusteringMethod.training_batch:
        return None
    return lambda indices, rng: model.training_batch(images, indices, rng)


def _training_data(images, config, strategy: _Strategy, start_epoch: int, model):
    """(batches, steps per epoch) for `fit`.

    Under TensorFlow, the feeder's `tf.data` stream (batches gathered by a parallel map);
    under another backend, its iterator (gathered by threads). With a tf.distribute strategy:
    a distributed dataset (`distribute_datasets_from_function`) in which each worker feeds its
    own share of every global batch (shard (worker, workers) of the same epoch order), split
    among its local replicas, so that one step consumes `batch_size` images in all, as on one
    device. (Handing Keras a per-worker dataset instead lets `experimental_distribute_dataset`
    take each worker's share for the global batch and split it again over every replica: half
    the batch per step on two workers.) The batch must already have passed
    `_check_batch_split` (train_run checks it before writing anything).
    """
    feeder = EpochBatches(images, config.batch_size // strategy.workers, seed=config.seed,
                          start_epoch=start_epoch, end_epoch=config.epochs,
                          shard=(strategy.worker, strategy.workers),
                          make_batch=_method_batches(model, images))
    if keras.backend.backend() != "tensorflow":
        return ((batch,) for batch in feeder), feeder.steps_per_epoch
    if strategy.tf_strategy is None:
        return feeder.tf_dataset(), feeder.steps_per_epoch
    per_replica = config.batch_size // strategy.tf_strategy.num_replicas_in_sync

    def worker_dataset(context):
        dataset = feeder.tf_dataset()
        return dataset if per_replica == feeder.batch_size else dataset.rebatch(per_replica)

    return (strategy.tf_strategy.distribute_datasets_from_function(worker_dataset),
            feeder.steps_per_epoch)


def _callbacks(out_dir: Path, config, strategy: _Strategy, verbose: int, model, images,
               signals: StopSignals | None = None):
    guard = StopOnNonFiniteLoss()
    throughput = Throughput(config.batch_size)
    callbacks = [MethodHooks(), guard, throughput,
                 *model.monitors(images, out_dir if strategy.is_chief else None),
                 EpochCheckpoint(out_dir / "checkpoints", guard), EpochTimeEstimate()]
    if strategy.is_chief:
        callbacks.append(HistoryCSV(out_dir / "history.csv"))
        try:
            import tensorflow  # noqa: F401  (TensorBoard's writer needs it)

            callbacks.append(keras.callbacks.TensorBoard(str(out_dir / LOG_DIR)))
        except ImportError:
            if verbose:
                print("note: TensorFlow is not installed, so no TensorBoard logs are written "
                      "(history.csv has every epoch)", file=sys.stderr)
    if verbose and not progress_bars():
        callbacks.append(EpochLines())  # it prints the logs the others added
    if signals is not None:
        callbacks.append(StopOnSignal(signals))  # last: after the epoch's files are written
    return callbacks, guard, throughput


def progress_bars() -> bool:
    """Keras' per-step progress bars only on a terminal; a log file gets `EpochLines`."""
    return sys.stdout.isatty()


def _small_data_batch_size(images: int) -> int:
    """The largest power of two that fits `images` (at least 2): the batch of a folder smaller
    than its recipe's batch."""
    return max(2, 2 ** (max(images, 2).bit_length() - 1))


def check_init_from(run_dir) -> None:
    """Raise ValueError unless `run_dir` is a run with a checkpoint to start a backbone from."""
    load_run_config(Path(run_dir), flag="--init-from")
    if checkpoints.latest_checkpoint(Path(run_dir) / "checkpoints") is None:
        raise ValueError(f"--init-from: {run_dir} has no checkpoint to start from")


def source_record(run_dir) -> dict:
    """What config.json records of the `--init-from` run: its absolute path, and the epoch,
    file and SHA-256 of the checkpoint the run started from."""
    path, record = checkpoints.latest_checkpoint(Path(run_dir) / "checkpoints")
    return {"path": str(Path(run_dir).resolve()), "epoch": int(record["epoch"]),
            "checkpoint": path.name, "sha256": record.get("sha256")}


def train_run(config: TrainConfig, out_dir, *, resume: bool = False, overwrite: bool = False,
              epochs: int | None = None, verbose: int = 1, deterministic: bool = False,
              readouts: str = "all") -> RunResult:
    """Trains (or resumes) one run and evaluates its read-outs; see the module docstring.

    The run folder is locked for the whole run (`mixem_tf.runlock`); SIGTERM and SIGINT stop
    training at a step boundary (`mixem_tf.interrupts`).

    Args:
        readouts: which read-outs the evaluation fits (`READOUT_MODES`).

    Raises:
        ValueError / PermissionError / DatasetUnavailableError: bad settings, found before
            anything is written; RunLockedError (a ValueError): another process uses the run.
        NonFiniteLossError: the loss became NaN or infinite (the last good checkpoint stays).
        RunWriteError: the disk filled up or turned read-only (the checkpoints saved stay).
        TrainingStopped: a stop signal (the last checkpoint stays).
    """
    out_dir = Path(out_dir)
    if readouts not in READOUT_MODES:
        raise ValueError(f"--readouts must be one of {', '.join(READOUT_MODES)}, got "
                         f"{readouts!r}")
    if resume:
        load_run_config(out_dir, flag="--resume")  # no run there: its own error, nothing made
        check_writable([out_dir, out_dir / "checkpoints"], "--resume")
    else:
        _check_out_path(out_dir)  # before the lock creates the folder
    resume_command = f"python -m trainers.fit --resume --out {out_dir}"
    with run_lock(out_dir, flag="--resume" if resume else "--out"), StopSignals() as signals:
        try:
            return _train_run(config, out_dir, signals, resume=resume, overwrite=overwrite,
                              epochs=epochs, verbose=verbose, deterministic=deterministic,
                              readouts=readouts)
        except TrainingStopped as stop:
            raise stopped(stop, out_dir, resume_command) from None
        except OSError as error:
            if not is_write_failure(error, out_dir):
                raise
            raise write_failure(error, out_dir, resume_command) from None


def _train_run(config, out_dir: Path, signals: StopSignals, *, resume, overwrite, epochs,
               verbose, deterministic, readouts) -> RunResult:
    from mixem_tf.data.folder import SkippedFilesWarning
    from mixem_tf.runs import load_run_data

    if resume:
        saved = load_run_config(out_dir, flag="--resume")
        config = TrainConfig.from_saved(saved["settings"])
        latest = checkpoints.latest_checkpoint(out_dir / "checkpoints")  # warns once
        if latest is None:
            raise ValueError(f"--resume: {out_dir} has no checkpoint yet; start it again "
                             "(without --resume)")
        done = int(latest[1]["epoch"])
        if epochs is not None:
            if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
                raise ValueError(f"--epochs must be a positive integer, got {epochs}")
            if epochs > done:  # a new target; one at or below `done` leaves nothing to train
                config.epochs = epochs
    else:
        gpu = gpu_visible()
        asked, config = config, config.resolved(gpu=gpu)
        _check_new_run_dir(out_dir, overwrite)
        if uses_cpu_recipe(asked.dataset, asked.backbone, gpu):
            print(f"{'the ConvNet' if asked.backbone else 'no GPU found'}: training with the "
                  f"CPU recipe for folders ({describe_cpu_recipe()})", file=sys.stderr)
        if config.init_from:
            check_init_from(config.init_from)
        method_class(config.method).check_source(config)

    strategy = _Strategy(config.strategy)
    with warnings.catch_warnings():  # the run prints its own summary of skipped files
        warnings.simplefilter("ignore", SkippedFilesWarning)
        train, evaluation = load_run_data(config)
    scan = getattr(train, "scan", None)
    num_clusters = _number_of_clusters(config, train, evaluation, verbose)
    if config.batch_size > len(train) and not resume and asked.batch_size is None:
        config.batch_size = _small_data_batch_size(len(train))
        print(f"{len(train)} training images: batch size {config.batch_size} (the recipe's is "
              "larger)", file=sys.stderr)
    if config.batch_size > len(train):
        raise ValueError(f"batch size {config.batch_size} is larger than the training data "
                         f"({len(train)} images)")
    _check_batch_split(config, strategy)

    keras.utils.set_random_seed(config.seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    if config.precision != "float32":
        keras.mixed_precision.set_dtype_policy(config.precision)

    steps_per_epoch = len(train) // config.batch_size
    with strategy.scope():  # built before anything is written: it checks the architecture
        model = build_method(config, train.image_shape, num_clusters)
        model.compile(optimizer=make_optimizer(config, steps_per_epoch))
        model(train.images[:2])  # builds every layer
        model.optimizer.build(model.trainable_variables)

    if resume:
        _save_epoch_target(out_dir, saved, config.epochs)
    else:
        prepare_run_dir(out_dir, overwrite)
        checkpoints.write_json_atomic(out_dir / CONFIG_FILE, {
            "settings": config.to_dict(), "num_clusters": num_clusters,
            "input_shape": list(train.image_shape), "backend": keras.backend.backend(),
            "versions": library_versions(),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "train_images": len(train), "evaluation_images": len(evaluation),
            **({"init_from": source_record(config.init_from)} if config.init_from else {}),
        })
    if scan is not None:
        listed_in = out_dir / SKIPPED_FILE if scan.skipped else None
        if listed_in is not None:
            scan.write_skipped(listed_in)
        print(scan.summary(listed_in=listed_in), file=sys.stderr)

    initial_epoch = 0
    if resume:
        checkpoints.restore(latest[0], model, model.optimizer)
        initial_epoch = done
        if initial_epoch >= (epochs or config.epochs):
            print(f"{out_dir} has already trained {initial_epoch} epochs"
                  f"{f' (--epochs {epochs})' if epochs else ''}: nothing to train; "
                  "evaluating its read-outs again", file=sys.stderr)
        else:
            print(f"resuming {out_dir} after epoch {initial_epoch} of {config.epochs}",
                  file=sys.stderr)
    else:
        if config.init_from:
            load_backbone(model, config.init_from)
            print(f"backbone initialised from {config.init_from}", file=sys.stderr)
        model.initialize_state(train.images)
    model.prepare_training(train.images, out_dir if strategy.is_chief else None,
                           source=config.init_from, resume=resume)

    callbacks, guard, throughput = _callbacks(out_dir, config, strategy, verbose, model,
                                              train.images, signals)
    if resume:  # epochs after the restored checkpoint (a fallback past a corrupt one) go
        for callback in callbacks:
            if hasattr(callback, "forget_epochs_after"):
                callback.forget_epochs_after(initial_epoch)
    history = {}
    if initial_epoch < min(epochs or config.epochs, config.epochs):
        data, steps = _training_data(train.images, config, strategy, initial_epoch, model)
        with signals.at_step_boundaries():
            fitted = model.fit(data, epochs=config.epochs, initial_epoch=initial_epoch,
                               steps_per_epoch=steps, shuffle=False, callbacks=callbacks,
                               verbose=1 if verbose and progress_bars() else 0)
        history = fitted.history
    if guard.failure:
        latest = checkpoints.latest_checkpoint(out_dir / "checkpoints")
        kept = (f"the last good checkpoint (epoch {latest[1]['epoch']}) is kept in {latest[0]}"
                if latest else "no epoch finished, so there is no checkpoint")
        raise NonFiniteLossError(f"{guard.failure}; training stopped and {kept}. Lower the "
                                 "learning rate or check the data.")

    result = RunResult(out_dir, config, history, images_per_s=throughput.per_epoch, model=model)
    result.readouts = evaluate_run(model, evaluation, num_clusters, config,
                                   write_to=out_dir if strategy.is_chief else None,
                                   readouts=readouts, verbose=bool(verbose))
    if strategy.is_chief:
        from mixem_tf.readouts import load_metrics

        result.pixels = load_metrics(out_dir).get(PIXELS_ENTRY, {})
    if config.choose_clusters and strategy.is_chief:
        from mixem_tf.readouts import load_readouts
        from mixem_tf.reclustering import plan, recluster

        chosen = recluster(plan(out_dir, tuple(config.choose_clusters)), make_default=True,
                           model=model, evaluation=evaluation, verbose=bool(verbose))
        result.k_choice = chosen.choice
        result.readouts = load_readouts(out_dir)
    return result


def _number_of_clusters(config, train, evaluation, verbose) -> int:
    """K: `--clusters`, else the dataset's class count; checked against the data. Where K
    comes from a folder's sub-folders, or is chosen after training, the run says so."""
    labels_from_folders = (config.dataset.startswith("folder:")
                           and (train.num_classes or evaluation.num_classes))
    if labels_from_folders and verbose:
        names = train.class_names or evaluation.class_names or ()
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        print(f"labels: the {len(names)} sub-folders of {config.dataset[len('folder:'):]} "
              f"({shown}) are taken as classes: "
              + ("" if config.clusters else f"K = {len(names)} and ")
              + "ACC/NMI are scored against them; choose K with --clusters K or --clusters "
              "auto, or ignore the sub-folders with --folder-labels none", file=sys.stderr)
    if config.choose_clusters:
        num_clusters, source = config.clusters, "--clusters auto"
        if verbose:
            low, high = config.choose_clusters
            print(f"--clusters {low}..{high}: the method's heads are built for K = {high}, "
                  "and K is chosen without labels after training (trainers.recluster)",
                  file=sys.stderr)
    elif config.clusters:
        num_clusters, source = config.clusters, "--clusters"
    else:
        num_clusters = train.num_classes or evaluation.num_classes
        if num_clusters is None:
            raise ValueError(f"{config.dataset} has no labels to count classes: pass "
                             "--clusters K, or --clusters auto to choose K after training")
        source = (f"the {num_clusters} sub-folder(s) of {config.dataset[len('folder:'):]}"
                  if config.dataset.startswith("folder:")
                  else f"the {num_clusters} classes of {config.dataset}")
        if num_clusters < 2:
            raise ValueError(f"K = {num_clusters} comes from {source}: clustering needs at "
                             "least 2; pass --clusters K")
    smallest = min(len(train), len(evaluation))
    if num_clusters > smallest:
        raise ValueError(f"K = {num_clusters} (from {source}) is more clusters than images "
                         f"({smallest}); pass a smaller --clusters")
    return num_clusters


def _save_epoch_target(out_dir: Path, saved: dict, epochs: int) -> None:
    """A longer target given at --resume becomes the run's own (a later --resume keeps it)."""
    if epochs != saved["settings"].get("epochs"):
        saved = {**saved, "settings": {**saved["settings"], "epochs": epochs}}
        checkpoints.write_json_atomic(out_dir / CONFIG_FILE, saved)


def evaluate_run(model, evaluation, num_clusters, config, *, write_to=None,
                 readouts: str = "all", verbose: bool = False) -> list[Readout]:
    """Embeds the evaluation images, clean and one augmented view each (kept in the run's
    features/), fits the default read-out at the run's K-means budget (and says its scores at
    once with `verbose`), then the rest of the table as `readouts` says (`READOUT_MODES`);
    scores every read-out without labels beside K-means on pixels (`mixem_tf.assessment`: the
    rows' "label_free" and "cluster_scores", a label-free `temperature`); writes metrics.json
    (the pixel baseline under `PIXELS_ENTRY`), readout.npz and the projector's files anew.
    """
    from mixem_tf.assessment import assess_pixels, score_readouts
    from mixem_tf.checkpoints import CheckpointWarning
    from mixem_tf.features import embed, evaluation_features

    if write_to is not None:
        with warnings.catch_warnings():  # a checkpoint fallback was reported when restored
            warnings.simplefilter("ignore", CheckpointWarning)
            features, augmented = (
                evaluation_features(write_to, view, model=model, evaluation=evaluation,
                                    seed=config.seed, verbose=False)
                for view in ("clean", "augmented"))
    else:
        features = embed(model, evaluation.images)
        augmented = embed(model, evaluation.images, augment_seed=config.seed)
    settings = SETTINGS_BY_NAME[config.readout_settings]
    quick = settings if readouts == "paper" else quick_budget(settings)
    context = model.readout_context(features)

    def fit(spec, budget):
        return fit_readout(spec, features, num_clusters, run_clusters=num_clusters,
                           labels=evaluation.labels, settings=budget, seed=config.seed,
                           context=context)

    default_spec = model.default_spec()
    default = fit(default_spec, settings)
    default.row["default"] = True
    if verbose:
        print(f"default read-out {default.name}: {scores_text(default.row)}", file=sys.stderr)
    fitted = [default if spec == default_spec else fit(spec, quick)
              for spec in model.readout_specs() if readouts != "default" or spec == default_spec]
    if default not in fitted:
        fitted.insert(0, default)
    pixels = assess_pixels(evaluation.images, model.augment_config, num_clusters,
                           seed=config.seed)
    score_readouts(fitted, features, augmented, model.embedding_feature, pixels=pixels,
                   seed=config.seed)
    if write_to is not None:
        save_readouts(write_to, fitted, header={
            "dataset": config.dataset, "method": config.method,
            "evaluate_on": config.evaluate_on, "evaluation_images": len(evaluation),
            "num_clusters": num_clusters, "embedding_feature": model.embedding_feature,
            PIXELS_ENTRY: pixels})
        _write_projector(Path(write_to), default, features, augmented, model, evaluation,
                         config.seed)
    return fitted


def _write_projector(run_dir: Path, readout, clean, augmented, model, evaluation,
                     seed) -> None:
    """The default read-out's space of a seeded sample of evaluation images in TensorBoard's
    projector (RUN/logs/projector), with cluster, confidence and stability per image."""
    from mixem_tf.assessment import readout_evidence
    from mixem_tf.projector import write_projector
    from mixem_tf.quality import MAX_IMAGES, sample_indices

    index = sample_indices(len(evaluation.images), MAX_IMAGES, seed)
    evidence, _ = readout_evidence(readout, clean, augmented, model.embedding_feature)
    clusters = evidence.clusters[index]
    metadata = {"cluster": clusters.tolist(),
                "confidence": [f"{c:.3f}" for c in evidence.confidence[index]],
                "stays when augmented": (evidence.augmented[index] == clusters).tolist()}
    if evaluation.labels is not None:
        names = evaluation.class_names
        metadata["label"] = [names[y] if names else int(y) for y in evaluation.labels[index]]
    write_projector(run_dir / LOG_DIR / "projector", evidence.features[index],
                    evaluation.images[index], metadata, name=readout.name)
