"""SimCLR trains on the current backend (CI runs this file under TensorFlow and under JAX)."""

import numpy as np
import pytest
import keras
from keras import ops

from mixem_tf.backbones import build_backbone
from mixem_tf.data import load_dataset
from mixem_tf.feeding import EpochBatches
from mixem_tf.methods import SimCLR

pytestmark = pytest.mark.core


def _model(weight_decay=0.0, seed=0):
    keras.utils.set_random_seed(seed)
    backbone = build_backbone("convnet", (8, 8, 1), width=16)
    return SimCLR(backbone, SimCLR.augmentation("digits"), num_clusters=10,
                  coupled_weight_decay=weight_decay, seed=seed)


def test_simclr_loss_falls_in_a_few_steps():
    images = load_dataset("digits").images
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    feeder = EpochBatches(images, 128, seed=0, end_epoch=4)
    history = model.fit(((b,) for b in feeder), shuffle=False, steps_per_epoch=feeder.steps_per_epoch, epochs=4,
                        verbose=0).history
    assert set(history) >= {"loss", "nt_xent"}
    assert all(np.isfinite(history["loss"]))
    assert history["nt_xent"][-1] < history["nt_xent"][0] - 0.1


def test_evaluation_features_are_deterministic_and_shaped():
    images = load_dataset("digits").images[:10]
    model = _model()
    first, second = model(images), model(images)
    assert first["h"].shape == (10, 64) and first["z"].shape == (10, 32)
    np.testing.assert_allclose(ops.convert_to_numpy(first["z"]),
                               ops.convert_to_numpy(second["z"]))


def test_training_call_makes_two_different_views():
    images = load_dataset("digits").images[:16]
    views = _model().make_views(images)
    assert list(views) == ["a", "b"]
    assert not np.allclose(ops.convert_to_numpy(views["a"]), ops.convert_to_numpy(views["b"]))


def test_coupled_weight_decay_adds_half_lambda_squared_norm():
    model = _model(weight_decay=0.1)
    model(load_dataset("digits").images[:2])
    expected = 0.05 * sum(float(np.sum(ops.convert_to_numpy(w) ** 2))
                          for w in model.trainable_weights)
    assert float(model.weight_decay_term()) == pytest.approx(expected, rel=1e-5)


def test_bad_settings_are_rejected():
    backbone = build_backbone("convnet", (8, 8, 1), width=16)
    with pytest.raises(ValueError, match="at least 2"):
        SimCLR(backbone, SimCLR.augmentation("digits"), num_clusters=1)
    with pytest.raises(ValueError, match="temperature"):
        SimCLR(backbone, SimCLR.augmentation("digits"), num_clusters=10,
               options={"temperature": 0})


def test_build_method_applies_the_configured_backbone_width():
    from mixem_tf.methods import build_method
    from mixem_tf.settings import TrainConfig

    for width, features in ((None, 128), (8, 32)):
        config = TrainConfig(dataset="digits", method="simclr", backbone_width=width).resolved()
        model = build_method(config, (8, 8, 1), num_clusters=10)
        assert model(np.zeros((2, 8, 8, 1), np.uint8))["h"].shape == (2, features)
