"""Re-clustering a trained run: its read-outs refitted at another K, or K chosen without labels,
from the run's kept evaluation features; checkpoints are never touched.

Used by `python -m trainers.recluster` and by `trainers.fit --clusters auto`.

Everything that can be refused is refused before any work (`plan`): K beyond the evaluation
images, an unknown read-out or kind, a method's own (argmax) read-out, whose K the network
fixes. Then `recluster` fits and stores.

Example:
    >>> result = recluster("runs/x", clusters=(2, 20), make_default=True)
    >>> result.choice.k, result.readouts[0].name
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mixem_tf.choosing_k import DEFAULT_CRITERION, KChoice, choose_k
from mixem_tf.cluster import SETTINGS_BY_NAME
from mixem_tf.readouts import (READOUT_KINDS, Readout, ReadoutSpec, fit_readout, load_metrics,
                               load_readouts, parse_readout, quick_budget, save_readouts)

__all__ = ["Plan", "ReclusterResult", "plan", "recluster"]


@dataclass(frozen=True)
class Plan:
    """What a recluster will fit: read-out specs, the Ks (one, or a range to choose from)."""

    run_dir: Path
    specs: tuple
    clusters: int | tuple
    criterion: str
    run_clusters: int
    default_spec: ReadoutSpec | None

    @property
    def auto(self) -> bool:
        return isinstance(self.clusters, tuple)


@dataclass
class ReclusterResult:
    readouts: list[Readout]
    choice: KChoice | None
    default: str | None


def _base_spec(readouts, metrics, run_dir) -> ReadoutSpec:
    """The read-out K is chosen on: the default one, or for a method's own (argmax) default,
    K-means on its L2-normalised embedding feature."""
    default = next((r for r in readouts if r.row.get("default")), readouts[0])
    if not default.kind.fixed_k:
        return default.spec
    feature = metrics.get("embedding_feature")
    if feature is None:  # runs evaluated before metrics.json named it
        from mixem_tf.methods import method_class
        from mixem_tf.runs import load_run_config

        feature = method_class(load_run_config(run_dir)["settings"]["method"]).embedding_feature
    return ReadoutSpec(feature, True, "kmeans")


def plan(run_dir, clusters, *, readout: str | None = None,
         criterion: str | None = None) -> Plan:
    """Checks a recluster request against the run before any work.

    Args:
        clusters: K, or (low, high) to choose K (`choosing_k.parse_clusters`).
        readout: `FEATURE/l2|raw/KIND` to refit; default: every refittable read-out of the
            run for one K, the default read-out's feature for a range.
        criterion: which criterion chooses K (a range only).

    Raises:
        ValueError: the run has no read-outs, K does not fit the evaluation images, the
            read-out is unknown or a method's own assignment, or a criterion for one K.
    """
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    readouts = load_readouts(run_dir)
    run_clusters, images = int(metrics["num_clusters"]), int(metrics["evaluation_images"])
    auto = isinstance(clusters, tuple)
    if criterion is not None and not auto:
        raise ValueError("--criterion chooses K: use it with --clusters auto or A..B")
    if readout is not None:
        spec, at = parse_readout(readout)
        if at is not None:
            raise ValueError(f"--readout {readout}: name the read-out without @K and give K "
                             "with --clusters")
        specs = (spec,)
    elif auto:
        specs = (_base_spec(readouts, metrics, run_dir),)
    else:
        specs = tuple(r.spec for r in readouts
                      if r.num_clusters == run_clusters and not r.kind.fixed_k)
    high = clusters[1] if auto else clusters
    if high >= images:
        raise ValueError(f"--clusters: K = {high} needs more than the run's {images} "
                         "evaluation images")
    for spec in specs:
        if READOUT_KINDS[spec.kind].fixed_k:
            raise ValueError(f"--readout {readout}: {spec.kind} is the method's own "
                             "assignment, whose K the network fixes; refit a K-means read-out")
    default_spec = next((r.spec for r in readouts if r.row.get("default")), None)
    return Plan(run_dir, specs, clusters, criterion or DEFAULT_CRITERION, run_clusters,
                default_spec)


def recluster(plan: Plan, *, make_default: bool = False, model=None, evaluation=None,
              verbose: bool = True) -> ReclusterResult:
    """Fits `plan` on the run's evaluation features and stores the new read-outs (and, for a
    range, the K-choice table as metrics.json's "k_choice").

    Args:
        make_default: mark the (first) new read-out as the run's default.
        model, evaluation: the run's model and evaluation data, when the caller has them
            (features not kept yet are computed with them).
    """
    from mixem_tf.features import evaluation_features, evaluation_labels
    from mixem_tf.runs import load_run_config

    run_dir = plan.run_dir
    settings = load_run_config(run_dir)["settings"]
    budget = SETTINGS_BY_NAME[settings.get("readout_settings", "official")]
    seed = int(settings.get("seed", 0))
    features = evaluation_features(run_dir, model=model, evaluation=evaluation,
                                   verbose=verbose)
    labels = evaluation_labels(run_dir)
    context = {}
    if any(spec.kind == "kmeans_component_init" for spec in plan.specs):
        if model is None:
            from mixem_tf.runs import load_run

            model = load_run(run_dir)[0]
        context = model.readout_context(features)
    choice, extra = None, {}
    if plan.auto:
        choice = _choose(plan, features, labels, seed, model, evaluation, verbose)
        spec = plan.specs[0]
        extra = {"k_choice": {"readout": "/".join((spec.feature, "l2" if spec.normalize
                                                   else "raw", spec.kind)),
                              "criterion": plan.criterion, "k": choice.k,
                              "chosen": choice.chosen, "images": choice.images,
                              "table": choice.table}}
    ks = [choice.k] if choice else [plan.clusters]
    fitted = [fit_readout(spec, features, k, run_clusters=plan.run_clusters, labels=labels,
                          settings=budget if plan.auto or spec == plan.default_spec
                          else quick_budget(budget), seed=seed, context=context)
              for spec in plan.specs for k in ks]
    default = fitted[0].name if make_default else None
    save_readouts(run_dir, fitted, default=default, extra=extra)
    if default:
        fitted[0].row["default"] = True
    return ReclusterResult(fitted, choice, default)


def _choose(plan, features, labels, seed, model, evaluation, verbose) -> KChoice:
    from mixem_tf.features import evaluation_features

    low, high = plan.clusters
    augmented = evaluation_features(plan.run_dir, "augmented", model=model,
                                    evaluation=evaluation, seed=seed, verbose=verbose)
    spec = plan.specs[0]
    if verbose:
        print(f"choosing K from {low} to {high} on {spec.feature}/"
              f"{'l2' if spec.normalize else 'raw'}/{spec.kind} by {plan.criterion}; K =",
              end="", file=sys.stderr, flush=True)
    choice = choose_k(spec, features, range(low, high + 1), augmented=augmented,
                      labels=labels, criterion=plan.criterion, seed=seed,
                      progress=(lambda row: print(f" {row['K']}", end="", file=sys.stderr,
                                                  flush=True)) if verbose else None)
    if verbose:
        print(file=sys.stderr)
    return choice
