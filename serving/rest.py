"""TF Serving's REST API (``--rest_api_port``): a Starlette app served by uvicorn in a thread
of the gRPC server's process, over the same servicers and checks (serving/rest_json.py).

    GET  /v1/models/NAME[/versions/V]             → model status
    GET  /v1/models/NAME[/versions/V]/metadata    → signature defs
    POST /v1/models/NAME[/versions/V]:predict     → predictions

uvicorn (with h11) parses HTTP: a malformed request line, header or Content-Length is a 400
before the app sees it. The app refuses a body over ``--max_request_bytes`` from its
Content-Length, before reading it (a body without one is counted while it arrives), refuses
one of more than ``--rest_api_max_json_values`` JSON values before parsing it, and gives each
request ``--rest_api_timeout_in_ms`` to arrive and be answered (then 504, TF Serving's code
for DEADLINE_EXCEEDED); a connection that has not sent a whole request header within that
time is closed. JSON is parsed, and the model run, in one worker thread per request, so a
large request never stalls the others (or the gRPC front). Errors come back as
``{"error": message}`` with TF Serving's HTTP code for the gRPC status (http_server.cc: 400,
404, 429, 501, 500, ...), the message clipped (serving/errors.py); a refused body is freed
at once. Shutdown closes idle connections at once and waits at most the grace period for the
rest; what is still running then is answered 503 (UNAVAILABLE) and its connection closed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading

import anyio
import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from serving.errors import MAX_MESSAGE_CHARS, ServingError, clip
from serving.rest_json import metadata_json, predict_json, status_json
from serving.service import Servicers, forget_request, internal_message

log = logging.getLogger("serving")

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+))?"
                   r"(?:/labels/(?P<label>[^/:]+))?(?P<verb>/metadata|:predict)?$")
_INT64_MAX = (1 << 63) - 1
_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux
# TF Serving's HTTP code for each gRPC status (http_server.cc, ToHTTPStatusCode).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.UNAVAILABLE: 503,
}


# Answers after which the connection is closed: the body may be left unread.
_CLOSING = {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.UNAVAILABLE}


def _error(code: grpc.StatusCode, message: str) -> JSONResponse:
    headers = {"Connection": "close"} if code in _CLOSING else None
    return JSONResponse({"error": clip(message, MAX_MESSAGE_CHARS)}, HTTP_STATUS.get(code, 500),
                        headers=headers)


def _version(text: str | None) -> int | None:
    """The path's version as an int64, or INVALID_ARGUMENT with TF Serving's message
    (http_rest_api_util.cc, ParseModelInfo)."""
    if text is None:
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > 19 or int(digits) > _INT64_MAX:  # a long one is never parsed whole
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"Failed to convert version: {clip(text)} to numeric.")
    return int(digits)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused (RESOURCE_EXHAUSTED) from its Content-Length before any of it is read,
    or as soon as a body without one passes `limit`."""
    length = int(request.headers.get("content-length", 0))  # h11 has checked it is a number
    if length > limit:
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"request body of {length} bytes; the limit is {limit} "
                           f"(--max_request_bytes)")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request body over {limit} bytes (--max_request_bytes)")
        parts.append(part)
    return b"".join(parts)


def _count_json_values(raw: bytes, limit: int) -> None:
    """RESOURCE_EXHAUSTED when the body holds more than `limit` JSON values, counted without
    parsing as its commas and opening brackets (an overcount only for strings holding those):
    Python's parser costs ~60 bytes and ~0.5 µs per value and holds the GIL (a 50 MB body of
    pixels: 2.3 GB and a 9 s stall of every other request, gRPC's too)."""
    count = raw.count(b",") + raw.count(b"[")
    if count > limit:
        raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                           f"the JSON body holds about {count} values; the limit is {limit} "
                           f"(--rest_api_max_json_values; send images as {{\"b64\": ...}} "
                           f"or over gRPC)")


def _parse_json(raw: bytes):
    """The request body as JSON; INVALID_ARGUMENT with TF Serving's "JSON Parse error" prefix
    (json_tensor.cc) when it is empty, malformed or nested too deeply for Python's parser."""
    if not raw:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "JSON Parse error: The document is empty")
    try:
        return json.loads(raw)
    except RecursionError:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           "JSON Parse error: the document is nested too deeply") from None
    except ValueError as error:
        raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                           f"JSON Parse error: {error}") from None


def _predict(where: tuple, raw: bytes) -> dict:
    """Parses a :predict body and answers it, in one worker thread."""
    return predict_json(*where, _parse_json(raw))


