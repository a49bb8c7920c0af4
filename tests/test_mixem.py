"""MIX'EM: the mixture head, its three loss terms against numpy, read-outs, and learning."""

import numpy as np
import pytest
import keras
from keras import ops

from mixem_tf import cluster
from mixem_tf.heads import MixtureHead
from mixem_tf.losses import associative_pull_push, marginal_negative_entropy, sharpening

pytestmark = pytest.mark.core


def _grad(fn, x):
    """d fn(x) / dx on the current backend."""
    x = np.asarray(x, np.float32)
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: fn(v))(x))
    import tensorflow as tf

    variable = tf.Variable(x)
    with tf.GradientTape() as tape:
        value = fn(variable)
    grad = tape.gradient(value, variable)
    return np.zeros_like(x) if grad is None else grad.numpy()  # None: no dependence


def _softmax(a):
    e = np.exp(a - a.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# -- the head -------------------------------------------------------------------------------
def test_mixture_head_matches_a_per_component_loop():
    keras.utils.set_random_seed(0)
    head = MixtureHead(num_components=3, embedding_dim=4, hidden_dim=5)
    h = np.random.default_rng(0).normal(size=(6, 7)).astype(np.float32)
    out = {k: ops.convert_to_numpy(v) for k, v in head(h).items()}
    w1, b1, w2, b2 = (ops.convert_to_numpy(w) for w in (head.w1, head.b1, head.w2, head.b2))
    expected = []
    for k in range(3):
        u = np.maximum(h @ w1[k] + b1[k], 0) @ w2[k] + b2[k]
        expected.append(u / np.linalg.norm(u, axis=1, keepdims=True))
    expected = np.stack(expected, axis=1)
    np.testing.assert_allclose(out["components"], expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["z"], np.einsum("nk,nkd->nd", out["pi"], expected),
                               rtol=1e-4, atol=1e-5)
    assert np.all(np.linalg.norm(out["z"], axis=1) <= 1 + 1e-5)
    chosen = expected[np.arange(6), out["pi"].argmax(1)]
    np.testing.assert_allclose(out["e_max"], chosen, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["pi"], _softmax(out["logits"]), rtol=1e-5, atol=1e-6)


def test_mixture_head_defaults_are_the_papers_and_it_serialises():
    head = MixtureHead()
    assert (head.num_components, head.embedding_dim, head.hidden_dim) == (10, 32, 512)
    clone = MixtureHead.from_config(MixtureHead(4, 8, 16).get_config())
    assert (clone.num_components, clone.embedding_dim, clone.hidden_dim) == (4, 8, 16)
    with pytest.raises(ValueError, match="at least 2"):
        MixtureHead(num_components=1)


# -- term (i): marginal entropy ---------------------------------------------------------------
def test_marginal_negative_entropy_matches_numpy_and_rewards_balance():
    pi = _softmax(np.random.default_rng(1).normal(size=(8, 4)))
    marginal = pi.mean(0)
    expected = np.sum(marginal * np.log(marginal))
    assert float(marginal_negative_entropy(pi)) == pytest.approx(expected, rel=1e-5)
    uniform = np.full((8, 4), 0.25)
    collapsed = np.tile(np.eye(4)[0], (8, 1))
    assert float(marginal_negative_entropy(uniform)) == pytest.approx(-np.log(4), rel=1e-6)
    assert float(marginal_negative_entropy(collapsed)) == pytest.approx(0.0, abs=1e-6)


def test_marginal_entropy_gradient_moves_mass_towards_the_rare_component():
    # d/dπ_{n,k} Σ p̄ log p̄ = (log p̄_k + 1)/N: lower (more negative) for rare components,
    # so gradient descent raises π of the rare component.
    pi = np.array([[0.7, 0.3], [0.9, 0.1]], np.float32)
    grad = _grad(marginal_negative_entropy, pi)
    marginal = pi.mean(0)
    np.testing.assert_allclose(grad, np.tile((np.log(marginal) + 1) / 2, (2, 1)), rtol=1e-5)
    assert grad[0, 1] < grad[0, 0]


def test_marginal_entropy_is_finite_when_a_component_is_empty():
    pi = np.tile(np.eye(3)[0], (4, 1)).astype(np.float32)
    assert np.all(np.isfinite(_grad(marginal_negative_entropy, pi)))


# -- term (ii): sharpening ---------------------------------------------------------------------
def test_sharpening_variants_match_numpy():
    logits = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    pi = _softmax(logits)
    assert float(sharpening(logits, "max")) == pytest.approx(np.mean(1 - pi.max(1)), rel=1e-5)
    entropy = -np.sum(pi * np.log(pi), axis=1).mean()
    assert float(sharpening(logits, "entropy")) == pytest.approx(entropy, rel=1e-5)
    with pytest.raises(ValueError, match="variant"):
        sharpening(logits, "gini")


@pytest.mark.parametrize("variant", ["max", "entropy"])
def test_sharpening_is_zero_and_finite_for_one_hot_pi(variant):
    logits = np.array([[200.0, -200.0, -200.0], [-200.0, 200.0, -200.0]], np.float32)
    assert float(sharpening(logits, variant)) == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(_grad(lambda a: sharpening(a, variant), logits)))


