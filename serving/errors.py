"""`ServingError`: a request error and the gRPC status it is answered with (REST maps the
status to an HTTP code)."""

from __future__ import annotations

import grpc


class ServingError(Exception):
    """A request error with the gRPC status code it is answered with."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
