"""Read-outs: how a run's features become clusters. One registry of kinds, one store per run.

A read-out is a kind (how it is fitted and how it assigns) applied to one feature of the
model's evaluation outputs, raw or L2-normalised, at a number of clusters K. Every kind is a
`ReadoutKind` registered here with `@register_kind`; it says

- how it is fitted on features for a K (`fit`), in numpy, without labels;
- how it assigns new features and how far they are from each cluster (`assign`,
  `distances`), in numpy, as the exported head does in the graph;
- how its parameters are saved in and loaded from the run's `readout.npz` (`save`, `load`);
- which exported head serves it (`head`: a key of `export.module.READOUT_HEADS`).

Kinds: `kmeans` (k-means++ seeding, the papers' "random init"), `kmeans_component_init`
(K-means from mixture components, MIX'EM's `cluster_eval.py`, docs/METHODS.md §1.4), and
`argmax` / `mixture_argmax` (a method's own assignment: the argmax of a probability vector,
whose K is the vector's width).

A run's read-outs live in two files of its directory: `metrics.json` holds one row per
read-out (its name, K, cluster sizes, softmax temperature, and ACC/NMI/ARI when the data has
labels) with exactly one marked default, and `readout.npz` the fitted parameters. A read-out
is named `FEATURE/l2|raw/KIND`, with `@K` appended when K differs from the run's own
(`z/l2/kmeans@15`).

Example:
    >>> readout = load_readout("runs/digits-mixem")               # the default read-out
    >>> readout.assign(features), readout.probabilities(features)
    >>> fitted = fit_readout(ReadoutSpec("z", True, "kmeans"), features, 15, run_clusters=10)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from mixem_tf.atomic import write_json_atomic, write_npz_atomic
from mixem_tf.cluster import (SETTINGS_BY_NAME, KMeansSettings, assign, component_init, kmeans,
                              l2_normalize, squared_distances)

__all__ = ["METRICS_FILE", "READOUT_FILE", "READOUT_KINDS", "Readout", "ReadoutKind",
           "ReadoutSpec", "fit_readout", "load_readout", "load_readouts", "parse_readout",
           "quick_budget", "readout_name", "register_kind", "save_readouts"]

METRICS_FILE = "metrics.json"
READOUT_FILE = "readout.npz"
MIN_TEMPERATURE = 1e-12
QUICK_INITS = 10
READOUT_KINDS: dict[str, "ReadoutKind"] = {}


def register_kind(cls):
    """Class decorator: registers a `ReadoutKind` under its `name` (one edit adds a kind)."""
    READOUT_KINDS[cls.name] = cls()
    return cls


class ReadoutKind:
    """How one kind of read-out is fitted, assigns, is stored and is served.

    Attributes:
        name: the kind's name, the last part of a read-out's name.
        head: the exported head that serves it: "centroids" (squared distances to centres,
            softmax(-d / T)) or "argmax" (the feature is the probability vector).
        fixed_k: the kind's K is the width of its feature; it cannot be refitted at another K.
    """

    name: ClassVar[str] = ""
    head: ClassVar[str] = "centroids"
    fixed_k: ClassVar[bool] = False

    def check(self, k: int, context: dict) -> None:
        """ValueError when this kind cannot be fitted at K with `context` (before any work)."""

    def fit(self, space: np.ndarray, k: int, *, settings: KMeansSettings, seed: int,
            context: dict) -> dict:
        """Parameters (name → array) fitted on `space` [N, D] for K clusters."""
        raise NotImplementedError

    def distances(self, params: dict, space: np.ndarray) -> np.ndarray:
        """[N, K]: smaller is closer (the exported `distances` output)."""
        raise NotImplementedError

    def assign(self, params: dict, space: np.ndarray) -> np.ndarray:
        """int64 [N] cluster ids."""
        return np.argmin(self.distances(params, space), axis=1).astype(np.int64)

    def save(self, params: dict, prefix: str) -> dict:
        """Arrays to store in readout.npz, named from `prefix`."""
        return {f"{prefix}.{name}" if name != "centroids" else prefix: value
                for name, value in params.items()}

    def load(self, archive, prefix: str) -> dict:
        """The parameters `save` stored under `prefix` (KeyError if they are missing)."""
        return {"centroids": np.asarray(archive[prefix], np.float32)}


@register_kind
class KMeansReadout(ReadoutKind):
    """K-means with k-means++ seeding at the run's K-means budget."""

    name = "kmeans"

    def fit(self, space, k, *, settings, seed, context):
        return {"centroids": kmeans(space, k, settings=settings, seed=seed).centroids}

    def distances(self, params, space):
        return squared_distances(space, params["centroids"])

    def assign(self, params, space):
        return assign(space, params["centroids"])


