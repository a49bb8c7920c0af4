"""Serving's parts on their own: version discovery, the batcher, the server's flags."""

import shutil
import threading

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from serving.batching import Batcher  # noqa: E402
from serving.models import ModelVersions, find_versions  # noqa: E402
from serving.server import build_parser  # noqa: E402


class FakeVersion:
    """Doubles its input; counts calls; raises InvalidArgumentError on a negative value."""

    def __init__(self):
        self.calls = 0
        self.started = threading.Event()

    def run(self, signature, inputs):
        self.calls += 1
        x = inputs["x"]
        if (x < 0).any():
            raise tf.errors.InvalidArgumentError(None, None, "negative input")
        return {"y": x * 2, "sum": x.reshape(len(x), -1).sum(axis=1)}


def test_find_versions_takes_positive_integer_folders_with_a_saved_model(tmp_path):
    for name in ("1", "3", "10", "0", "abc", "-2", ".tmp-4", "7"):
        (tmp_path / name).mkdir()
    for name in ("1", "3", "0", "abc", ".tmp-4"):
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    (tmp_path / "10" / "saved_model.pbtxt").write_text("")
    assert find_versions(tmp_path) == [1, 3, 10]
    assert find_versions(tmp_path / "missing") == []


def test_broken_and_removed_versions_fall_back_to_a_loadable_one(tmp_path, caplog):
    from serving_fixtures import write_model

    write_model(tmp_path, 1)
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "saved_model.pb").write_bytes(b"not a SavedModel")
    models = ModelVersions("m", tmp_path, poll_seconds=0)
    models.start()
    assert models.current.version == 1
    assert "cannot load version 2" in caplog.text
    with models.acquire() as loaded:
        assert loaded.version == 1
    shutil.copytree(tmp_path / "1", tmp_path / "3")
    models.poll()
    assert models.current.version == 3
    shutil.rmtree(tmp_path / "3")  # the served version removed: the next one down is served
    models.poll()
    assert models.current.version == 1
    assert dict(models.statuses()) == {3: "END", 1: "AVAILABLE"}


def test_missing_base_path_is_a_user_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="base path"):
        ModelVersions("m", tmp_path / "nope", poll_seconds=0).start()


def test_batcher_merges_up_to_max_size_and_splits_rows():
    version = FakeVersion()
    batcher = Batcher(max_batch_size=4, timeout_seconds=5.0)
    try:
        xs = [np.full((1, 2), i, dtype=np.float32) for i in range(4)]
        futures = [batcher.submit(version, "s", {"x": x}) for x in xs]
        results = [f.result(timeout=10) for f in futures]  # full at 4 rows: no 5 s wait
        assert version.calls == 1
        for x, result in zip(xs, results):
            np.testing.assert_array_equal(result["y"], x * 2)
            np.testing.assert_array_equal(result["sum"], x.sum(axis=1))
    finally:
        batcher.stop()


def test_batcher_keeps_shapes_apart_runs_big_requests_alone_and_times_out():
    version = FakeVersion()
    batcher = Batcher(max_batch_size=4, timeout_seconds=0.05)
    try:
        a = batcher.submit(version, "s", {"x": np.ones((1, 2), np.float32)})
        b = batcher.submit(version, "s", {"x": np.ones((1, 3), np.float32)})
        big = batcher.submit(version, "s", {"x": np.ones((5, 2), np.float32)})
        assert big.result(timeout=10)["y"].shape == (5, 2)
        assert a.result(timeout=10)["y"].shape == (1, 2)
        assert b.result(timeout=10)["y"].shape == (1, 3)
        assert version.calls == 3
    finally:
        batcher.stop()


def test_batcher_isolates_the_request_that_fails():
    version = FakeVersion()
    batcher = Batcher(max_batch_size=3, timeout_seconds=5.0)
    try:
        futures = [batcher.submit(version, "s", {"x": np.full((1, 1), v, np.float32)})
                   for v in (1, -1, 2)]
        assert futures[0].result(timeout=10)["y"][0, 0] == 2
        assert futures[2].result(timeout=10)["y"][0, 0] == 4
        with pytest.raises(tf.errors.InvalidArgumentError):
            futures[1].result(timeout=10)
    finally:
        batcher.stop()


def test_batcher_stop_runs_waiting_requests():
    version = FakeVersion()
    batcher = Batcher(max_batch_size=8, timeout_seconds=60.0)
    future = batcher.submit(version, "s", {"x": np.ones((1, 1), np.float32)})
    batcher.stop()
    assert future.result(timeout=1)["y"][0, 0] == 2


@pytest.mark.parametrize("flag", ["--max_batch_size=0", "--port=-1",
                                  "--file_system_poll_wait_seconds=-1", "--max_request_bytes=0"])
def test_server_rejects_bad_flags(flag, capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--model_base_path=x", flag])
    assert caught.value.code == 2


@pytest.mark.parametrize("format", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "WEBP-lossless"])
def test_image_size_reads_the_header_of_every_decodable_format(format):
    import io

    from PIL import Image

    from serving.image_size import image_size

    buffer = io.BytesIO()
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 61, 3), np.uint8))
    image.save(buffer, format.split("-")[0], **({"lossless": True} if "lossless" in format else {}))
    data = buffer.getvalue()
    assert image_size(data) == (37, 61)
    decoded = tf.io.decode_image(data, expand_animations=False)  # as the exported graph does
    assert decoded.shape[:2] == (37, 61)
    assert image_size(data[:8]) is None and image_size(b"not an image") is None


def test_a_new_version_replays_its_warmup_file_before_it_serves(tmp_path, caplog):
    from tensorflow_serving.apis import predict_pb2

    from export.warmup import warmup_requests, write_warmup
    from serving_fixtures import images, write_model

    caplog.set_level("INFO")
    path = write_model(tmp_path, 1)
    write_warmup(path, warmup_requests(images(2, 8, 8, 3), "m"))
    models = ModelVersions("m", tmp_path, poll_seconds=0)
    models.start()
    assert models.current.calls == 2  # both signatures ran before the version was served
    assert "version 1 warmed up with 2 requests" in caplog.text
    # A warm-up request the model cannot run: the version is refused, the old one serves.
    path = write_model(tmp_path, 2)
    bad = predict_pb2.PredictRequest()
    bad.model_spec.signature_name = "nope"
    write_warmup(path, [bad])
    models.poll()
    assert models.current.version == 1
    assert "cannot load version 2" in caplog.text and "'nope'" in caplog.text
