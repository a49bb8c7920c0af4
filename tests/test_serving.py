"""The TF Serving-compatible server, called with the stock tensorflow_serving stubs."""

import contextlib
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
grpc = pytest.importorskip("grpc")
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving import server as server_cli  # noqa: E402
from serving_fixtures import (  # noqa: E402
    images,
    outputs_of,
    own_outputs,
    png_bytes,
    png_header,
    predict_request,
    write_model,
)

CODE = grpc.StatusCode


@pytest.fixture(scope="session")
def saved_versions(tmp_path_factory):
    """Two SavedModels (different weights), saved once and copied into each test's base path."""
    root = tmp_path_factory.mktemp("saved")
    return {1: write_model(root, 1, seed=0), 2: write_model(root, 2, seed=1)}


def make_base(tmp_path, saved_versions, versions=(1,)):
    base = tmp_path / "models" / "mixem"
    base.mkdir(parents=True)
    for version in versions:
        shutil.copytree(saved_versions[version], base / str(version))
    return base


def start_server(base, *flags):
    args = server_cli.build_parser().parse_args(
        ["--port=0", "--model_name=mixem", f"--model_base_path={base}", *flags])
    return server_cli.start(args)


@contextlib.contextmanager
def serving(base, *flags):
    """A running server on `base` and stubs for it; stopped on exit."""
    running = start_server(base, *flags)
    try:
        yield running, Stubs(running.port)
    finally:
        running.stop(1)


class Stubs:
    def __init__(self, port):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.predict = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)


@pytest.fixture(scope="module")
def served(tmp_path_factory, saved_versions):
    base = make_base(tmp_path_factory.mktemp("served"), saved_versions)
    running = start_server(base, "--file_system_poll_wait_seconds=0",
                           "--max_images_per_request=8", "--max_request_bytes=300000")
    yield running, Stubs(running.port), saved_versions[1]
    running.stop(1)


def test_predict_equals_the_savedmodel_for_pixels_and_bytes(served):
    running, stubs, path = served
    x = images(3)
    response = stubs.predict.Predict(predict_request({"images": x}), timeout=30)
    assert response.model_spec.name == "mixem"
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    got, want = outputs_of(response), own_outputs(path, "serving_default", {"images": x})
    assert set(got) == {"cluster", "probabilities", "distances", "embedding"}
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6)
    assert got["cluster"].dtype == np.int64

    encoded = np.array([png_bytes(image) for image in x], dtype=object)
    response = stubs.predict.Predict(
        predict_request({"image_bytes": encoded}, signature="serving_bytes"), timeout=30)
    got = outputs_of(response)
    want = own_outputs(path, "serving_bytes", {"image_bytes": encoded})
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6)


def test_output_filter_and_explicit_version(served):
    _, stubs, _ = served
    response = stubs.predict.Predict(
        predict_request({"images": images(2)}, version=1, output_filter=["cluster"]), timeout=30)
    assert list(response.outputs) == ["cluster"]
    assert tf.make_ndarray(response.outputs["cluster"]).shape == (2,)


def test_metadata_lists_both_signatures(served):
    _, stubs, _ = served
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "mixem"
    response = stubs.predict.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    defs = signatures.signature_def
    assert set(defs) == {"serving_default", "serving_bytes"}
    assert defs["serving_default"].inputs["images"].dtype == tf.uint8.as_datatype_enum
    assert defs["serving_bytes"].inputs["image_bytes"].dtype == tf.string.as_datatype_enum
    assert set(defs["serving_bytes"].outputs) == {"cluster", "probabilities", "distances",
                                                   "embedding"}


def test_model_status_is_available(served):
    _, stubs, _ = served
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "mixem"
    response = stubs.model.GetModelStatus(request, timeout=30)
    [status] = response.model_version_status
    assert status.version == 1
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0


def _claim(shape, dtype=None, values=(0,), signature=""):
    """A small message whose header claims `shape`: one repeated value, which TensorFlow
    would broadcast to the whole shape."""
    if dtype is None:
        request = predict_request({"images": images(1)}, signature=signature)
        tensor = request.inputs["images"]
        tensor.ClearField("tensor_content")
        tensor.int_val.extend(values)
    else:
        request = predict_request({"image_bytes": np.array([b"x"], dtype=object)},
                                  signature="serving_bytes")
        tensor = request.inputs["image_bytes"]
    tensor.tensor_shape.ClearField("dim")
    for size in shape:
        tensor.tensor_shape.dim.add(size=size)
    return request


