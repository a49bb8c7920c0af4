"""Send images to a TF Serving-compatible server (this one or tensorflow_model_server).

    python -m serving.client --server localhost:8500 --model mixem a.png b.jpg
    python -m serving.client --server localhost:8500 --model mixem --bytes photos/*.jpg

Prints one row per image: path, cluster, probability of that cluster. Images are read with
Pillow into uint8 arrays (grey stays 1 channel, everything else becomes RGB) and sent to
`serving_default`; images of the same size go in one request of up to --batch-size. With
--bytes the files are sent as they are (encoded) to `serving_bytes`. An unreadable file is
reported and the others are still sent (exit 1); an unreachable server exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mixem_tf.data.folder import read_image
from mixem_tf.cli import ArgumentParser, run


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m serving.client", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("images", nargs="+", metavar="IMAGE", help="image files")
    add("--server", default="localhost:8500", help="host:port of the gRPC server")
    add("--model", default="mixem", help="model name")
    add("--version", type=int, default=None, help="model version (default: the served one)")
    add("--signature", default=None,
        help="signature (default: serving_default, or serving_bytes with --bytes)")
    add("--input", default=None, help="input name (default: images, or image_bytes with --bytes)")
    add("--bytes", action="store_true", help="send the encoded files instead of pixels")
    add("--batch-size", type=int, default=32, help="images per request")
    add("--timeout", type=float, default=30.0, help="seconds per request (and to connect)")
    return parser


def read_bytes(path: str) -> bytes:
    data = Path(path).read_bytes()
    if not data:
        raise ValueError("empty file")
    return data


def group(items: list[tuple[int, object]], batch_size: int, by_shape: bool):
    """Batches of (index, item): same-shape images together (pixels), in order (bytes)."""
    groups: dict[object, list] = {}
    for index, item in items:
        groups.setdefault(item.shape if by_shape else None, []).append((index, item))
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            yield members[start:start + batch_size]


class Client:
    """A PredictionService stub for one model; `predict` returns (clusters, probabilities)."""

    def __init__(self, server: str, model: str, signature: str, input_name: str,
                 version: int | None = None, timeout: float = 30.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.channel = grpc.insecure_channel(server, options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            self.channel.close()
            raise ConnectionError(f"cannot reach a server at {server} within {timeout:g} s")
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model, self.signature, self.input_name = model, signature, input_name
        self.version, self.timeout = version, timeout

    def predict(self, batch: np.ndarray):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        request.model_spec.signature_name = self.signature
        if self.version is not None:
            request.model_spec.version.value = self.version
        request.inputs[self.input_name].CopyFrom(tf.make_tensor_proto(batch))
        request.output_filter.extend(["cluster", "probabilities"])
        response = self.stub.Predict(request, timeout=self.timeout)
        clusters = tf.make_ndarray(response.outputs["cluster"])
        probabilities = tf.make_ndarray(response.outputs["probabilities"])
        return clusters, probabilities[np.arange(len(clusters)), clusters]


def predict_group(client: Client, members, report) -> None:
    """Sends one batch; on INVALID_ARGUMENT resends its images one by one to find the bad one."""
    import grpc

    batch = np.stack([item for _, item in members]) if not isinstance(members[0][1], bytes) \
        else np.array([item for _, item in members], dtype=object)
    try:
        clusters, probabilities = client.predict(batch)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT and len(members) > 1:
            for member in members:
                predict_group(client, [member], report)
            return
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        report(members[0][0], None, None, error.details())
        return
    for (index, _), cluster, probability in zip(members, clusters, probabilities):
        report(index, int(cluster), float(probability), None)


def main(argv: list[str] | None = None) -> int:
    import grpc

    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    signature = args.signature or ("serving_bytes" if args.bytes else "serving_default")
    input_name = args.input or ("image_bytes" if args.bytes else "images")
    failures = 0
    items = []
    for index, path in enumerate(args.images):
        try:
            items.append((index, read_bytes(path) if args.bytes else read_image(path)))
        except Exception as error:  # unreadable: report, send the others
            print(f"{path}: cannot read: {error}", file=sys.stderr)
            failures += 1
    width = max(len(p) for p in args.images)
    rows = {}

    def report(index, cluster, probability, problem):
        nonlocal failures
        path = args.images[index]
        if problem is None:
            rows[index] = f"{path:<{width}}  {cluster:>7d}  {probability:>11.4f}"
        else:
            print(f"{path}: rejected by the server: {problem}", file=sys.stderr)
            failures += 1

    try:
        client = Client(args.server, args.model, signature, input_name, args.version,
                        args.timeout)
        for members in group(items, args.batch_size, by_shape=not args.bytes):
            predict_group(client, members, report)
    except ConnectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"error: {args.server}: {error.code().name}: {error.details()}", file=sys.stderr)
        return 2
    print(f"{'path':<{width}}  {'cluster':>7}  {'probability':>11}")
    for index in sorted(rows):
        print(rows[index])
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(run(main))