# -- term (iii): associative pull / push -------------------------------------------------------
def _pull_push_reference(z, pi):
    n, k = pi.shape
    labels = np.concatenate([pi.argmax(1), np.arange(k)])
    points = np.concatenate([z, np.zeros((k, z.shape[1]))])
    means = np.stack([points[labels == c].mean(0) for c in range(k)])
    pull = np.mean([np.linalg.norm(points[labels == c] - means[c], axis=1).mean()
                    for c in range(k)])
    push = -sum(np.linalg.norm(means[a] - means[b]) for a in range(k) for b in range(k)
                if a != b) / (k * (k - 1))
    return pull, push


def test_pull_push_match_numpy_with_dummies_and_an_empty_component():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(7, 4)).astype(np.float32)
    pi = _softmax(rng.normal(size=(7, 3)))
    pi[:, 2] = 0.0  # component 2 gets no sample: only its zero dummy
    pull, push = associative_pull_push(z, pi)
    expected_pull, expected_push = _pull_push_reference(z, pi)
    assert float(pull) == pytest.approx(expected_pull, rel=1e-4)
    assert float(push) == pytest.approx(expected_push, rel=1e-4)


def test_pull_push_are_finite_when_everything_goes_to_one_component():
    z = np.random.default_rng(4).normal(size=(5, 3)).astype(np.float32)
    pi = np.tile(np.eye(4)[1], (5, 1)).astype(np.float32)
    pull, push = associative_pull_push(z, pi)
    assert np.isfinite(float(pull)) and np.isfinite(float(push))
    assert np.all(np.isfinite(_grad(lambda v: sum(associative_pull_push(v, pi)), z)))


def test_no_gradient_flows_through_the_argmax():
    z = np.random.default_rng(5).normal(size=(6, 3)).astype(np.float32)
    pi = _softmax(np.random.default_rng(6).normal(size=(6, 4))).astype(np.float32)
    grad = _grad(lambda p: sum(associative_pull_push(z, p)), pi)
    np.testing.assert_array_equal(grad, np.zeros_like(pi))


def test_pull_gradient_draws_members_towards_their_mean():
    z = np.array([[1.0, 0.0], [3.0, 0.0]], np.float32)
    pi = np.array([[0.9, 0.1], [0.9, 0.1]], np.float32)  # both in component 0 (+ a dummy)
    grad = _grad(lambda v: associative_pull_push(v, pi)[0], z)
    # mean of {1, 3, 0} is 4/3: the point at 3 must move left (positive gradient).
    assert grad[1, 0] > 0


# -- read-outs ---------------------------------------------------------------------------------
def test_component_init_uses_component_means_and_fills_empty_ones_in_range():
    features = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]])
    centres = cluster.component_init(features, [0, 0, 2, 2], 3, seed=0)
    np.testing.assert_allclose(centres[0], [1.0, 0.0])
    np.testing.assert_allclose(centres[2], [11.0, 10.0])
    assert np.all(centres[1] >= features.min()) and np.all(centres[1] <= features.max())
    # The official cluster_eval.py draws between the features' overall min and max, not per
    # dimension: with one dimension in [0, 1] and one in [100, 101], the empty centres' first
    # coordinates land far beyond 1.
    wide = np.array([[0.0, 100.0], [1.0, 101.0]])
    empty = cluster.component_init(wide, [0, 0], 8, seed=0)[1:]
    assert empty[:, 0].max() > 1.0 and empty.min() >= 0.0 and empty.max() <= 101.0


def test_component_init_over_clustering_takes_the_most_frequent_components():
    features = np.arange(12, dtype=float).reshape(6, 2)
    centres = cluster.component_init(features, [4, 4, 4, 1, 1, 0], 2, num_components=5)
    np.testing.assert_allclose(centres, [features[:3].mean(0), features[3:5].mean(0)])
    with pytest.raises(ValueError, match="cannot seed"):
        cluster.component_init(features, [0] * 6, 3, num_components=2)