def _spec(request, **fields):
    for key, value in fields.items():
        setattr(request.model_spec, key, value)
    return request


def _bad_predicts():
    """case → (status, a fragment of the message, request). Where TF Serving has the check,
    the message is its own; the source file is named."""
    x = images(1)
    content = predict_request({"images": x})
    content.inputs["images"].tensor_content = content.inputs["images"].tensor_content[:-1]
    extra = _claim((1, 2, 2, 1), values=(0, 1, 2, 3, 4))
    return {
        "unknown model": (CODE.NOT_FOUND, "'other'", predict_request({"images": x},
                                                                     model="other")),
        "unknown version": (CODE.NOT_FOUND, "version 7", predict_request({"images": x},
                                                                         version=7)),
        # server_core.cc, ServableRequestFromModelSpec
        "empty model name": (CODE.INVALID_ARGUMENT, "ModelSpec has no name specified.",
                             predict_request({"images": x}, model="")),
        # server_core.cc, GetModelVersionForLabel (no labels are configured)
        "version label": (CODE.INVALID_ARGUMENT, "Unrecognized servable version label: stable",
                          _spec(predict_request({"images": x}), version_label="stable")),
        # predict_util.cc, RunPredict
        "unknown signature": (CODE.FAILED_PRECONDITION,
                              'Serving signature key "nope" not found.',
                              predict_request({"images": x}, signature="nope")),
        "unknown input": (CODE.INVALID_ARGUMENT, "images", predict_request({"pixels": x})),
        "wrong dtype": (CODE.INVALID_ARGUMENT, "DT_UINT8",
                        predict_request({"images": x.astype("float32")})),
        "wrong rank": (CODE.INVALID_ARGUMENT, "rank 4", predict_request({"images": x[0]})),
        # predict_util.cc, PreProcessPrediction
        "unknown output": (CODE.INVALID_ARGUMENT, "output tensor alias not found in signature: "
                           "logits", predict_request({"images": x}, output_filter=["logits"])),
        "duplicate output": (CODE.INVALID_ARGUMENT, "duplicate output tensor alias: cluster",
                             predict_request({"images": x},
                                             output_filter=["cluster", "cluster"])),
        "corrupt bytes": (CODE.INVALID_ARGUMENT, "",
                          predict_request({"image_bytes": np.array([b"not an image"])},
                                          signature="serving_bytes")),
        # tfrt_predict_util.cc: a proto Tensor::FromProto refuses is "tensor parsing error"
        "negative dimension": (CODE.INVALID_ARGUMENT, "negative dimension",
                               _claim((-1, 8, 8, 1))),
        "more values than the shape": (CODE.INVALID_ARGUMENT, "5 values", extra),
        "short tensor_content": (CODE.INVALID_ARGUMENT, "tensor_content", content),
        "too many images": (CODE.RESOURCE_EXHAUSTED, "at most 8",
                            predict_request({"images": images(9)})),
        "too many bytes": (CODE.RESOURCE_EXHAUSTED, "",
                           predict_request({"images": images(1, 400, 400)})),
        "claimed rows of strings": (CODE.RESOURCE_EXHAUSTED, "60000000 rows",
                                    _claim((60_000_000,), dtype="string")),
        "claimed bytes": (CODE.RESOURCE_EXHAUSTED, "960000 bytes", _claim((8, 200, 200, 3))),
        "claimed huge image": (CODE.RESOURCE_EXHAUSTED, "8192 x 8192 pixels",
                               _claim((1, 8192, 8192, 1))),
        "huge png": (CODE.RESOURCE_EXHAUSTED, "20000 x 20000 pixels",
                     predict_request({"image_bytes": np.array([png_header(20000, 20000)],
                                                              dtype=object)},
                                     signature="serving_bytes")),
    }


@pytest.mark.parametrize("case", list(_bad_predicts()))
def test_bad_request_gets_its_status_and_the_server_keeps_serving(served, case):
    _, stubs, _ = served
    code, message, request = _bad_predicts()[case]
    with pytest.raises(grpc.RpcError) as caught:
        stubs.predict.Predict(request, timeout=30)
    assert caught.value.code() == code, caught.value.details()
    assert caught.value.details() and message in caught.value.details()
    response = stubs.predict.Predict(predict_request({"images": images(1)}), timeout=30)
    assert tf.make_ndarray(response.outputs["cluster"]).shape == (1,)


