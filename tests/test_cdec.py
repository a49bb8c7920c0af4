"""cdec (cdec, docs/METHODS.md §3) against numpy references, on the current backend (CI runs
this file under TensorFlow and under JAX)."""

import keras
import numpy as np
import pytest
from keras import ops

from mixem_tf.heads import StudentTAssignment
from mixem_tf.losses import dec_target, kl_divergence
from mixem_tf.methods import CDEC

pytestmark = pytest.mark.core


def _gradient(function, x):
    """d function(x) / dx for a scalar function, on either backend."""
    x = ops.convert_to_tensor(x)
    if keras.backend.backend() == "jax":
        import jax

        return np.asarray(jax.grad(function)(x))
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        value = function(x)
    return tape.gradient(value, x, unconnected_gradients="zero").numpy()


def _student_t(h, centres, alpha):
    squared = ((h[:, None, :] - centres[None]) ** 2).sum(-1)
    kernel = (1 + squared / alpha) ** (-(alpha + 1) / 2)
    return kernel / kernel.sum(1, keepdims=True)


def _kl(p, q):
    return float(np.mean(np.sum(p * np.log(p / q), axis=1)))


RNG = np.random.default_rng(3)
H = RNG.normal(size=(6, 4)).astype(np.float32)
CENTRES = RNG.normal(size=(3, 4)).astype(np.float32)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_student_t_assignment_matches_numpy(alpha):
    layer = StudentTAssignment(3, alpha=alpha)
    layer.build((None, 4))
    layer.centres.assign(CENTRES)
    q = ops.convert_to_numpy(layer(H))
    np.testing.assert_allclose(q, _student_t(H, CENTRES, alpha), rtol=1e-5)
    far = ops.convert_to_numpy(layer(H * 1e4))  # huge distances: no underflow to 0/0
    assert np.all(np.isfinite(far)) and np.allclose(far.sum(1), 1)


def test_dec_target_and_kl_match_numpy():
    q = _student_t(H, CENTRES, 1.0)
    f = q.sum(0)
    p = (q ** 2 / f) / (q ** 2 / f).sum(1, keepdims=True)
    np.testing.assert_allclose(ops.convert_to_numpy(dec_target(q)), p, rtol=1e-5)
    assert float(kl_divergence(p, q)) == pytest.approx(_kl(p, q), rel=1e-4)
    assert float(kl_divergence(q, q)) == pytest.approx(0.0, abs=1e-6)


def test_an_empty_centre_keeps_the_target_finite():
    q = np.array([[0.5, 0.5, 0.0], [0.6, 0.4, 0.0]], np.float32)  # no mass on centre 2
    p = ops.convert_to_numpy(dec_target(q))
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(1), 1) and np.allclose(p[:, 2], 0)
    assert np.isfinite(float(kl_divergence(p, q)))


def test_no_gradient_flows_through_the_target():
    q = _student_t(H, CENTRES, 1.0).astype(np.float32)
    weights = RNG.normal(size=q.shape).astype(np.float32)
    grad = _gradient(lambda x: ops.sum(dec_target(x) * weights), q)
    np.testing.assert_array_equal(grad, np.zeros_like(q))


def _model():
    from mixem_tf.backbones import build_backbone

    keras.utils.set_random_seed(0)
    return CDEC(build_backbone("convnet", (8, 8, 1), width=8), CDEC.augmentation("digits"),
                num_clusters=3, options={"hidden_dim": 16, "projection_dim": 8})


def _outputs():
    """Outputs of three views with known q, and z of unit rows."""
    qs = [_student_t(H + shift, CENTRES, 1.0).astype(np.float32) for shift in (0.0, 0.3, -0.2)]
    z = [x / np.linalg.norm(x, axis=1, keepdims=True)
         for x in RNG.normal(size=(3, 6, 8)).astype(np.float32)]
    return qs, z


def test_the_loss_is_the_weighted_sum_of_its_three_terms():
    from mixem_tf.losses import NTXentLoss

    (q_clean, q_a, q_b), (z_clean, z_a, z_b) = _outputs()
    model = _model()
    model.options.instance_weight, model.options.cluster_weight = 0.5, 2.0
    outputs = {"clean": {"q": q_clean, "z": z_clean}, "a": {"q": q_a, "z": z_a},
               "b": {"q": q_b, "z": z_b}}
    terms = {k: float(v) for k, v in model.loss_terms(outputs).items()}
    f = q_clean.sum(0)
    p = (q_clean ** 2 / f) / (q_clean ** 2 / f).sum(1, keepdims=True)
    assert terms["cluster"] == pytest.approx(2.0 * _kl(p, q_clean), rel=1e-4)
    assert terms["anchor"] == pytest.approx(_kl(q_clean, q_a) + _kl(q_clean, q_b), rel=1e-4)
    assert terms["nt_xent"] == pytest.approx(0.5 * float(NTXentLoss(0.5)(z_a, z_b)), rel=1e-5)


def test_the_anchor_sends_no_gradient_to_the_clean_view():
    (q_clean, q_a, q_b), (z_clean, z_a, z_b) = _outputs()
    model = _model()

    def anchor(clean):
        outputs = {"clean": {"q": clean, "z": z_clean}, "a": {"q": q_a, "z": z_a},
                   "b": {"q": q_b, "z": z_b}}
        return model.loss_terms(outputs)["anchor"]

    np.testing.assert_array_equal(_gradient(anchor, q_clean), np.zeros_like(q_clean))

    def cluster(clean):  # trained through the DEC term instead
        outputs = {"clean": {"q": clean, "z": z_clean}, "a": {"q": q_a, "z": z_a},
                   "b": {"q": q_b, "z": z_b}}
        return model.loss_terms(outputs)["cluster"]

    p = ops.convert_to_numpy(dec_target(q_clean))
    np.testing.assert_allclose(_gradient(cluster, q_clean), -p / q_clean / len(q_clean),
                               rtol=1e-3)


def test_initialize_state_puts_the_centres_on_kmeans_of_the_clean_images():
    from mixem_tf.cluster import SKLEARN, kmeans
    from mixem_tf.data import load_dataset

    images = load_dataset("digits").images[:300]
    model = _model()
    model(images[:2])
    model.initialize_state(images)
    h = model.predict(images, verbose=0)["h"]
    expected = kmeans(h, 3, settings=SKLEARN, seed=0).centroids
    np.testing.assert_allclose(ops.convert_to_numpy(model.assignment.centres), expected,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_cdec_from_a_simclr_run_learns_digits_beyond_pixel_kmeans(tmp_path):
    from mixem_tf import cluster
    from mixem_tf.data import load_dataset
    from mixem_tf.metrics import cluster_accuracy
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    digits = load_dataset("digits")
    pixels = cluster.kmeans(digits.images.astype(np.float32) / 255, 10, seed=0)
    pixel_acc = cluster_accuracy(digits.labels, pixels.labels)
    shared = dict(dataset="digits", epochs=20, readout_settings="sklearn", backbone_width=16)
    train_run(TrainConfig(method="simclr", **shared), tmp_path / "simclr", verbose=0)
    result = train_run(TrainConfig(method="cdec", init_from=str(tmp_path / "simclr"), **shared),
                       tmp_path / "cdec", verbose=0)
    own = result.default_readout.row
    assert (own["feature"], own["clustering"]) == ("q", "argmax")
    assert own["acc"] > pixel_acc + 0.03, (own["acc"], pixel_acc)
    assert result.history["clusters_used"][-1] >= 8
