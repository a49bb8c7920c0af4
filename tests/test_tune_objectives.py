"""`trainers.tune`'s parts that need neither keras-tuner nor TensorFlow: the methods' declared
search spaces and their checks, and the label-free objectives on hand-made clusterings."""

import dataclasses
import json

import numpy as np
import pytest

from mixem_tf.methods import METHODS
from mixem_tf.metrics import normalized_mutual_info
from mixem_tf.settings import TrainConfig
from mixem_tf import criteria
from mixem_tf.tuning import objectives
from mixem_tf.tuning.space import apply_values, load_space_file, search_space

pytestmark = pytest.mark.core


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_declares_a_valid_space_that_includes_the_learning_rate(method):
    space = search_space(TrainConfig(dataset="digits", method=method))
    assert space == {name: {"sampling": "linear", **spec}
                     for name, spec in METHODS[method].search_space.items()}
    assert "lr" in space


def test_mixem_cdec_and_simclr_declare_their_loss_settings():
    mixem = METHODS["mixem"].search_space
    assert mixem["term_weights.entropy"] == {"min": 0.2, "max": 20.0, "sampling": "log"}
    assert {"term_weights.sharpening", "term_weights.pull", "term_weights.push"} <= set(mixem)
    assert {"instance_weight", "cluster_weight", "anchor_weight"} <= set(
        METHODS["cdec"].search_space)
    assert "temperature" in METHODS["simclr"].search_space


def test_overrides_replace_add_and_drop_ranges_and_fixed_settings_are_not_tuned():
    config = TrainConfig(dataset="digits", method="mixem", lr=1e-3,
                         options={"term_weights": {"pull": 0.05}})
    space = search_space(config, {"temperature": {"min": 0.1, "max": 1.0},
                                  "term_weights.push": None,
                                  "term_weights.entropy": {"values": [1.0, 2.0]}})
    assert space == {"term_weights.entropy": {"values": [1.0, 2.0]},
                     "term_weights.sharpening": {"min": 0.01, "max": 1.0, "sampling": "log"},
                     "temperature": {"min": 0.1, "max": 1.0, "sampling": "linear"}}


@pytest.mark.parametrize("override, reason", [
    ({"lr": [1e-4, 1e-2]}, "search space: lr must be a JSON object"),
    ({"lr": {"min": 1e-2, "max": 1e-4}}, "min < max"),
    ({"lr": {"min": 0, "max": 1, "sampling": "log"}}, "a log range needs min > 0"),
    ({"lr": {"min": 0.1, "max": 1, "sampling": "cubic"}}, "sampling must be linear or log"),
    ({"lr": {"min": 0.1}}, "a range has min, max"),
    ({"lr": {"values": []}}, "a non-empty list"),
    ({"term_weights.bogus": {"min": 0.1, "max": 1}},
     "term_weights.bogus = 0.1 is not a valid setting of method mixem (unknown MIX'EM terms"),
    ({"anchor_weight": {"min": 0.1, "max": 1}}, "anchor_weight: not a setting of method mixem"),
    ({"temperature": {"min": -1.0, "max": 1.0}}, "temperature must be positive"),
    ({"epochs": {"min": 1.5, "max": 3}}, "epochs must be an integer"),
])
def test_a_bad_range_is_one_line_naming_the_setting(override, reason):
    with pytest.raises(ValueError) as error:
        search_space(TrainConfig(dataset="digits", method="mixem"), override)
    assert reason in str(error.value) and "\n" not in str(error.value)


def test_nothing_left_to_tune_is_an_error():
    with pytest.raises(ValueError, match="nothing left to tune"):
        search_space(TrainConfig(dataset="digits", method="simclr", lr=1e-3,
                                 options={"temperature": 0.5}))