def test_error_messages_name_what_is_expected(served):
    _, stubs, _ = served
    details = {}
    for case in ("unknown signature", "unknown input", "wrong dtype", "corrupt bytes"):
        with pytest.raises(grpc.RpcError) as caught:
            stubs.predict.Predict(_bad_predicts()[case][2], timeout=30)
        details[case] = caught.value.details()
    assert "serving_bytes" in details["unknown signature"]
    assert "images" in details["unknown input"]
    assert "DT_UINT8" in details["wrong dtype"] and "DT_FLOAT" in details["wrong dtype"]
    assert "Graph execution error" not in details["corrupt bytes"]


LONG = "x" * 100_000  # a name as long as a request may carry


def _many_inputs(count=1000):
    request = predict_request({"images": images(1)})
    for index in range(count):
        request.inputs[f"unexpected_{index:04d}"].CopyFrom(tf.make_tensor_proto(np.zeros(1)))
    return request


def _request_content_in_messages():
    """case → (call name, status, a fragment of the message, request): messages that quote
    what a request sent."""
    x = images(1)
    metadata = get_model_metadata_pb2.GetModelMetadataRequest(model_spec={"name": "mixem"})
    metadata.metadata_field.extend(f"field_{i}" for i in range(1000))
    return {
        # predict_util.cc, VerifyRequestInputsSize
        "1,000 unexpected inputs": ("Predict", CODE.INVALID_ARGUMENT,
                                    "input size does not match signature: 1001!=1", _many_inputs()),
        "a long input name": ("Predict", CODE.INVALID_ARGUMENT,
                              "input tensor alias not found in signature: xxx",
                              predict_request({LONG: x})),
        "a long model name": ("Predict", CODE.NOT_FOUND, "servable not found",
                              predict_request({"images": x}, model=LONG)),
        "a long signature name": ("Predict", CODE.FAILED_PRECONDITION, "Serving signature key",
                                  predict_request({"images": x}, signature=LONG)),
        "a long version label": ("Predict", CODE.INVALID_ARGUMENT, "version label",
                                 _spec(predict_request({"images": x}), version_label=LONG)),
        "a long output alias": ("Predict", CODE.INVALID_ARGUMENT, "output tensor alias",
                                predict_request({"images": x}, output_filter=[LONG])),
        "1,000 metadata fields": ("GetModelMetadata", CODE.INVALID_ARGUMENT, "995 more",
                                  metadata),
        "a long model name's status": ("GetModelStatus", CODE.NOT_FOUND,
                                       "Could not find any versions of model xxx",
                                       get_model_status_pb2.GetModelStatusRequest(
                                           model_spec={"name": LONG})),
    }


@pytest.mark.parametrize("case", list(_request_content_in_messages()))
def test_messages_quoting_the_request_stay_short(served, case):
    # Unbounded, such a message overflows gRPC's 16 KiB metadata limit: the client then gets
    # RESOURCE_EXHAUSTED "received metadata size exceeds hard limit" instead of the answer.
    from serving.errors import MAX_MESSAGE_CHARS

    _, stubs, _ = served
    method, code, fragment, request = _request_content_in_messages()[case]
    stub = stubs.model if method == "GetModelStatus" else stubs.predict
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request, timeout=30)
    assert caught.value.code() == code, caught.value.details()
    assert fragment in caught.value.details()
    assert len(caught.value.details()) <= MAX_MESSAGE_CHARS
    response = stubs.predict.Predict(predict_request({"images": images(1)}), timeout=30)
    assert tf.make_ndarray(response.outputs["cluster"]).shape == (1,)


def test_a_thousand_unexpected_inputs_are_named_a_few_and_counted(served):
    _, stubs, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        stubs.predict.Predict(_many_inputs(), timeout=30)
    assert caught.value.details() == (
        "input size does not match signature: 1001!=1 len({images,unexpected_0000,"
        "unexpected_0001,unexpected_0002,unexpected_0003, ... 996 more}) != len({images}). "
        "Sent extra: {unexpected_0000,unexpected_0001,unexpected_0002,unexpected_0003,"
        "unexpected_0004, ... 995 more}. Missing but required: {}.")


