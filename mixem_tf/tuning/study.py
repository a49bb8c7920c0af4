"""A keras-tuner study over a method's search space, each trial an ordinary run directory.

    OUT/study.json          the study's settings (a rerun must match them, or --overwrite)
    OUT/tuner/              keras-tuner's own state (oracle, trial records)
    OUT/trials/NNN/         a run directory made by `train_run` (config, checkpoints,
                            metrics.json, ...) plus objective.json (every objective's value, or
                            the failure's reason) and clusters.npy (for the consensus)
    OUT/trials.csv          the table of trials; OUT/best_config.json: the chosen trial's
                            settings, as `trainers.fit --config` reads them
    OUT/logs/NNN/           TensorBoard HParams of each trial (TensorFlow backend only)

Method-blind: the space comes from the method's `search_space`, the read-out from the run's
default row. A rerun continues the study: keras-tuner reloads its finished trials (never run
again) and re-runs the one it was running (its run directory resumes from its last
checkpoint). A trial that fails (NaN loss, a collapsed clustering, a setting the method
refuses) is recorded as failed with its reason, and the study goes on.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from mixem_tf import criteria
from mixem_tf.interrupts import StopSignals, TrainingStopped
from mixem_tf.run_failures import RunWriteError
from mixem_tf.runlock import LOCK_FILE, run_lock
from mixem_tf.tuning import objectives as objectives_module
from mixem_tf.tuning.space import apply_values

__all__ = ["TUNERS", "Study"]

TUNERS = ("random", "bayesian", "hyperband")
STUDY_FILE = "study.json"
OBJECTIVE_FILE = "objective.json"
CLUSTERS_FILE = "clusters.npy"


def _midpoint(spec: dict):
    """The middle of a range: geometric for a log range (the official value, for ranges
    declared a decade either side of it), arithmetic otherwise; an int range's is rounded."""
    low, high = spec["min"], spec["max"]
    middle = (low * high) ** 0.5 if spec["sampling"] == "log" else (low + high) / 2
    return round(middle) if isinstance(low, int) and isinstance(high, int) else middle


