"""Schedules, checkpoints and feeding: the parts of the training loop, one by one."""

import json
import math
import re

import numpy as np
import pytest
import keras

from mixem_tf import checkpoints
from mixem_tf.feeding import EpochBatches, epoch_permutation
from mixem_tf.schedules import ConstantThenCosine

pytestmark = pytest.mark.core


def _official_learning_rates(base, epochs, warmup=10):
    """Each epoch's learning rate in MIX'EM's train.py loop: epochs counted from 1, and
    CosineAnnealingLR(T_max=epochs) (closed form) stepped after every epoch >= `warmup`."""
    steps, rates = 0, []
    for epoch_counter in range(1, epochs + 1):
        rates.append(base * (1 + math.cos(math.pi * steps / epochs)) / 2)
        if epoch_counter >= warmup:
            steps += 1
    return rates


@pytest.mark.parametrize("epochs", [200, 25, 10])
def test_constant_then_cosine_matches_a_simulation_of_the_official_loop(epochs):
    schedule = ConstantThenCosine(1e-4, steps_per_epoch=5, constant_epochs=10,
                                  cosine_epochs=epochs)
    for epoch, expected in enumerate(_official_learning_rates(1e-4, epochs)):
        for step in (epoch * 5, epoch * 5 + 4):
            assert float(schedule(step)) == pytest.approx(expected, rel=1e-5), epoch
    assert sum(rate == 1e-4 for rate in _official_learning_rates(1e-4, epochs)) == 10