def test_bad_metadata_and_status_requests(served, caplog):
    _, stubs, _ = served
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "mixem"
    with pytest.raises(grpc.RpcError) as caught:
        stubs.predict.GetModelMetadata(request, timeout=30)
    assert caught.value.code() == CODE.INVALID_ARGUMENT
    request.metadata_field.append("labels")
    with pytest.raises(grpc.RpcError) as caught:
        stubs.predict.GetModelMetadata(request, timeout=30)
    assert caught.value.code() == CODE.INVALID_ARGUMENT and "labels" in caught.value.details()
    # get_model_status_impl.cc: no ModelSpec is INVALID_ARGUMENT, an unknown name NOT_FOUND
    status = get_model_status_pb2.GetModelStatusRequest()
    with pytest.raises(grpc.RpcError) as caught:
        stubs.model.GetModelStatus(status, timeout=30)
    assert (caught.value.code(), caught.value.details()) == (CODE.INVALID_ARGUMENT,
                                                             "Missing ModelSpec")
    status.model_spec.name = "other"
    with pytest.raises(grpc.RpcError) as caught:
        stubs.model.GetModelStatus(status, timeout=30)
    assert caught.value.code() == CODE.NOT_FOUND
    assert caught.value.details() == "Could not find any versions of model other"


def test_classify_and_regress_are_unimplemented_without_a_traceback(served, caplog):
    _, stubs, _ = served
    caplog.set_level("DEBUG")
    for call, request in ((stubs.predict.Classify, classification_pb2.ClassificationRequest()),
                          (stubs.predict.Regress, regression_pb2.RegressionRequest())):
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as caught:
                call(request, timeout=30)
            assert caught.value.code() == CODE.UNIMPLEMENTED
            assert "Predict" in caught.value.details()
    assert "Traceback" not in caplog.text and "Exception" not in caplog.text


def _wait_for(condition, seconds=60.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_version_exported_while_serving_is_picked_up(tmp_path, saved_versions):
    base = make_base(tmp_path, saved_versions)
    with serving(base, "--file_system_poll_wait_seconds=0.1") as (running, stubs):
        x = images(2)
        first = stubs.predict.Predict(predict_request({"images": x}), timeout=30)
        assert first.model_spec.version.value == 1
        shutil.copytree(saved_versions[2], base / ".incoming")
        (base / ".incoming").rename(base / "2")
        _wait_for(lambda: running.models.current.version == 2)
        response = stubs.predict.Predict(predict_request({"images": x}), timeout=30)
        assert response.model_spec.version.value == 2
        want = own_outputs(saved_versions[2], "serving_default", {"images": x})
        np.testing.assert_allclose(outputs_of(response)["distances"], want["distances"],
                                   rtol=1e-6, atol=1e-6)
        assert not np.allclose(outputs_of(first)["distances"], want["distances"])
        with pytest.raises(grpc.RpcError) as caught:  # only the latest version is served
            stubs.predict.Predict(predict_request({"images": x}, version=1), timeout=30)
        assert caught.value.code() == CODE.NOT_FOUND
        status = get_model_status_pb2.GetModelStatusRequest()
        status.model_spec.name = "mixem"
        states = {s.version: s.state for s in
                  stubs.model.GetModelStatus(status, timeout=30).model_version_status}
        assert states == {2: get_model_status_pb2.ModelVersionStatus.AVAILABLE,
                          1: get_model_status_pb2.ModelVersionStatus.END}


def test_in_flight_request_on_the_old_version_finishes(tmp_path, saved_versions):
    """A request in a slow batch holds version 1 while version 2 is swapped in."""
    base = make_base(tmp_path, saved_versions)
    with serving(base, "--file_system_poll_wait_seconds=0", "--enable_batching",
                 "--max_batch_size=64", "--batch_timeout_micros=4000000") as (running, stubs):
        old = running.models.current
        pending = stubs.predict.Predict.future(predict_request({"images": images(1)}),
                                               timeout=30)
        _wait_for(lambda: old._holders == 1)  # the request holds v1, waiting for its batch
        shutil.copytree(saved_versions[2], base / "2")
        running.models.poll()
        assert running.models.current.version == 2
        assert old.state == "UNLOADING"
        response = pending.result()
        assert response.model_spec.version.value == 1
        assert old.released.wait(10) and old.state == "END"


def test_batching_merges_concurrent_requests_and_splits_their_rows(tmp_path, saved_versions):
    base = make_base(tmp_path, saved_versions)
    with serving(base, "--file_system_poll_wait_seconds=0", "--enable_batching",
                 "--max_batch_size=6", "--batch_timeout_micros=1000000") as (running, stubs):
        loaded = running.models.current
        requests = [images(2, seed=i) for i in range(3)]  # 6 rows: one full batch
        odd = images(1, h=20, w=5, seed=9)  # another shape: its own call
        before = loaded.calls
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(stubs.predict.Predict, predict_request({"images": x}), 30)
                       for x in [*requests, odd]]
            responses = [f.result() for f in futures]
        assert loaded.calls - before == 2
        for x, response in zip([*requests, odd], responses):
            want = own_outputs(saved_versions[1], "serving_default", {"images": x})
            np.testing.assert_allclose(outputs_of(response)["embedding"], want["embedding"],
                                       rtol=1e-6, atol=1e-6)