@register_kind
class ComponentInitReadout(KMeansReadout):
    """K-means started from the means of the mixture's most frequent components (one run)."""

    name = "kmeans_component_init"

    def check(self, k, context):
        if "components" not in context:
            raise ValueError(f"read-out kind {self.name} needs a method with mixture "
                             "components (MIX'EM)")
        if k > context["num_components"]:
            raise ValueError(f"read-out kind {self.name} cannot form {k} clusters from "
                             f"{context['num_components']} mixture components")

    def fit(self, space, k, *, settings, seed, context):
        self.check(k, context)
        init = component_init(space, context["components"], k,
                              num_components=context["num_components"], seed=seed)
        return {"centroids": kmeans(space, k, init=init, settings=settings,
                                    seed=seed).centroids}


@register_kind
class ArgmaxReadout(ReadoutKind):
    """A method's own assignment: the argmax of its probability vector (cdec's q, MiCE's r)."""

    name = "argmax"
    head = "argmax"
    fixed_k = True

    def fit(self, space, k, *, settings, seed, context):
        return {}

    def distances(self, params, space):
        return 1.0 - space

    def assign(self, params, space):
        return np.argmax(space, axis=1).astype(np.int64)

    def load(self, archive, prefix):
        return {}


@register_kind
class MixtureArgmaxReadout(ArgmaxReadout):
    """MIX'EM's argmax π: the mixture component of highest prior-weighted responsibility."""

    name = "mixture_argmax"


@dataclass(frozen=True)
class ReadoutSpec:
    """What to fit: a feature, raw or L2-normalised, and a kind."""

    feature: str
    normalize: bool
    kind: str

    def __post_init__(self):
        if self.kind not in READOUT_KINDS:
            raise ValueError(f"unknown read-out kind {self.kind!r}; choose from "
                             f"{', '.join(READOUT_KINDS)}")


def quick_budget(settings: KMeansSettings) -> KMeansSettings:
    """The K-means budget of the read-outs beside the default one: at most `QUICK_INITS`
    restarts (the papers' 50 cost most of a short run), the same iterations."""
    return KMeansSettings(n_init=min(settings.n_init, QUICK_INITS), max_iter=settings.max_iter,
                          tol=settings.tol)


def readout_name(spec: ReadoutSpec, k: int, run_clusters: int) -> str:
    """`FEATURE/l2|raw/KIND`, plus `@K` when K is not the run's own."""
    base = "/".join((spec.feature, "l2" if spec.normalize else "raw", spec.kind))
    return base if k == run_clusters else f"{base}@{k}"


def parse_readout(text: str) -> tuple[ReadoutSpec, int | None]:
    """`"z/l2/kmeans@15"` → (ReadoutSpec("z", True, "kmeans"), 15); K is None without `@`.

    Raises:
        ValueError: not FEATURE/l2|raw/KIND[@K], an unknown kind, or K < 2.
    """
    base, _, k = text.partition("@")
    parts = base.split("/")
    if len(parts) != 3 or parts[1] not in ("l2", "raw") or not parts[0] or not parts[2]:
        raise ValueError(f"--readout {text!r}: expected FEATURE/l2|raw/KIND[@K], "
                         "e.g. h/l2/kmeans")
    if k and (not k.isdigit() or int(k) < 2):
        raise ValueError(f"--readout {text!r}: K after @ must be an integer >= 2")
    return ReadoutSpec(parts[0], parts[1] == "l2", parts[2]), int(k) if k else None