def test_schedule_rejects_bad_values():
    with pytest.raises(ValueError, match="learning rate"):
        ConstantThenCosine(0.0, 5)


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_checkpoint_round_trip_restores_model_and_optimizer(tmp_path):
    model = _tiny_model()
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    checkpoints.save(tmp_path, 1, model, model.optimizer)
    other = _tiny_model()
    path, record = checkpoints.latest_checkpoint(tmp_path)
    assert record["epoch"] == 1
    checkpoints.restore(path, other, other.optimizer)
    for a, b in zip(model.variables + model.optimizer.variables,
                    other.variables + other.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_checkpoints_keep_the_last_two_and_point_to_the_newest(tmp_path):
    model = _tiny_model()
    for epoch in (1, 2, 3):
        checkpoints.save(tmp_path, epoch, model)
    assert sorted(p.name for p in tmp_path.glob("epoch-*.npz")) == ["epoch-0002.npz",
                                                                   "epoch-0003.npz"]
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 3


def test_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = _tiny_model()
    checkpoints.save(tmp_path, 1, model)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(tmp_path, 2, model)
    path, record = checkpoints.latest_checkpoint(tmp_path)
    assert record["epoch"] == 1 and path.name == "epoch-0001.npz"
    assert not list(tmp_path.glob("*.tmp"))
    checkpoints.restore(path, _tiny_model())


def test_checkpoint_of_another_architecture_is_an_error(tmp_path):
    checkpoints.save(tmp_path, 1, _tiny_model())
    bigger = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    with pytest.raises(checkpoints.CheckpointMismatchError, match="shape"):
        checkpoints.restore(tmp_path / "epoch-0001.npz", bigger)


def test_epoch_batches_cover_each_image_once_and_depend_only_on_seed_and_epoch():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    feeder = EpochBatches(images, 3, seed=4, start_epoch=2, end_epoch=4)
    batches = [b.ravel() for b in feeder]
    assert feeder.steps_per_epoch == 3 and len(batches) == 6  # incomplete batches dropped
    assert np.array_equal(np.concatenate(batches[:3]), epoch_permutation(10, 4, 2)[:9])
    assert np.array_equal(np.concatenate(batches[3:]), epoch_permutation(10, 4, 3)[:9])
    resumed = EpochBatches(images, 3, seed=4, start_epoch=3, end_epoch=4, prefetch=0)
    assert all(np.array_equal(a, b.ravel()) for a, b in zip(batches[3:], resumed))


def test_epoch_batches_shards_split_each_epoch_between_workers():
    images = np.arange(12, dtype=np.uint8).reshape(12, 1, 1, 1)
    shards = [list(EpochBatches(images, 2, seed=1, shard=(i, 2))) for i in range(2)]
    seen = np.concatenate([b.ravel() for shard in shards for b in shard])
    assert sorted(seen.tolist()) == list(range(12))


def _reference_batches(images, batch, seed, epochs, shard=(0, 1)):
    """The feed's contract, spelled out: epoch e's order is epoch_permutation(N, seed, e), and
    worker i of n takes batches i, i + n, ... of it."""
    steps = (len(images) // batch) // shard[1]
    for epoch in epochs:
        order = epoch_permutation(len(images), seed, epoch)
        for step in range(steps):
            b = step * shard[1] + shard[0]
            yield images[order[b * batch:(b + 1) * batch]]


@pytest.mark.parametrize("mapped_bytes", [2**30, 0])  # rows read through the map; from the file
@pytest.mark.parametrize("workers, prefetch", [(1, 0), (3, 2), (2, 8)])
def test_gathering_threads_give_the_batches_of_one_thread_from_a_memory_map(
        tmp_path, monkeypatch, workers, prefetch, mapped_bytes):
    from mixem_tf.data import cache

    monkeypatch.setattr(cache, "MAPPED_BYTES", mapped_bytes)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (103, 4, 5, 3), dtype=np.uint8)
    data.tofile(tmp_path / "images.u8")
    mapped = np.memmap(tmp_path / "images.u8", np.uint8, "r", shape=data.shape)
    feeder = EpochBatches(mapped, 8, seed=7, start_epoch=1, end_epoch=4, shard=(1, 2),
                          workers=workers, prefetch=prefetch)
    got = list(feeder)
    expected = list(_reference_batches(data, 8, 7, range(1, 4), shard=(1, 2)))
    assert len(got) == len(expected) == 3 * 6
    for a, b in zip(got, expected):
        assert a.dtype == np.uint8 and np.array_equal(a, b)


def test_the_tf_data_feed_gives_the_same_batches():
    tf = pytest.importorskip("tensorflow")
    images = np.random.default_rng(1).integers(0, 256, (50, 3, 3, 1), dtype=np.uint8)
    feeder = EpochBatches(images, 6, seed=3, start_epoch=2, end_epoch=5, workers=2)
    got = [batch.numpy() for (batch,) in feeder.tf_dataset()]
    expected = list(_reference_batches(images, 6, 3, range(2, 5)))
    assert len(got) == len(expected) == 24
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    assert feeder.tf_dataset().element_spec[0] == tf.TensorSpec((6, 3, 3, 1), tf.uint8)


def test_epoch_batches_reject_bad_input():
    with pytest.raises(ValueError, match="batch size"):
        EpochBatches(np.zeros((4, 2, 2, 1), np.uint8), 5)
    with pytest.raises(ValueError, match="uint8"):
        EpochBatches(np.zeros((4, 2, 2, 1), np.float32), 2)


class _FixedMixture:
    """Stands in for a model: predict() returns the next π from a list, one per epoch."""

    def __init__(self, pis):
        self.pis = iter(pis)

    def predict(self, images, batch_size, verbose):
        return {"pi": next(self.pis)}


def _pi(assignments, components=4):
    return np.eye(components)[assignments]


def test_component_monitor_logs_occupancy_and_warns_only_when_collapse_persists(tmp_path, capsys):
    from mixem_tf.callbacks import ClusterSizeMonitor

    healthy, collapsed = _pi([0, 1, 2, 3, 0, 1, 2, 3]), _pi([2, 2, 2, 2, 2, 2, 0, 1])
    epochs = [collapsed, healthy, collapsed, collapsed, healthy, collapsed]
    monitor = ClusterSizeMonitor(images=None, feature="pi", path=tmp_path / "occupancy.jsonl")
    monitor.set_model(_FixedMixture(epochs))
    monitor.set_params({"epochs": len(epochs)})
    warned, logs_seen = [], []
    for epoch in range(len(epochs)):
        logs = {}
        monitor.on_epoch_end(epoch, logs)
        logs_seen.append(logs)
        warned.append("warning: epoch" in capsys.readouterr().err)
    # one collapsed epoch alone is quiet; two in a row warn; the last epoch always reports
    assert warned == [False, False, False, True, False, True]
    assert logs_seen[0] == {"largest_cluster": 0.75, "clusters_used": 3.0}
    assert logs_seen[1] == {"largest_cluster": 0.25, "clusters_used": 4.0}
    lines = [json.loads(line) for line in (tmp_path / "occupancy.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert lines[0]["occupancy"] == [0.125, 0.125, 0.75, 0.0]


def test_a_large_cluster_early_in_a_long_run_is_not_a_collapse(capsys):
    from mixem_tf.callbacks import ClusterSizeMonitor

    healthy, collapsed = _pi([0, 1, 2, 3, 0, 1, 2, 3]), _pi([2, 2, 2, 2, 2, 2, 0, 1])
    recovers = [collapsed] * 8 + [healthy] * 22  # as the shipped recipes' runs do
    stays = [collapsed] * 30
    for epochs, expected in ((recovers, []), (stays, [10, 30])):
        monitor = ClusterSizeMonitor(images=None, feature="pi")
        monitor.set_model(_FixedMixture(epochs))
        monitor.set_params({"epochs": len(epochs)})
        warned = []
        for epoch in range(len(epochs)):
            monitor.on_epoch_end(epoch, {})
            if "warning: epoch" in capsys.readouterr().err:
                warned.append(epoch + 1)
        assert warned == expected  # a third of the run, then the last epoch


def test_run_dir_behind_a_link_is_emptied_or_created_through_the_link(tmp_path):
    from mixem_tf.training import prepare_run_dir

    disk = tmp_path / "disk"
    (disk / "old" / "checkpoints").mkdir(parents=True)
    (disk / "old" / "config.json").write_text("{}")
    kept = tmp_path / "kept.txt"
    kept.write_text("not the run's")
    (disk / "old" / "notes").symlink_to(kept)   # a link inside the run: removed, not followed
    run = tmp_path / "runs" / "old"
    run.parent.mkdir()
    run.symlink_to(disk / "old")
    prepare_run_dir(run, overwrite=True)
    assert run.is_symlink() and list(run.iterdir()) == []
    assert kept.read_text() == "not the run's"

    dangling = tmp_path / "runs" / "new"
    dangling.symlink_to(disk / "new")
    prepare_run_dir(dangling, overwrite=False)
    assert dangling.is_symlink() and (disk / "new").is_dir()

    plain = tmp_path / "runs" / "plain"
    prepare_run_dir(plain, overwrite=False)
    (plain / "history.csv").write_text("epoch\n")
    prepare_run_dir(plain, overwrite=False)        # without overwrite nothing is removed
    assert (plain / "history.csv").is_file()


def test_init_from_needs_a_run_with_a_checkpoint(tmp_path):
    from mixem_tf.training import check_init_from

    with pytest.raises(ValueError, match="holds no run"):
        check_init_from(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"settings": {}}))
    with pytest.raises(ValueError, match="--init-from: .* has no checkpoint to start from"):
        check_init_from(tmp_path)  # a run stopped before its first epoch ended


@pytest.mark.parametrize("settings, problem", [
    ({"image_size": "abc"}, "image_size must be an integer, got 'abc'"),
    ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
    ({"seed": True}, "seed must be an integer, got True"),
    ({"lr": "fast"}, "lr must be a number, got 'fast'"),
    ({"temperature": None}, "temperature must be a number, got None"),
    ({"term_weights": [1]}, "term_weights must be a JSON object"),
    ({"method": "simclr", "num_components": 3}, "num_components: not a setting of method simclr"),
    ({"options": [1]}, "options must be a JSON object"),
])
def test_settings_of_the_wrong_type_are_named(settings, problem):
    from mixem_tf.settings import TrainConfig

    with pytest.raises(ValueError, match=re.escape(problem)):
        TrainConfig.from_dict({"dataset": "digits", **settings}).resolved()


def test_settings_of_the_right_type_pass():
    from mixem_tf.settings import TrainConfig

    config = TrainConfig(dataset="digits", lr=1, clusters=None).resolved()
    assert config.lr == 1 and config.image_size == 8  # an int lr is a number; recipe fills None


def test_output_that_is_not_a_terminal_gets_one_line_per_epoch(capsys):
    from mixem_tf.callbacks import EpochLines

    clock = iter([0.0, 12.4, 20.0, 95.0])
    lines = EpochLines(clock=lambda: next(clock))
    lines.set_params({"epochs": 2, "verbose": 0})
    for epoch, logs in enumerate([{"loss": 4.123456, "largest_cluster": 0.75},
                                  {"loss": 3.5, "largest_cluster": 0.25}]):
        lines.on_epoch_begin(epoch)
        lines.on_epoch_end(epoch, logs)
    assert capsys.readouterr().out.splitlines() == [
        "epoch 1/2: 12 s, loss 4.1235, largest_cluster 0.75",
        "epoch 2/2: 1 min 15 s, loss 3.5, largest_cluster 0.25"]