def test_mixem_readouts_are_every_kind_on_every_feature_and_its_mixture_argmax():
    from mixem_tf.methods import MixEM
    from mixem_tf.readouts import ReadoutSpec, fit_readout

    specs = MixEM.readout_specs()
    assert len(specs) == 3 * 2 * 2 + 1  # (h, z, e_max) x (raw, l2) x (kmeans, component init)
    assert ReadoutSpec("z", True, "kmeans_component_init") in specs
    assert specs[-1] == ReadoutSpec("pi", False, "mixture_argmax")
    assert MixEM.default_spec() in specs
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(3), 20)
    features = {"h": rng.normal(size=(60, 5)) + labels[:, None] * 5, "pi": np.eye(3)[labels]}
    context = {"components": labels, "num_components": 3}
    for spec in (ReadoutSpec("h", False, "kmeans_component_init"), specs[-1]):
        readout = fit_readout(spec, features, 3, run_clusters=3, labels=labels,
                              context=context)
        assert readout.row["acc"] == 1.0 and readout.num_clusters == 3


# -- learning ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_mixem_on_digits_uses_its_components_and_beats_pixel_kmeans(tmp_path):
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run
    from mixem_tf.data import load_dataset

    digits = load_dataset("digits")
    pixels = cluster.kmeans(digits.images.astype(np.float32) / 255, 10, seed=0)
    from mixem_tf.metrics import cluster_accuracy

    pixel_acc = cluster_accuracy(digits.labels, pixels.labels)
    # 16 epochs (112 steps): at 8 the learned read-outs were within 0.01-0.03 of pixels.
    config = TrainConfig(dataset="digits", epochs=16, batch_size=256, readout_settings="sklearn",
                         options={"hidden_dim": 128})
    result = train_run(config, tmp_path / "r", verbose=0)
    history = result.history
    assert history["clusters_used"][-1] >= 8
    assert history["largest_cluster"][-1] < 0.5
    default = result.default_readout.row
    assert (default["feature"], default["normalize"]) == ("z", True)
    assert default["acc"] > pixel_acc + 0.03, (default["acc"], pixel_acc)


def test_start_epochs_switch_a_term_on_at_its_epoch(tmp_path):
    # The switch reads the model's `epoch` variable inside the compiled step (both backends).
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    config = TrainConfig(dataset="digits", epochs=3, batch_size=256, readout_settings="sklearn",
                         backbone_width=8,
                         options={"start_epochs": {"pull": 1, "push": 2}, "hidden_dim": 32})
    history = train_run(config, tmp_path / "r", verbose=0).history
    assert history["pull"][0] == 0 and history["pull"][1] > 0 and history["pull"][2] > 0
    assert history["push"][0] == history["push"][1] == 0 and history["push"][2] < 0
    assert history["entropy"][0] < 0  # terms without a start epoch are on from the start


def test_start_epochs_must_be_known_terms_and_non_negative():
    from mixem_tf.backbones import build_backbone
    from mixem_tf.methods import MixEM

    backbone = build_backbone("convnet", (8, 8, 1), width=8)
    with pytest.raises(ValueError, match="unknown MIX'EM terms"):
        MixEM(backbone, MixEM.augmentation("digits"), num_clusters=10,
              options={"start_epochs": {"pul": 1}})
    with pytest.raises(ValueError, match="start epochs must be ints >= 0"):
        MixEM(backbone, MixEM.augmentation("digits"), num_clusters=10,
              options={"start_epochs": {"pull": -1}})


def test_small_recipes_weaken_pull_push_and_the_user_has_the_last_word():
    from mixem_tf.methods.mixem import TERM_WEIGHTS
    from mixem_tf.settings import TrainConfig

    def weights(**settings):
        return TrainConfig.from_dict(settings).resolved().options["term_weights"]

    assert weights(dataset="digits") == {"pull": 0.01, "push": 0.005}
    assert TERM_WEIGHTS["pull"] == 0.1 and TERM_WEIGHTS["push"] == 0.05  # official, unchanged
    assert weights(dataset="fashion_mnist", term_weights={"pull": 0.1, "push": 0.05}) == \
        {"pull": 0.1, "push": 0.05}
    assert weights(dataset="mnist", options={"term_weights": {"entropy": 1.0, "pull": 0.2}}) == \
        {"entropy": 1.0, "pull": 0.2, "push": 0.005}
    assert weights(dataset="stl10") == {}  # the paper's recipe
    simclr = TrainConfig(dataset="digits", method="simclr").resolved()
    assert "term_weights" not in simclr.options
