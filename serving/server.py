"""A TF Serving-compatible gRPC server for one model (flags named as tensorflow_model_server's).

    python -m serving.server --port=8500 --model_name=mixem --model_base_path=models/mixem
    python -m serving.server --model_name=mixem --model_base_path=models/mixem \\
        --enable_batching --max_batch_size=32 --batch_timeout_micros=2000

--rest_api_port adds TF Serving's REST API (serving/rest.py) on a second port.
Serves the highest version under --model_base_path, polls for new versions every
--file_system_poll_wait_seconds, and on SIGTERM/SIGINT stops accepting requests, lets the
in-flight ones finish (--shutdown_grace_seconds) and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from mixem_tf.cli import ArgumentParser, run
from serving.limits import DEFAULT_MAX_IMAGE_PIXELS, Limits

log = logging.getLogger("serving")


def positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def non_negative(kind):
    def parse(text):
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m serving.server", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--port", type=non_negative(int), default=8500, help="gRPC port (0: any free port)")
    add("--rest_api_port", type=non_negative(int), default=None,
        help="also serve TF Serving's REST API on this port (0: any free port; default: off)")
    add("--rest_api_timeout_in_ms", type=positive(int), default=30000,
        help="time a REST request has to arrive and be answered (then 504)")
    add("--rest_api_max_json_values", type=positive(int), default=1 << 20,  # ~60 MB parsed
        help="JSON values (commas and '[') in one REST body; more: 429 before parsing")
    add("--host", default="127.0.0.1", help="address to bind (0.0.0.0: every interface)")
    add("--model_name", default="default", help="name clients put in ModelSpec.name")
    add("--model_base_path", required=True, help="folder of numbered SavedModel versions")
    add("--file_system_poll_wait_seconds", type=non_negative(float), default=1.0,
        help="seconds between looks for a new version (0: never look again)")
    add("--enable_batching", action="store_true", help="merge concurrent requests")
    add("--max_batch_size", type=positive(int), default=32, help="rows per merged call")
    add("--batch_timeout_micros", type=non_negative(int), default=2000,
        help="how long the first request of a batch waits for others")
    add("--num_batch_threads", type=positive(int), default=2, help="merged calls at a time")
    add("--max_images_per_request", type=positive(int), default=1024,
        help="rows in one request; more: RESOURCE_EXHAUSTED")
    add("--max_request_bytes", type=positive(int), default=64 << 20,
        help="largest request message (gRPC's own check), REST body, and decoded input "
             "tensor; larger: RESOURCE_EXHAUSTED")
    add("--max_image_pixels", type=positive(int), default=DEFAULT_MAX_IMAGE_PIXELS,
        help="largest image (height x width, read from the header of an encoded one); "
             "larger: RESOURCE_EXHAUSTED")
    add("--grpc_max_threads", type=positive(int), default=16, help="concurrent RPCs")
    add("--shutdown_grace_seconds", type=non_negative(float), default=10.0,
        help="how long in-flight requests may take to finish at shutdown")
    return parser


@dataclass
class RunningServer:
    """A started server: `port` is the bound port; `stop` shuts it down gracefully."""

    grpc_server: object
    models: object
    batcher: object | None
    port: int
    rest: object | None = None  # serving.rest.RestServer; rest.port is its port

    def stop(self, grace: float = 10.0) -> None:
        stopped = self.grpc_server.stop(grace)  # no new RPCs; in-flight ones may finish
        if self.batcher is not None:
            self.batcher.flush()  # queued requests run now instead of waiting their timeout
        if self.rest is not None:
            self.rest.stop(grace)
        stopped.wait()
        if self.batcher is not None:
            self.batcher.stop()
        self.models.stop()


def start(args: argparse.Namespace) -> RunningServer:
    """Loads the model, starts polling, batching and the gRPC server; returns at once."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    from serving.batching import Batcher
    from serving.models import ModelVersions
    from serving.service import Servicers, ServingOptions

    models = ModelVersions(args.model_name, args.model_base_path,
                           poll_seconds=args.file_system_poll_wait_seconds)
    models.start()
    batcher = None
    if args.enable_batching:
        batcher = Batcher(args.max_batch_size, args.batch_timeout_micros / 1e6,
                          num_threads=args.num_batch_threads)
    limits = Limits(args.max_images_per_request, args.max_request_bytes, args.max_image_pixels)
    options = ServingOptions(limits, batcher)
    servicers = Servicers(models, options)
    server = grpc.server(
        ThreadPoolExecutor(args.grpc_max_threads, thread_name_prefix="grpc"),
        options=[("grpc.max_receive_message_length", args.max_request_bytes),
                 ("grpc.max_send_message_length", -1),
                 ("grpc.so_reuseport", 0)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        servicers.prediction, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicers.model, server)
    address = f"{args.host}:{args.port}" if ":" not in args.host else f"[{args.host}]:{args.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        models.stop()
        if batcher is not None:
            batcher.stop()
        raise ValueError(f"cannot listen on {address} (port in use, or no such address)")
    rest = None
    if args.rest_api_port is not None:
        from serving.rest import RestServer

        try:
            rest = RestServer(servicers, args.host, args.rest_api_port, args.max_request_bytes,
                              args.rest_api_max_json_values, args.rest_api_timeout_in_ms / 1000)
        except ValueError:
            models.stop()
            raise
        log.info("REST API listening on %s:%d", args.host, rest.port)
    server.start()
    log.info("gRPC server listening on %s:%d (model %s, batching %s)", args.host, port,
             args.model_name, "on" if batcher else "off")
    return RunningServer(server, models, batcher, port, rest)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    server = start(args)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stop.set())
    while not stop.wait(0.5):
        pass
    log.info("shutting down: finishing in-flight requests (grace %.1f s)",
             args.shutdown_grace_seconds)
    server.stop(args.shutdown_grace_seconds)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