def test_a_space_file_that_is_not_an_object_or_not_json_is_refused(tmp_path):
    (tmp_path / "list.json").write_text("[1]")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        load_space_file(tmp_path / "list.json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_space_file(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_space_file(tmp_path / "missing.json")
    (tmp_path / "ok.json").write_text(json.dumps({"lr": None}))
    assert load_space_file(tmp_path / "ok.json") == {"lr": None}


def test_values_go_to_shared_fields_options_and_dict_option_entries():
    settings = apply_values({"options": {"term_weights": {"pull": 0.1}}},
                            {"lr": 0.01, "temperature": 0.2, "term_weights.push": 0.3})
    assert settings == {"lr": 0.01, "options": {"temperature": 0.2,
                                                "term_weights": {"pull": 0.1, "push": 0.3}}}
    config = TrainConfig.from_dict(settings)
    assert config.resolved().options["term_weights"] == {"pull": 0.1, "push": 0.3}


# -- objectives on hand-made clusterings -------------------------------------------------------
def _evidence(clusters, augmented=None, features=None, k=4):
    clusters = np.asarray(clusters)
    return objectives.TrialEvidence(
        clusters=clusters, augmented=clusters if augmented is None else np.asarray(augmented),
        features=np.eye(k)[clusters] if features is None else features, num_clusters=k)


def test_stability_is_one_for_unchanged_clusters_and_near_zero_for_random_ones():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(4), 50)
    assert objectives.stability(_evidence(clusters)) == pytest.approx(1.0)
    relabelled = (clusters + 1) % 4  # the same partition under other ids
    assert objectives.stability(_evidence(clusters, relabelled)) == pytest.approx(1.0)
    assert abs(objectives.stability(_evidence(clusters, rng.permutation(clusters)))) < 0.05


def test_silhouette_prefers_clusters_that_follow_the_features():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(4), 50)
    centres = np.eye(8)[:4] * 5
    features = criteria.l2_normalize(centres[clusters] + rng.normal(size=(200, 8)))
    good = objectives.silhouette(_evidence(clusters, features=features))
    shuffled = objectives.silhouette(_evidence(rng.permutation(clusters), features=features))
    assert good > 0.5 and shuffled < 0.05


def test_the_consensus_of_agreeing_trials_recovers_their_partition():
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 50)
    noisy = [np.where(rng.random(200) < 0.1, rng.integers(0, 4, 200), (truth + shift) % 4)
             for shift in range(5)]  # each trial: other ids, 10% of images moved at random
    consensus = criteria.consensus_clustering(noisy, 4)
    assert criteria.normalized_mutual_info(truth, consensus) == pytest.approx(1.0)
    outlier = rng.integers(0, 4, 200)
    assert objectives.consensus(_evidence(truth), noisy) == pytest.approx(1.0)
    assert objectives.consensus(_evidence(outlier), noisy) < 0.1
    assert objectives.consensus(_evidence(truth), []) == 0.0
    final = criteria.final_consensus({0: noisy[0], 1: noisy[1], 2: noisy[2], 3: outlier}, 4)
    assert min(final[0], final[1], final[2]) > 0.6 > 0.1 > final[3]


@pytest.mark.parametrize("objective", [objectives.stability, objectives.silhouette,
                                       lambda evidence: objectives.consensus(evidence, [])])
def test_a_clustering_with_one_cluster_over_half_the_images_is_refused(objective):
    clusters = np.array([0] * 51 + [1] * 20 + [2] * 29)
    with pytest.raises(objectives.CollapsedClusteringError, match="holds 51% of the images"):
        objective(_evidence(clusters))
    objective(_evidence(np.array([0] * 50 + [1] * 20 + [2] * 30)))  # exactly half is allowed


def test_the_objective_images_are_a_fixed_sample_of_at_most_max_images():
    images = np.arange(objectives.MAX_IMAGES + 500)[:, None]
    sample = objectives.objective_images(images, seed=3)
    assert len(sample) == objectives.MAX_IMAGES
    np.testing.assert_array_equal(sample, objectives.objective_images(images, seed=3))
    np.testing.assert_array_equal(objectives.objective_images(images[:10]), images[:10])


@pytest.mark.slow  # backend-neutral: the objectives' numpy code
def test_shuffling_the_labels_leaves_every_objective_unchanged():
    """The evidence of a trial comes from the images, the model and the read-out's centroids
    (K-means, which never sees labels); labels only change the reported ACC."""
    from mixem_tf.data import load_dataset
    from mixem_tf.methods import build_method
    from mixem_tf.training import evaluate_run

    digits = load_dataset("digits")
    data = dataclasses.replace(digits, images=digits.images[:600], labels=digits.labels[:600])
    config = TrainConfig(dataset="digits", method="mixem", backbone_width=8).resolved()
    model = build_method(config, data.image_shape, 10)
    shuffled = dataclasses.replace(data, labels=np.random.default_rng(0).permutation(
        data.labels))
    values, accuracies = [], []
    for evaluation in (data, shuffled):
        readouts = evaluate_run(model, evaluation, 10, config, readouts="default")
        row = next(r for r in readouts if r.row["default"])
        evidence = objectives.trial_evidence(model, evaluation.images, row)
        values.append((objectives.stability(evidence),
                       objectives.consensus(evidence, [evidence.augmented]),
                       objectives.silhouette(evidence)))
        accuracies.append(row.row["acc"])
    assert values[0] == values[1]
    assert accuracies[0] != accuracies[1]
