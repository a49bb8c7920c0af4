"""The method plug-in framework: registry, options, legacy settings, hooks, Keras saving.

Runs on the current backend; CI runs it under TensorFlow and under JAX (core).
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

from mixem_tf.methods import METHODS, SimCLR, build_method, method_class, register_method
from mixem_tf.settings import TrainConfig

pytestmark = pytest.mark.core


def test_registry_finds_every_method_and_names_the_known_ones():
    assert {"mixem", "simclr", "cdec"} <= set(METHODS)
    assert method_class("cdec").views == ("clean", "a", "b")
    with pytest.raises(ValueError, match="unknown method 'dino'; choose from .*mixem"):
        method_class("dino")
    with pytest.raises(ValueError, match="new, non-empty name"):
        register_method(type("Twin", (SimCLR,), {"name": "simclr"}))


def test_options_are_the_methods_own_and_checked_in_one_line():
    config = TrainConfig.from_dict({"dataset": "digits", "method": "simclr",
                                    "projection_dim": 64}).resolved()
    assert config.options == {"temperature": 0.5, "projection_dim": 64, "hidden_dim": 512,
                              "constant_epochs": 10}
    nested = TrainConfig.from_dict({"dataset": "digits", "options": {"projection_dim": 8},
                                    "method": "cdec"}).resolved()
    assert nested.options["projection_dim"] == 8 and nested.options["anchor_weight"] == 1.0
    for settings, problem in [({"method": "cdec", "sharpening": "max"},
                               "sharpening: not a setting of method cdec"),
                              ({"method": "cdec", "anchor_weight": -1}, "anchor_weight must be >= 0"),
                              ({"sharpening": "soft"}, "sharpening must be one of"),
                              ({"num_components": 1}, "num_components must be >= 2"),
                              ({"batch_size": 1}, "batch_size must be at least 2")]:
        with pytest.raises(ValueError, match=problem):
            TrainConfig.from_dict({"dataset": "digits", **settings}).resolved()


def test_each_method_owns_its_recipe_and_protocol():
    mixem = TrainConfig(dataset="cifar10", method="mixem").resolved()
    cdec = TrainConfig(dataset="cifar10", method="cdec").resolved()
    assert (mixem.backbone, mixem.lr, mixem.batch_size, mixem.evaluate_on) == \
        ("resnet18", 1e-4, 512, "test")
    assert (cdec.backbone, cdec.stem, cdec.lr, cdec.weight_decay, cdec.batch_size,
            cdec.epochs, cdec.image_size, cdec.evaluate_on) == \
        ("resnet34", "imagenet", 3e-4, 0.0, 128, 2000, 32, "all")
    user = TrainConfig(dataset="cifar10", method="cdec", lr=1e-3, image_size=224).resolved()
    assert (user.lr, user.image_size) == (1e-3, 224)


@pytest.mark.parametrize("method", ["mixem", "simclr", "cdec", "mice"])
def test_a_folder_on_a_cpu_gets_the_small_datasets_settings_at_32_px(method):
    small = TrainConfig(dataset="fashion_mnist", method=method).resolved()
    for config in (TrainConfig(dataset="folder:/photos", method=method, backbone="convnet"),
                   TrainConfig(dataset="folder:/photos", method=method)):
        cpu = config.resolved(gpu=False)
        assert (cpu.backbone, cpu.image_size, cpu.epochs) == ("convnet", 32, 30)
        assert (cpu.lr, cpu.batch_size, cpu.options) == (small.lr, small.batch_size, small.options)
    assert TrainConfig(dataset="folder:/photos", method=method, backbone="convnet",
                       epochs=5).resolved().epochs == 5  # the user's settings win
    if method != "mice":  # MiCE's own folder recipe is CPU-sized already
        assert TrainConfig(dataset="folder:/photos", method=method).resolved().backbone != \
            "convnet"
        asked = TrainConfig(dataset="folder:/photos", method=method, backbone="resnet18")
        assert asked.resolved(gpu=False).image_size == 96  # the user asked for the GPU recipe


def test_settings_saved_before_methods_owned_options_still_load():
    legacy = {"method": "simclr", "dataset": "digits", "epochs": 3, "temperature": 0.2,
              "projection_dim": 16, "num_components": None, "embedding_dim": 32,
              "sharpening": "max", "term_weights": {}, "start_epochs": {},
              "constant_epochs": 10, "extra": {}, "optimizer": "adam"}
    config = TrainConfig.from_saved(legacy)
    assert config.options == {"temperature": 0.2, "projection_dim": 16, "constant_epochs": 10}
    assert build_method(config.resolved(), (8, 8, 1), 10).options.projection_dim == 16
    mixem = TrainConfig.from_saved({**legacy, "method": "mixem", "term_weights": {"pull": 0.01},
                                    "extra": {"hidden_dim": 64}})
    assert mixem.options["term_weights"] == {"pull": 0.01} and mixem.options["hidden_dim"] == 64


# -- lifecycle hooks -------------------------------------------------------------------------
CALLS = []


class HookProbe(SimCLR):
    """SimCLR that counts its hooks: two counters updated inside the compiled step."""

    name, title = "hook_probe", "hook probe"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.after_loss = keras.Variable(0.0, trainable=False, name="after_loss")
        self.after_step = keras.Variable(0.0, trainable=False, name="after_step")
        self.last_bias = keras.Variable(ops.zeros((2,)), trainable=False, name="last_bias")

    def initialize_state(self, images):
        CALLS.append(("initialize", len(images)))

    def update_after_loss(self, outputs):
        self.after_loss.assign(self.after_loss + ops.cast(ops.shape(outputs["a"]["z"])[0] > 0,
                                                          "float32"))

    def update_after_step(self):
        self.after_step.assign(self.after_step + 1.0)
        bias = self.projection.output_layer.bias   # reads the weights the optimiser just set
        self.last_bias.assign(ops.copy(bias[:2]))

    def on_train_epoch_end(self, epoch, logs):
        CALLS.append(("epoch_end", epoch, float(self.after_step.numpy())))
        logs["probe"] = float(self.after_step.numpy())


@pytest.fixture
def hook_probe():
    METHODS[HookProbe.name] = HookProbe
    CALLS.clear()
    yield
    del METHODS[HookProbe.name]


def test_hooks_run_where_and_when_they_say(tmp_path, hook_probe):
    from mixem_tf.training import train_run

    config = TrainConfig(dataset="digits", method="hook_probe", epochs=2, batch_size=256,
                         backbone_width=8, readout_settings="sklearn", options={"hidden_dim": 16})
    result = train_run(config, tmp_path / "run", verbose=0)
    steps = 1797 // 256
    assert CALLS == [("initialize", 1797), ("epoch_end", 0, steps), ("epoch_end", 1, 2 * steps)]
    model = result.model
    assert float(model.after_step.numpy()) == float(model.after_loss.numpy()) == 2 * steps
    np.testing.assert_array_equal(model.last_bias.numpy(),
                                  model.projection.output_layer.bias.numpy()[:2])
    assert result.history["probe"] == [steps, 2 * steps]

    CALLS.clear()  # resume: the checkpoint holds the state, so no initialize_state
    resumed = train_run(None, tmp_path / "run", resume=True, epochs=3, verbose=0)
    assert CALLS == [("epoch_end", 2, 3 * steps)]
    assert float(resumed.model.after_step.numpy()) == 3 * steps


# -- Keras-native saving ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ["mixem", "simclr", "cdec"])
def test_a_trained_model_saves_and_loads_as_a_keras_file(tmp_path, method):
    from mixem_tf.data import load_dataset
    from mixem_tf.feeding import EpochBatches

    config = TrainConfig(dataset="digits", method=method, backbone_width=8,
                         options={"hidden_dim": 16}).resolved()
    images = load_dataset("digits").images
    model = build_method(config, (8, 8, 1), 10)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    feeder = EpochBatches(images, 256, seed=0, end_epoch=1)
    model.fit(((b,) for b in feeder), steps_per_epoch=feeder.steps_per_epoch, epochs=1,
              verbose=0, shuffle=False)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded) is type(model) and loaded.options == model.options
    before, after = model.predict(images[:64], verbose=0), loaded.predict(images[:64], verbose=0)
    assert set(before) == set(after)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], atol=1e-6, err_msg=name)
    fresh = build_method(config, (8, 8, 1), 10).predict(images[:64], verbose=0)
    assert not np.allclose(fresh["h"], before["h"])  # the weights came from the file
    json.loads(json.dumps(loaded.get_config()))  # the config is plain JSON


def test_a_study_without_an_objective_uses_the_methods_measured_one(tmp_path):
    from mixem_tf.tuning.objectives import OBJECTIVES
    from mixem_tf.tuning.study import Study

    assert {cls.tuning_objective for cls in METHODS.values()} <= set(OBJECTIVES)
    chosen = {name: Study(TrainConfig(dataset="digits", method=name), {}, tmp_path).objective
              for name in ("mixem", "cdec")}
    assert chosen == {"mixem": "stability", "cdec": "consensus"}
    config = TrainConfig(dataset="digits", method="mixem")
    assert Study(config, {}, tmp_path, objective="silhouette").objective == "silhouette"
