"""Checkpoint verification: checksums, corrupt files skipped for the newest intact one, a
rebuilt checkpoint.json, old checkpoints without checksums, file modes from the umask."""

import json
import os
import stat
import warnings

import numpy as np
import pytest
import keras

from mixem_tf import checkpoints

pytestmark = pytest.mark.core


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


@pytest.fixture
def folder(tmp_path):
    """Checkpoints of epochs 1, 2, 3 (so 2 and 3 are kept), each of different weights."""
    for epoch in (1, 2, 3):
        checkpoints.save(tmp_path, epoch, _model(epoch), extra={"logs": {"loss": epoch / 10}})
    return tmp_path


def _latest(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = checkpoints.latest_checkpoint(folder)
    return found, [str(w.message) for w in caught if w.category is checkpoints.CheckpointWarning]


def _kernel(path):
    return dict(checkpoints.load_variables(path, "model"))


CORRUPTIONS = {
    "truncated": lambda data: data[: len(data) // 2],
    "zero-byte": lambda data: b"",
    "garbage": lambda data: os.urandom(len(data)),
    "text": lambda data: b"not a checkpoint\n" * 20,
    "one bit flipped": lambda data: data[:100] + bytes([data[100] ^ 1]) + data[101:],
}


def test_save_records_the_checksum_of_every_kept_checkpoint(folder):
    record = json.loads((folder / "checkpoint.json").read_text())
    assert record["epoch"] == 3 and record["file"] == "epoch-0003.npz"
    assert record["logs"] == {"loss": 0.3}
    assert sorted(record["checkpoints"]) == ["epoch-0002.npz", "epoch-0003.npz"]
    import hashlib

    for name, entry in record["checkpoints"].items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    found, notes = _latest(folder)
    assert found[0] == folder / "epoch-0003.npz" and found[1]["epoch"] == 3 and not notes
    assert "checkpoints" not in found[1]


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_corrupt_latest_checkpoint_is_named_and_skipped(folder, corruption):
    latest = folder / "epoch-0003.npz"
    latest.write_bytes(CORRUPTIONS[corruption](latest.read_bytes()))
    (path, record), notes = _latest(folder)
    assert path == folder / "epoch-0002.npz" and record["epoch"] == 2
    assert record["logs"] == {"loss": 0.2}  # the record of that epoch, not of the latest
    assert len(notes) == 1 and str(latest) in notes[0] and "epoch 2" in notes[0]
    checkpoints.restore(path, _model())


def test_no_intact_checkpoint_is_one_error_naming_every_file(folder):
    for name in ("epoch-0002.npz", "epoch-0003.npz"):
        (folder / name).write_bytes(b"garbage")
    with pytest.raises(checkpoints.CorruptCheckpointError) as error:
        checkpoints.latest_checkpoint(folder)
    assert "epoch-0002.npz" in str(error.value) and "epoch-0003.npz" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_latest_file_falls_back_too(folder):
    (folder / "epoch-0003.npz").unlink()
    (path, record), notes = _latest(folder)
    assert record["epoch"] == 2 and "epoch-0003.npz is missing" in notes[0]


@pytest.mark.parametrize("pointer", [b"{\"epoch\": 3, \"fi", b"\x00\xff" * 40, b"[1, 2]",
                                     b'{"epoch": "3", "file": "epoch-0003.npz"}'])
def test_an_unreadable_checkpoint_json_is_rebuilt_from_the_intact_files(folder, pointer):
    (folder / "checkpoint.json").write_bytes(pointer)
    (folder / "epoch-0003.npz").write_bytes(b"")  # and the newest file is empty
    (path, record), notes = _latest(folder)
    assert path == folder / "epoch-0002.npz" and record == {"epoch": 2,
                                                             "file": "epoch-0002.npz"}
    assert "checkpoint.json" in notes[0] and "ignored" in notes[0] and "empty" in notes[0]
    assert _kernel(path).keys() == _kernel(folder / "epoch-0002.npz").keys()
    # The next save writes a valid pointer again.
    checkpoints.save(folder, 3, _model())
    assert _latest(folder)[0][1]["epoch"] == 3 and not _latest(folder)[1]


def test_a_missing_checkpoint_json_beside_files_is_rebuilt(folder):
    (folder / "checkpoint.json").unlink()
    (path, record), notes = _latest(folder)
    assert record["epoch"] == 3 and "checkpoint.json is missing" in notes[0]


def test_an_unreadable_checkpoint_json_without_files_is_named(tmp_path):
    assert checkpoints.latest_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint.json").write_text("{oops")
    with pytest.raises(checkpoints.CorruptCheckpointError, match="checkpoint.json is not valid"):
        checkpoints.latest_checkpoint(tmp_path)


def test_checkpoints_from_before_checksums_still_load_and_fall_back(folder):
    # The old format: the pointer names one file, no checksum, no list of kept files.
    (folder / "checkpoint.json").write_text(json.dumps(
        {"epoch": 3, "file": "epoch-0003.npz", "logs": {"loss": 0.3}}))
    (path, record), notes = _latest(folder)
    assert record == {"epoch": 3, "file": "epoch-0003.npz", "logs": {"loss": 0.3}}
    assert not notes
    checkpoints.restore(path, _model())
    latest = folder / "epoch-0003.npz"
    latest.write_bytes(CORRUPTIONS["one bit flipped"](latest.read_bytes()))  # the CRC-32 sees it
    (path, record), notes = _latest(folder)
    assert record["epoch"] == 2 and "CRC" in notes[0]


def test_a_later_file_than_the_pointer_is_a_cut_short_save_and_ignored(folder):
    (folder / "epoch-0004.npz").write_bytes((folder / "epoch-0003.npz").read_bytes())
    (path, record), notes = _latest(folder)
    assert record["epoch"] == 3 and not notes


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_reading_a_corrupt_file_is_a_clear_error_never_a_pickle_hint(folder, corruption):
    path = folder / "epoch-0003.npz"
    path.write_bytes(CORRUPTIONS[corruption](path.read_bytes()))
    with pytest.raises(checkpoints.CorruptCheckpointError) as error:
        checkpoints.restore(path, _model())
    message = str(error.value)
    assert str(path) in message and "pickle" not in message.lower()


def test_a_single_npy_array_is_not_a_checkpoint(tmp_path):
    with open(tmp_path / "x.npz", "wb") as handle:
        np.save(handle, np.zeros(3))
    with pytest.raises(checkpoints.CorruptCheckpointError, match="not an .npz archive"):
        checkpoints.load_variables(tmp_path / "x.npz", "model")


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_are_created_with_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        checkpoints.save(tmp_path, 1, _model())
        checkpoints.write_json_atomic(tmp_path / "config.json", {"a": 1})
    finally:
        os.umask(previous)
    for name in ("epoch-0001.npz", "checkpoint.json", "config.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow  # backend-neutral: choosing the checkpoint; resume under JAX: test_mice
def test_resuming_past_a_corrupt_checkpoint_ends_as_a_clean_run(tmp_path):
    # A 2-epoch run; a copy whose epoch-2 checkpoint was truncated resumes from epoch 1 and
    # must end with exactly the weights of the original's epoch 2.
    import shutil

    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    config = TrainConfig(dataset="digits", method="simclr", epochs=2, batch_size=256,
                         backbone_width=8, readout_settings="sklearn")
    clean, damaged = tmp_path / "clean", tmp_path / "damaged"
    train_run(config, clean, verbose=0, deterministic=True)
    shutil.copytree(clean, damaged)
    latest = damaged / "checkpoints" / "epoch-0002.npz"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.warns(checkpoints.CheckpointWarning, match="epoch-0002.npz"):
        train_run(config, damaged, resume=True, verbose=0, deterministic=True)
    (path_a, record_a), _ = _latest(clean / "checkpoints")
    (path_b, record_b), notes = _latest(damaged / "checkpoints")
    assert record_a["epoch"] == record_b["epoch"] == 2 and not notes
    for prefix in ("model", "optimizer"):  # in saved order (layer names count up in-process)
        weights_a = checkpoints.load_variables(path_a, prefix)
        weights_b = checkpoints.load_variables(path_b, prefix)
        assert len(weights_a) == len(weights_b) > 0
        for (name, a), (_, b) in zip(weights_a, weights_b):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_looking_twice_warns_once(folder):
    (folder / "epoch-0003.npz").write_bytes(b"")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        first = checkpoints.latest_checkpoint(folder)  # e.g. train_run's check, then restore
        second = checkpoints.latest_checkpoint(folder)
    assert first[1]["epoch"] == second[1]["epoch"] == 2
    assert len([w for w in caught if w.category is checkpoints.CheckpointWarning]) == 1
