"""The read-out registry: every kind fitted at a K, stored in a run directory and read back
assigning the same clusters; names, defaults and the store's rules."""

import json

import numpy as np
import pytest

from mixem_tf.readouts import (READOUT_KINDS, ReadoutSpec, fit_readout, load_readout,
                               load_readouts, parse_readout, quick_budget, save_readouts)
from mixem_tf.cluster import OFFICIAL

pytestmark = pytest.mark.core

HEADER = {"dataset": "digits", "method": "mixem", "evaluate_on": "all",
          "evaluation_images": 90, "num_clusters": 3}


def _features(seed=0):
    """Three separated groups of 30 in h, a 5-component mixture π that splits them."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 30)
    h = rng.normal(size=(90, 6)) + np.eye(6)[labels] * 8
    components = np.repeat(np.arange(5), 18)
    return {"h": h.astype(np.float32), "pi": np.eye(5, dtype=np.float32)[components]}, \
        labels, {"components": components, "num_components": 5}


@pytest.mark.parametrize("spec, k", [(ReadoutSpec("h", False, "kmeans"), 4),
                                     (ReadoutSpec("h", True, "kmeans"), 2),
                                     (ReadoutSpec("h", True, "kmeans_component_init"), 4),
                                     (ReadoutSpec("pi", False, "mixture_argmax"), 5),
                                     (ReadoutSpec("pi", False, "argmax"), 5)])
def test_every_kind_round_trips_through_the_run_directory_at_another_k(tmp_path, spec, k):
    features, labels, context = _features()
    fitted = fit_readout(spec, features, k, run_clusters=3, labels=labels, context=context)
    assert fitted.num_clusters == k
    assert fitted.name.endswith(f"@{k}")  # K differs from the run's 3
    save_readouts(tmp_path, [fitted], header=HEADER, default=fitted.name)
    loaded = load_readout(tmp_path)
    assert loaded.name == fitted.name and loaded.num_clusters == k
    np.testing.assert_array_equal(loaded.assign(features), fitted.assign(features))
    np.testing.assert_allclose(loaded.probabilities(features), fitted.probabilities(features),
                               rtol=1e-6)
    assert loaded.probabilities(features).shape == (90, k)
    assert loaded.head == READOUT_KINDS[spec.kind].head


def test_kmeans_probabilities_are_a_softmax_of_distances_at_the_stored_temperature():
    features, labels, _ = _features()
    fitted = fit_readout(ReadoutSpec("h", False, "kmeans"), features, 3, run_clusters=3)
    distances = fitted.distances(features)
    nearest = distances.min(axis=1)
    assert fitted.temperature == pytest.approx(nearest.mean(), rel=1e-4)
    p = fitted.probabilities(features)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    # Hand-worked: the ratio of two clusters' probabilities is exp((d_j - d_i) / T).
    i, j = 0, 1
    expected = np.exp((distances[:, j] - distances[:, i]) / fitted.temperature)
    np.testing.assert_allclose(p[:, i] / p[:, j], expected, rtol=1e-3)
    assert np.array_equal(np.argmax(p, 1), fitted.assign(features))


def test_names_parse_and_bad_names_are_refused():
    assert parse_readout("z/l2/kmeans@15") == (ReadoutSpec("z", True, "kmeans"), 15)
    assert parse_readout("h/raw/argmax") == (ReadoutSpec("h", False, "argmax"), None)
    for bad in ("z/l2", "z/cosine/kmeans", "z/l2/kmeans@1", "z/l2/kmeans@x", "/l2/kmeans"):
        with pytest.raises(ValueError, match="--readout"):
            parse_readout(bad)
    with pytest.raises(ValueError, match="unknown read-out kind 'nope'"):
        parse_readout("z/l2/nope")


def test_a_kind_that_cannot_be_fitted_says_why():
    features, _, context = _features()
    with pytest.raises(ValueError, match="cannot form 6 clusters from 5 mixture components"):
        fit_readout(ReadoutSpec("h", True, "kmeans_component_init"), features, 6,
                    run_clusters=3, context=context)
    with pytest.raises(ValueError, match="needs a method with mixture components"):
        fit_readout(ReadoutSpec("h", True, "kmeans_component_init"), features, 3,
                    run_clusters=3)
    with pytest.raises(ValueError, match="has no feature 'z'"):
        fit_readout(ReadoutSpec("z", True, "kmeans"), features, 3, run_clusters=3)


def test_the_store_keeps_every_readout_and_one_default(tmp_path):
    features, labels, _ = _features()
    own = fit_readout(ReadoutSpec("h", True, "kmeans"), features, 3, run_clusters=3,
                      labels=labels)
    save_readouts(tmp_path, [own], header=HEADER, default=own.name)
    more = [fit_readout(ReadoutSpec("h", True, "kmeans"), features, k, run_clusters=3)
            for k in (4, 5)]
    save_readouts(tmp_path, more)
    names = [r.name for r in load_readouts(tmp_path)]
    assert names == ["h/l2/kmeans", "h/l2/kmeans@4", "h/l2/kmeans@5"]
    assert load_readout(tmp_path).name == "h/l2/kmeans"  # joining keeps the default
    save_readouts(tmp_path, [], default="h/l2/kmeans@5")
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["default"] for row in metrics["readouts"]] == [False, False, True]
    assert load_readout(tmp_path, "h/l2/kmeans@4").num_clusters == 4
    with pytest.raises(ValueError, match="no such read-out; choose from h/l2/kmeans, "):
        load_readout(tmp_path, "h/raw/kmeans")
    save_readouts(tmp_path, [own], header=HEADER)  # a new evaluation starts the store anew
    assert [r.name for r in load_readouts(tmp_path)] == ["h/l2/kmeans"]


def test_rows_written_before_readouts_had_names_still_load(tmp_path):
    """A run evaluated by an earlier version: rows without name or K, centroids named
    FEATURE_NORM_KIND."""
    features, labels, _ = _features()
    fitted = fit_readout(ReadoutSpec("h", True, "kmeans"), features, 3, run_clusters=3)
    row = {k: v for k, v in fitted.row.items() if k not in ("name", "num_clusters")}
    (tmp_path / "metrics.json").write_text(json.dumps({**HEADER, "readouts": [
        {**row, "default": True}, {"feature": "pi", "normalize": False,
                                   "clustering": "mixture_argmax", "default": False,
                                   "cluster_sizes": [18] * 5}]}))
    np.savez(tmp_path / "readout.npz", h_l2_kmeans=fitted.centroids)
    loaded = load_readouts(tmp_path)
    assert [r.name for r in loaded] == ["h/l2/kmeans", "pi/raw/mixture_argmax"]
    np.testing.assert_array_equal(loaded[0].assign(features), fitted.assign(features))
    (tmp_path / "readout.npz").unlink()
    with pytest.raises(ValueError, match="has no readout.npz"):
        load_readouts(tmp_path)


def test_the_quick_budget_caps_restarts_only():
    quick = quick_budget(OFFICIAL)
    assert (quick.n_init, quick.max_iter) == (10, OFFICIAL.max_iter)