def _hyperparameters(space: dict, defaults: dict):
    """keras-tuner's HyperParameters for `space`. A setting's default (the first trial's
    value) is the recipe's when it lies in the range, else the range's midpoint (a choice's
    first value)."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, spec in space.items():
        default = defaults.get(name)
        if "values" in spec:
            hp.Choice(name, spec["values"],
                      default=default if default in spec["values"] else None)
            continue
        if default is None or not spec["min"] <= default <= spec["max"]:
            default = _midpoint(spec)
        if isinstance(spec["min"], int) and isinstance(spec["max"], int):
            hp.Int(name, spec["min"], spec["max"], sampling=spec["sampling"],
                   default=int(default))
        else:
            hp.Float(name, spec["min"], spec["max"], sampling=spec["sampling"],
                     default=float(default))
    return hp


def recipe_values(config, space: dict) -> dict:
    """What the resolved recipe sets each setting of `space` to (None: not set, e.g. a dict
    option's entry the method fills from its own table)."""
    resolved = config.resolved().to_dict()
    values = {}
    for name in space:
        option, _, key = name.partition(".")
        if name in resolved:
            values[name] = resolved[name]
        elif key:
            values[name] = (resolved["options"].get(option) or {}).get(key)
        else:
            values[name] = resolved["options"].get(name)
    return values


class Study:
    """One study: settings, space, objective, folders; `run()` drives keras-tuner.

    Args:
        config: the `TrainConfig` every trial starts from (the user's settings).
        space: the checked search space (`search_space`).
        out_dir: the study folder.
        objective: a name of `objectives.OBJECTIVES`; None: the method's `tuning_objective`.
        tuner: "random", "bayesian" or "hyperband".
        max_trials: trials in all (RandomSearch, BayesianOptimization); Hyperband runs its
            brackets up to `config.epochs`.
        seed: the tuner's seed.
        max_consecutive_failures: keras-tuner stops the study after this many failures in a row.
    """

    def __init__(self, config, space: dict, out_dir, *,
                 objective: str | None = None,
                 tuner: str = "random", max_trials: int = 10, seed: int = 0,
                 max_consecutive_failures: int = 3, verbose: bool = True):
        if objective is None:
            from mixem_tf.methods import method_declaration

            objective = method_declaration(config.method).tuning_objective
        if objective not in objectives_module.OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose from "
                             f"{', '.join(objectives_module.OBJECTIVES)}")
        if tuner not in TUNERS:
            raise ValueError(f"unknown tuner {tuner!r}; choose from {', '.join(TUNERS)}")
        for name, value in (("max_trials", max_trials),
                            ("max_consecutive_failures", max_consecutive_failures)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a positive integer, "
                                 f"got {value}")
        self.config, self.space, self.out_dir = config, space, Path(out_dir)
        self.objective, self.tuner_name, self.max_trials = objective, tuner, max_trials
        self.seed, self.verbose = seed, verbose
        self.max_consecutive_failures = max_consecutive_failures
        self.base_settings = {k: v for k, v in config.to_dict().items() if v is not None}
        self.trials_dir = self.out_dir / "trials"

    # -- the study's identity ---------------------------------------------------------------
    def description(self) -> dict:
        """What makes two commands the same study (saved in study.json); --max-trials is not
        part of it, so a larger one extends a finished study."""
        return {"settings": self.base_settings, "space": self.space,
                "objective": self.objective, "tuner": self.tuner_name, "seed": self.seed}

    def prepare(self, overwrite: bool) -> bool:
        """Creates or checks the study folder; True when an earlier study is continued."""
        path = self.out_dir / STUDY_FILE
        if overwrite:
            for name in ("tuner", "trials", "logs", STUDY_FILE, "trials.csv",
                         "best_config.json"):
                target = self.out_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        elif path.is_file():
            saved = json.loads(path.read_text())
            if saved != json.loads(json.dumps(self.description())):
                changed = sorted(k for k in saved if saved[k] != self.description().get(k))
                raise ValueError(f"--out {self.out_dir} holds a study with other settings "
                                 f"({', '.join(changed)}); rerun it with the same command "
                                 "or pass --overwrite to restart it")
            return True
        elif self.out_dir.exists() and any(p.name != LOCK_FILE for p in self.out_dir.iterdir()):
            raise ValueError(f"--out {self.out_dir} already exists and holds no study; pass "
                             "--overwrite or choose another folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.description(), indent=2))
        return False

    # -- keras-tuner --------------------------------------------------------------------------
    def _tuner(self, overwrite: bool):
        import keras_tuner as kt

        study = self
        defaults = recipe_values(self.config, self.space)
        hp = _hyperparameters(self.space, defaults)
        common = dict(objective=kt.Objective(self.objective, "max"), hyperparameters=hp,
                      seed=self.seed + 1, allow_new_entries=False, tune_new_entries=True,
                      max_consecutive_failed_trials=self.max_consecutive_failures)
        if self.tuner_name == "hyperband":
            oracle = kt.oracles.HyperbandOracle(max_epochs=self.config.epochs, **common)
        else:
            oracle_class = (kt.oracles.RandomSearchOracle if self.tuner_name == "random"
                            else kt.oracles.BayesianOptimizationOracle)
            oracle = _defaults_first(oracle_class)(max_trials=self.max_trials, **common)

        class ClusteringTuner(kt.engine.base_tuner.BaseTuner):
            def run_trial(self, trial, **search_kwargs):  # search's verbose, unused
                return study.run_trial(trial)

        return ClusteringTuner(oracle, directory=str(self.out_dir), project_name="tuner",
                               overwrite=overwrite)

    def run(self, overwrite: bool = False) -> dict:
        """Runs (or continues) the study; returns `summary()`. A study that keras-tuner stops
        for too many failures in a row still writes its table, then raises ValueError.

        The study folder is locked meanwhile (each trial's run folder too, by `train_run`);
        a stop signal or a full disk says to rerun the same command, which continues it.
        """
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ValueError(f"--out {self.out_dir} exists and is not a folder")
        again = "the same python -m trainers.tune command"
        # a signal stops a trial at a step, the scoring between trials at once
        with run_lock(self.out_dir, flag="--out"), StopSignals():
            try:
                return self._run(overwrite)
            except TrainingStopped as stop:
                raise TrainingStopped(stop.signum, f"stopped by {stop.signal_name} during a "
                                      "trial (finished trials and the trial's last checkpoint "
                                      f"are kept); continue the study with {again}") from None
            except Exception as error:  # keras-tuner's FatalError from a full disk
                if isinstance(error.__cause__, RunWriteError):
                    raise error.__cause__.resumed_by(again) from None
                raise

    def _run(self, overwrite: bool) -> dict:
        continued = self.prepare(overwrite)
        tuner = self._tuner(overwrite)
        self.started, self.done_before = time.time(), len(self.records())
        if continued and self.verbose:
            print(f"continuing the study in {self.out_dir}: {self.done_before} trial(s) "
                  "already finished", file=sys.stderr)
        stopped = None
        try:
            tuner.search(verbose=0)
        except RuntimeError as error:
            if "consecutive failures" not in str(error):
                raise
            stopped = (f"the study stopped after {self.max_consecutive_failures} failed "
                       "trials in a row")
        summary = self.summary()
        if stopped:
            raise ValueError(f"{stopped}; the last: {summary['trials'][-1]['reason']}")
        return summary

    # -- one trial ------------------------------------------------------------------------------
    def trial_dir(self, trial_id) -> Path:
        return self.trials_dir / f"{int(trial_id):03d}"

    def run_trial(self, trial) -> dict:
        """Trains one trial's run directory, scores it, writes objective.json; keras-tuner
        gets {objective: value}. A failure becomes `FailedTrialError(reason)` (no retry)."""
        import keras
        import keras_tuner as kt

        from mixem_tf.callbacks import NonFiniteLossError
        from mixem_tf.settings import TrainConfig
        from mixem_tf.training import train_run

        values = {k: v for k, v in trial.hyperparameters.values.items()
                  if not k.startswith("tuner/")}
        out = self.trial_dir(trial.trial_id)
        number = int(trial.trial_id) + 1
        started = time.time()
        if self.verbose:
            shown = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
            print(f"trial {number}/{self._planned()}: {shown}", file=sys.stderr)
        keras.backend.clear_session()
        record = {"trial": int(trial.trial_id), "values": values, "status": "failed"}
        try:
            result = self._train(trial, values, out, train_run, TrainConfig)
            row = result.default_readout
            record.update({k: row.row[k] for k in ("acc", "nmi", "ari") if k in row.row})
            record.update(self._score(result.model, result.config, row, out, trial.trial_id))
            record["status"] = "completed"
        except RunWriteError as error:  # the next trial would fail the same way: stop
            raise kt.errors.FatalError(str(error)) from error
        except (NonFiniteLossError, ValueError, FloatingPointError) as error:
            record["reason"] = str(error).split("\n")[0]
        except Exception as error:  # anything else (out of memory, ...) is named by its type
            record["reason"] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
        record["seconds"] = round(time.time() - started, 1)
        out.mkdir(parents=True, exist_ok=True)  # also for a trial refused before training
        (out / OBJECTIVE_FILE).write_text(json.dumps(record, indent=2))
        self._report(number, record)
        self._write_hparams(trial, record)
        if record["status"] == "failed":
            raise kt.errors.FailedTrialError(record["reason"])
        return {self.objective: record["objectives"][self.objective]}

    def _train(self, trial, values, out, train_run, TrainConfig):
        """The trial's run: fresh, resumed after a stop, or (Hyperband) continued from the
        trial it was promoted from."""
        from mixem_tf import checkpoints

        hp_values = trial.hyperparameters.values
        epochs = hp_values.get("tuner/epochs")
        parent = hp_values.get("tuner/trial_id")
        if parent is not None and not out.exists():
            shutil.copytree(self.trial_dir(parent), out)
            (out / OBJECTIVE_FILE).unlink(missing_ok=True)
        if checkpoints.latest_checkpoint(out / "checkpoints") is not None:
            return train_run(None, out, resume=True, epochs=epochs, verbose=0)
        settings = apply_values(self.base_settings, values)
        if epochs is not None:
            settings["epochs"] = epochs
        return train_run(TrainConfig.from_dict(settings), out, overwrite=True, verbose=0)

    def _score(self, model, config, row, out, trial_id) -> dict:
        """Every objective's value of a trained trial (labels are never passed in)."""
        from mixem_tf.runs import load_evaluation

        images = objectives_module.objective_images(load_evaluation(config).images, self.seed)
        evidence = objectives_module.trial_evidence(model, images, row, seed=self.seed)
        objectives_module.check_not_collapsed(evidence.clusters)
        np.save(out / CLUSTERS_FILE, evidence.clusters)
        others = [clusters for trial, clusters in self.clusterings().items()
                  if trial != int(trial_id)]
        return {"objectives": {
            "stability": objectives_module.stability(evidence),
            "consensus": objectives_module.consensus(evidence, others, self.seed),
            "silhouette": objectives_module.silhouette(evidence, self.seed)}}

    def _write_hparams(self, trial, record) -> None:
        """TensorBoard's HParams view (OUT/logs/NNN): the trial's values, every objective and
        ACC/NMI, as keras-tuner's own `Tuner` writes them: under the TensorFlow backend only
        (TensorBoard's writer needs TensorFlow)."""
        import keras

        if keras.backend.backend() != "tensorflow" or record["status"] != "completed":
            return
        import tensorflow as tf
        from keras_tuner.src.engine.tuner_utils import convert_hyperparams_to_hparams
        from tensorboard.plugins.hparams import api as hparams_api

        hparams = convert_hyperparams_to_hparams(trial.hyperparameters, hparams_api)
        scores = {**record["objectives"], **{k: record[k] for k in ("acc", "nmi") if k in record}}
        logdir = self.out_dir / "logs" / self.trial_dir(trial.trial_id).name
        with tf.summary.create_file_writer(str(logdir)).as_default():
            hparams_api.hparams(hparams, trial_id=trial.trial_id)
            for name, value in scores.items():
                tf.summary.scalar(name, value, step=0)

    # -- progress and results -------------------------------------------------------------------
    def _planned(self) -> str:
        return "?" if self.tuner_name == "hyperband" else str(self.max_trials)

    def _report(self, number: int, record: dict) -> None:
        if not self.verbose:
            return
        labels = "".join(f"  {k.upper()} {record[k]:.3f}" for k in ("acc", "nmi") if k in record)
        outcome = (f"{self.objective} {record['objectives'][self.objective]:.4f}{labels}"
                   if record["status"] == "completed" else f"failed: {record['reason']}")
        finished = len(self.records()) - self.done_before
        elapsed = time.time() - self.started
        left = ""
        if self.tuner_name != "hyperband" and finished:
            remaining = max(self.max_trials - len(self.records()), 0)
            left = f", about {elapsed / finished * remaining / 60:.0f} min left"
        print(f"trial {number}: {outcome} ({record['seconds']:.0f} s; {len(self.records())} "
              f"done in all, {elapsed / 60:.1f} min this session{left})", file=sys.stderr)

    def records(self) -> list:
        """objective.json of every trial that has one, in trial order."""
        return [json.loads(path.read_text())
                for path in sorted(self.trials_dir.glob(f"*/{OBJECTIVE_FILE}"))]

    def clusterings(self) -> dict:
        """{trial: clean cluster ids} of every completed trial."""
        return {record["trial"]: np.load(self.trial_dir(record["trial"]) / CLUSTERS_FILE)
                for record in self.records() if record["status"] == "completed"}

    def summary(self) -> dict:
        """Final objectives of every trial (the consensus re-scored against all the other
        finished trials), the chosen trial, trials.csv and best_config.json."""
        records = self.records()
        completed = [r for r in records if r["status"] == "completed"]
        if completed:
            final = criteria.final_consensus(
                self.clusterings(), self._num_clusters(completed[0]), self.seed)
            for record in completed:
                record["objectives"]["consensus"] = final[record["trial"]]
        for record in records:
            record["objective"] = (record["objectives"][self.objective]
                                   if record["status"] == "completed" else None)
        chosen = max(completed, key=lambda r: r["objective"], default=None)
        self._write_table(records)
        if chosen is not None:
            saved = json.loads((self.trial_dir(chosen["trial"]) / "config.json").read_text())
            (self.out_dir / "best_config.json").write_text(
                json.dumps(saved["settings"], indent=2))
        return {"trials": records, "chosen": chosen, "objective": self.objective}

    def _num_clusters(self, record) -> int:
        return json.loads((self.trial_dir(record["trial"]) / "config.json").read_text())[
            "num_clusters"]

    def _write_table(self, records) -> None:
        names = list(self.space)
        columns = ["trial", "status", *names, "objective", *objectives_module.OBJECTIVES,
                   "acc", "nmi", "seconds", "reason"]
        with open(self.out_dir / "trials.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            for record in records:
                writer.writerow({**{k: record.get(k) for k in columns},
                                 **record["values"], **record.get("objectives", {})})


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _defaults_first(oracle_class):
    """`oracle_class` whose first trial runs at the hyperparameters' defaults (the recipe's
    values), so the study can always choose the recipe itself."""

    class DefaultsFirst(oracle_class):
        def populate_space(self, trial_id):
            if not self.trials:
                return {"status": "RUNNING", "values": self.hyperparameters.values}
            return super().populate_space(trial_id)

    DefaultsFirst.__name__ = f"DefaultsFirst{oracle_class.__name__}"
    return DefaultsFirst