def build_app(servicers: Servicers, max_body_bytes: int, max_json_values: int,
              timeout_seconds: float) -> Starlette:
    """The ASGI app answering TF Serving's REST paths for `servicers`."""

    def in_thread(function, *args):  # abandoned, not awaited, when the request times out
        return anyio.to_thread.run_sync(function, *args, abandon_on_cancel=True)

    async def answer(request: Request) -> dict:
        path, method = request.url.path, request.method
        match = _PATH.match(path)
        verb = match and match["verb"]
        if match is None or (method == "POST") != (verb == ":predict"):
            # http_rest_api_handler.cc, ProcessRequest
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Malformed request: {clip(method)} {clip(path, 256)}")
        where = (servicers, match["name"], _version(match["version"]), match["label"])
        if verb == ":predict":
            raw = await _read_body(request, max_body_bytes)
            _count_json_values(raw, max_json_values)
            return await in_thread(_predict, where, raw)
        if verb == "/metadata":
            return await in_thread(metadata_json, *where)
        return await in_thread(status_json, *where)

    async def endpoint(request: Request) -> JSONResponse:
        try:
            with anyio.fail_after(timeout_seconds):
                return JSONResponse(await answer(request))
        except ServingError as error:
            forget_request(error)  # a refused body is freed now
            return _error(error.code, str(error))
        except TimeoutError:
            return _error(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"the request took longer than {timeout_seconds * 1000:.0f} ms "
                          f"(--rest_api_timeout_in_ms)")
        except ClientDisconnect:
            return _error(grpc.StatusCode.CANCELLED, "the client went away")
        except asyncio.CancelledError:  # uvicorn cancels what outlives the shutdown grace
            return _error(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        except Exception as error:  # the server keeps serving
            log.exception("REST %s %s failed", request.method, clip(request.url.path, 256))
            forget_request(error)
            return _error(grpc.StatusCode.INTERNAL, internal_message(error))

    return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


def _protocol(header_timeout: float):
    """uvicorn's h11 protocol, closing a connection whose request header is not complete
    `header_timeout` seconds after it opened or after its last response (uvicorn's own
    keep-alive timer restarts on every byte, so a client trickling a header never meets it).

    It also keeps TCP's delayed ACK from stalling a kept-alive connection (~40 ms a request
    on Linux), both ways: uvicorn writes a response's header and body in two sends, so Nagle's
    algorithm is turned off (asyncio sets TCP_NODELAY itself only on sockets made with proto
    IPPROTO_TCP, which `socket.create_server`'s, and so the accepted ones, are not); and a
    client that sends a request's header and body in two sends (http.client does for bodies
    over 2,920 bytes) with Nagle on holds the body until the header is ACKed, so each
    received chunk is ACKed at once (TCP_QUICKACK, where the platform has it)."""

    class Protocol(H11Protocol):
        def connection_made(self, transport):
            self._tcp = transport.get_extra_info("socket")
            if self._tcp is not None and self._tcp.family not in (socket.AF_INET,
                                                                  socket.AF_INET6):
                self._tcp = None
            if self._tcp is not None:
                self._tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().connection_made(transport)
            self._arm_header_deadline()

        def data_received(self, data):
            if self._tcp is not None and _QUICKACK is not None:
                self._tcp.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
            super().data_received(data)

        def on_response_complete(self):
            super().on_response_complete()
            self._arm_header_deadline()

        def _arm_header_deadline(self):
            self.loop.call_later(header_timeout, self._header_deadline, self.cycle)

        def _header_deadline(self, cycle):
            if self.cycle is cycle and not self.transport.is_closing():
                self.transport.close()  # no new request began since the deadline was armed

    return Protocol


class RestServer:
    """The REST API on `host:port`, served by uvicorn in a background thread; `port` is the
    bound port."""

    def __init__(self, servicers: Servicers, host: str, port: int, max_body_bytes: int,
                 max_json_values: int, timeout_seconds: float):
        try:
            self._socket = socket.create_server((host, port), family=_family(host))
        except OSError as error:
            raise ValueError(f"cannot listen on {host}:{port} for REST: {error}") from None
        self.port = self._socket.getsockname()[1]
        app = build_app(servicers, max_body_bytes, max_json_values, timeout_seconds)
        config = uvicorn.Config(app,
                                http=_protocol(timeout_seconds), lifespan="off",
                                access_log=False, log_config=None, timeout_keep_alive=5,
                                timeout_graceful_shutdown=10)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, name="rest", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    def stop(self, grace: float = 10.0) -> None:
        """Stops accepting and closes idle connections; requests being answered get `grace`
        seconds, then are cancelled and their connections closed."""
        self._server.config.timeout_graceful_shutdown = max(grace, 0.1)
        self._server.should_exit = True
        self._thread.join(grace + 5)


def _family(host: str):
    return socket.AF_INET6 if ":" in host else socket.AF_INET