@dataclass(frozen=True)
class Readout:
    """A fitted read-out: its spec, K, parameters and its metrics.json row.

    Attributes:
        name: `FEATURE/l2|raw/KIND[@K]`.
        spec: feature, normalisation and kind.
        num_clusters: K.
        params: the kind's fitted arrays (K-means: {"centroids": [K, D]}).
        row: its metrics.json row (cluster_sizes, temperature, acc/nmi/ari with labels, ...).
    """

    name: str
    spec: ReadoutSpec
    num_clusters: int
    params: dict = field(repr=False)
    row: dict = field(repr=False)

    # -- what it is -------------------------------------------------------------------
    @property
    def kind(self) -> ReadoutKind:
        return READOUT_KINDS[self.spec.kind]

    @property
    def key(self) -> str:
        return self.name

    @property
    def feature(self) -> str:
        return self.spec.feature

    @property
    def normalize(self) -> bool:
        return self.spec.normalize

    @property
    def head(self) -> str:
        """The exported head that serves it (`export.module.READOUT_HEADS`)."""
        return self.kind.head

    @property
    def centroids(self) -> np.ndarray | None:
        return self.params.get("centroids")

    @property
    def temperature(self) -> float:
        """T of `probabilities = softmax(-distances / T)` for centroid kinds."""
        return float(self.row.get("temperature") or 1.0)

    # -- applying it to features ------------------------------------------------------
    def space(self, features: dict) -> np.ndarray:
        """The read-out's feature of `features` (name → [N, D]), normalised if it says so."""
        if self.feature not in features:
            raise ValueError(f"read-out {self.name} needs feature {self.feature!r}; the "
                             f"features hold {', '.join(features)}")
        values = np.asarray(features[self.feature], np.float32)
        return l2_normalize(values).astype(np.float32) if self.normalize else values

    def assign(self, features: dict) -> np.ndarray:
        return self.kind.assign(self.params, self.space(features))

    def distances(self, features: dict) -> np.ndarray:
        return self.kind.distances(self.params, self.space(features))

    def probabilities(self, features: dict) -> np.ndarray:
        """float32 [N, K]: the served `probabilities` (softmax(-d / T), or the method's p)."""
        space = self.space(features)
        if self.head == "argmax":
            return space.astype(np.float32)
        logits = -self.kind.distances(self.params, space) / max(self.temperature,
                                                                 MIN_TEMPERATURE)
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def _space(features: dict, spec: ReadoutSpec) -> np.ndarray:
    if spec.feature not in features:
        raise ValueError(f"read-out {spec.feature}/...: the model has no feature "
                         f"{spec.feature!r} (it has {', '.join(features)})")
    values = np.asarray(features[spec.feature], np.float32)
    return l2_normalize(values).astype(np.float32) if spec.normalize else values


def check_readout(spec: ReadoutSpec, k: int, features_k: dict, context: dict) -> None:
    """ValueError when `spec` cannot be fitted at K (fixed-K kind at another K, too few
    components); `features_k` maps feature name → its width."""
    kind = READOUT_KINDS[spec.kind]
    if kind.fixed_k and k != features_k.get(spec.feature, k):
        raise ValueError(f"read-out kind {spec.kind} is the method's own assignment: its K is "
                         f"{features_k[spec.feature]}, it cannot be fitted at K = {k}")
    kind.check(k, context)


def fit_readout(spec: ReadoutSpec, features: dict, k: int, *, run_clusters: int,
                labels=None, settings: KMeansSettings | str = "official", seed: int = 0,
                context: dict | None = None) -> Readout:
    """Fits `spec` at K on `features` and scores it (ACC/NMI/ARI only when `labels` is given).

    The row's `temperature` is the mean squared distance of the images to their nearest
    centre (the K-means inertia per image) for centroid kinds.
    """
    from mixem_tf.metrics import cluster_sizes, evaluate_clustering

    if isinstance(settings, str):
        settings = SETTINGS_BY_NAME[settings]
    context = context or {}
    kind = READOUT_KINDS[spec.kind]
    space = _space(features, spec)
    if kind.fixed_k:
        k = space.shape[1]
    else:
        kind.check(k, context)
    params = kind.fit(space, k, settings=settings, seed=seed, context=context)
    distances = kind.distances(params, space)
    predicted = kind.assign(params, space)
    name = readout_name(spec, k, run_clusters)
    row = {"name": name, "feature": spec.feature, "normalize": spec.normalize,
           "clustering": spec.kind, "num_clusters": int(k),
           **(evaluate_clustering(labels, predicted) if labels is not None else {}),
           "default": False,
           "cluster_sizes": cluster_sizes(predicted, max(k, int(predicted.max()) + 1)).tolist()}
    if kind.head == "centroids":
        nearest = np.take_along_axis(distances, predicted[:, None], axis=1)
        row["temperature"] = float(max(np.maximum(nearest, 0).mean(), MIN_TEMPERATURE))
        row["kmeans"] = {"n_init": settings.n_init, "max_iter": settings.max_iter}
    return Readout(name, spec, int(k), {k_: np.asarray(v, np.float32)
                                        for k_, v in params.items()}, row)