def test_a_corrupt_image_in_a_merged_batch_fails_only_its_request(tmp_path, saved_versions):
    base = make_base(tmp_path, saved_versions)
    with serving(base, "--file_system_poll_wait_seconds=0", "--enable_batching",
                 "--max_batch_size=3", "--batch_timeout_micros=1000000") as (running, stubs):
        good = [np.array([png_bytes(images(1, seed=i)[0])], dtype=object) for i in range(2)]
        bad = np.array([b"garbage"], dtype=object)
        futures = [stubs.predict.Predict.future(
            predict_request({"image_bytes": x}, signature="serving_bytes"), timeout=30)
            for x in [good[0], bad, good[1]]]
        assert futures[0].result().outputs["cluster"].int64_val
        assert futures[2].result().outputs["cluster"].int64_val
        with pytest.raises(grpc.RpcError) as caught:
            futures[1].result()
        assert caught.value.code() == CODE.INVALID_ARGUMENT


def test_a_real_export_is_served_with_the_models_own_results(exported_model, tmp_path):
    # The exporter's SavedModel (issue 6) behind the server, called with the stock stub.
    from export.runtime import load_predictor
    from mixem_tf.data import load_dataset

    base = tmp_path / "models" / "mixem"
    shutil.copytree(exported_model, base / "1")
    digits = load_dataset("digits").images[:16]
    with serving(base, "--file_system_poll_wait_seconds=0",
                 "--enable_batching") as (running, stubs):
        response = stubs.predict.Predict(predict_request({"images": digits}), timeout=60)
        got, want = outputs_of(response), load_predictor(saved_model=exported_model)(digits)
        np.testing.assert_array_equal(got["cluster"], want["cluster"])
        for key in ("probabilities", "distances", "embedding"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6)
        encoded = np.array([png_bytes(image) for image in digits[:4]], dtype=object)
        response = stubs.predict.Predict(
            predict_request({"image_bytes": encoded}, signature="serving_bytes"), timeout=60)
        np.testing.assert_array_equal(outputs_of(response)["cluster"], want["cluster"][:4])


def test_a_request_of_zero_rows_gets_empty_outputs_over_grpc_and_rest(tmp_path,
                                                                        saved_versions):
    # TF Serving runs the graph on 0 rows; this model's graph fails on an empty batch with a
    # graph-internal error (serving_fixtures.py), so the server answers from the signature.
    import json
    import urllib.request

    base = make_base(tmp_path, saved_versions)
    with serving(base, "--file_system_poll_wait_seconds=0", "--rest_api_port=0",
                 "--enable_batching") as (running, stubs):
        info = stubs.predict.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec={"name": "mixem"}, metadata_field=["signature_def"]), timeout=30)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        info.metadata["signature_def"].Unpack(signatures)
        outputs = signatures.signature_def["serving_default"].outputs
        widths = {key: [d.size for d in value.tensor_shape.dim][1:]
                  for key, value in outputs.items()}
        empty = {"images": np.zeros((0, 8, 8, 1), np.uint8),
                 "image_bytes": np.array([], dtype=object)}
        for signature, name in (("", "images"), ("serving_bytes", "image_bytes")):
            got = outputs_of(stubs.predict.Predict(
                predict_request({name: empty[name]}, signature=signature), timeout=30))
            assert {key: value.shape for key, value in got.items()} == {
                key: (0, *width) for key, width in widths.items()}
            assert got["cluster"].dtype == np.int64
        got = outputs_of(stubs.predict.Predict(predict_request(
            {"images": empty["images"]}, output_filter=["cluster"]), timeout=30))
        assert list(got) == ["cluster"] and got["cluster"].shape == (0,)
        url = f"http://127.0.0.1:{running.rest.port}/v1/models/mixem:predict"
        body = json.dumps({"signature_name": "serving_bytes", "inputs": []}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as reply:
            assert reply.status == 200
            assert json.load(reply) == {"outputs": {key: [] for key in widths}}
        response = stubs.predict.Predict(predict_request({"images": images(2, 8, 8, 1)}),
                                         timeout=30)
        assert tf.make_ndarray(response.outputs["cluster"]).shape == (2,)
