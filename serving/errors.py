"""`ServingError`: a request error and the gRPC status it is answered with (REST maps the
status to an HTTP code), and the helpers that keep its message short.

A message built from request content (input names, a model name, a path) could otherwise be
as long as the request: gRPC carries a status message in a header, and a client refuses one
over its metadata limit (16 KiB by default) with RESOURCE_EXHAUSTED instead of the server's
answer. So request text is quoted clipped (`clip`), lists of request names name the first
few and count the rest (`name_some`), and every message is cut at `MAX_MESSAGE_CHARS`.
"""

from __future__ import annotations

import grpc

MAX_MESSAGE_CHARS = 1024  # one status message, well under gRPC's 16 KiB metadata limit
MAX_QUOTED_CHARS = 64  # one name or value quoted from a request
MAX_NAMED = 5  # names listed from a request's list of names; the rest are counted


def clip(text, limit: int = MAX_QUOTED_CHARS) -> str:
    """`text` (a str of it), cut to `limit` characters with the count of those left out."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def name_some(names, shown: int = MAX_NAMED) -> str:
    """Comma-joined names in order, each clipped: the first `shown`, then how many more."""
    names = list(names)
    text = ",".join(clip(name) for name in names[:shown])
    if len(names) > shown:
        text += f", ... {len(names) - shown} more"
    return text


class ServingError(Exception):
    """A request error with the gRPC status code it is answered with; the message is cut at
    `MAX_MESSAGE_CHARS`."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(clip(message, MAX_MESSAGE_CHARS))
        self.code = code