# -- the store in a run directory -------------------------------------------------------------
def load_metrics(run_dir) -> dict:
    """The run's metrics.json; ValueError if missing (the run has not been evaluated)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise ValueError(f"{run_dir} has no {METRICS_FILE}: the run did not finish its "
                         "evaluation")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


def _row_name(row: dict, run_clusters: int) -> str:
    """A row's name; rows written before read-outs had names get theirs from their fields."""
    if row.get("name"):
        return row["name"]
    spec = ReadoutSpec(row["feature"], bool(row["normalize"]), row["clustering"])
    return readout_name(spec, int(row.get("num_clusters") or run_clusters), run_clusters)


def _prefix(name: str) -> str:
    return name.replace("/", "_")


def load_readouts(run_dir) -> list[Readout]:
    """Every read-out stored in the run, in metrics.json's order."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    run_clusters = int(metrics["num_clusters"])
    path = run_dir / READOUT_FILE
    archive = np.load(path) if path.is_file() else {}
    try:
        readouts = []
        for row in metrics["readouts"]:
            name = _row_name(row, run_clusters)
            spec = ReadoutSpec(row["feature"], bool(row["normalize"]), row["clustering"])
            kind = READOUT_KINDS[spec.kind]
            try:
                params = kind.load(archive, _prefix(name))
            except KeyError:
                if not path.is_file():
                    raise ValueError(f"{run_dir} has no {READOUT_FILE} (the read-outs' fitted "
                                     "parameters)") from None
                raise ValueError(f"{path} holds no parameters for read-out {name}") from None
            k = int(row.get("num_clusters") or (len(params["centroids"]) if "centroids" in
                                                 params else run_clusters))
            readouts.append(Readout(name, spec, k, params, {**row, "name": name}))
        return readouts
    finally:
        if hasattr(archive, "close"):
            archive.close()


def load_readout(run_dir, name: str | None = None) -> Readout:
    """The run's default read-out, or the one called `name` (`FEATURE/l2|raw/KIND[@K]`).

    Raises:
        ValueError: metrics.json or readout.npz missing, or no such read-out (the message
            lists the run's read-outs).
    """
    readouts = load_readouts(run_dir)
    names = [r.name for r in readouts]
    if name is None:
        chosen = next((r for r in readouts if r.row.get("default")), None)
        if chosen is None:
            raise ValueError(f"{run_dir}/{METRICS_FILE} marks no default read-out; pick one "
                             f"with --readout (one of {', '.join(names)})")
        return chosen
    parse_readout(name)
    if name not in names:
        raise ValueError(f"--readout {name}: the run has no such read-out; choose from "
                         f"{', '.join(names)} (trainers.recluster fits new ones)")
    return readouts[names.index(name)]


def save_readouts(run_dir, readouts: list[Readout], *, header: dict | None = None,
                  default: str | None = None, extra: dict | None = None) -> None:
    """Writes read-outs into the run's store. Both files are replaced atomically, readout.npz
    first, so metrics.json never names parameters that are not there.

    Args:
        header: given, the store starts anew with these metrics.json entries (dataset,
            method, num_clusters, ...): a run's evaluation after training, whose features
            make earlier read-outs stale. Without it, `readouts` join the existing store
            (one of the same name is replaced) and every other read-out stays.
        default: the name of the read-out to mark as the run's default.
        extra: top-level metrics.json entries to add or replace (e.g. "k_choice").
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    fresh = header is not None
    metrics = {**header, "readouts": []} if fresh else load_metrics(run_dir)
    run_clusters = int(metrics["num_clusters"])
    old = {} if fresh else {r.name: r for r in load_readouts(run_dir)}
    rows = {_row_name(row, run_clusters): row for row in metrics["readouts"]}
    for readout in readouts:
        old[readout.name] = readout
        rows[readout.name] = {**readout.row, "default": rows.get(readout.name, {})
                              .get("default", readout.row.get("default", False))}
    if default is not None:
        if default not in rows:
            raise ValueError(f"no read-out {default} to make the default")
        rows = {name: {**row, "default": name == default} for name, row in rows.items()}
    arrays = {}
    for name, readout in old.items():
        arrays.update(readout.kind.save(readout.params, _prefix(name)))
    write_npz_atomic(run_dir / READOUT_FILE, arrays)
    write_json_atomic(path, {**metrics, **(extra or {}), "readouts": list(rows.values())})
