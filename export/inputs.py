"""What the exported graph refuses before it computes anything, inside the graph itself, so TF
Serving, our server and the ONNX file refuse the same images.

    images = check_images(images)                    # uint8 [N, H, W, C]: C 1..4, H, W > 0
    image = decode_checked(data, max_pixels)         # one encoded image → uint8 [H, W, C]

Both raise ``InvalidArgumentError`` under TensorFlow with a message naming the problem.
`check_images` also fails in ONNX runtimes, where TensorFlow's Assert does not exist: the
batch goes through a Reshape to a shape that cannot hold it when the check fails.
`decode_checked` reads the height and width from the header (PNG, GIF, BMP, WebP, JPEG) and
refuses an image of more than `max_pixels` pixels before decoding it: a 400 KB PNG can claim
20000 × 20000 pixels (1.6 GB as RGBA floats). It decodes JPEGs with the IDCT training's
decoder (Pillow) uses, so a served file gives the pixels, and the cluster, training gave it.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "check_images", "decode_checked", "header_size"]

DEFAULT_MAX_IMAGE_PIXELS = 4096 * 4096  # serving/limits.py has the server's, equal to this
_HEADER_BYTES = 32


def check_images(images):
    """`images` [N, H, W, C] unchanged; InvalidArgumentError unless 1 ≤ C ≤ 4 and H, W > 0."""
    shape = tf.shape(images)
    channels = shape[3]
    valid = tf.reduce_all([channels >= 1, channels <= 4, shape[1] > 0, shape[2] > 0])
    message = tf.strings.format(
        "images must be [N, H, W, C] with H, W > 0 and C = 1 (grey), 2 (grey + alpha), "
        "3 (RGB) or 4 (RGBA); got shape {}", shape)
    check = tf.debugging.Assert(valid, [message], name="check_images")
    with tf.control_dependencies([check]):
        # Where the Assert is gone (ONNX), a Reshape to one element fails instead: every
        # refused batch holds 0 or more than 1 elements (the one-element [1, 1, 1, 1] is valid).
        target = tf.where(valid, shape, tf.ones_like(shape))
        return tf.reshape(images, target)


def _unsigned(data, start: int, count: int, big_endian: bool = False):
    """The unsigned integer in header bytes [start, start + count), as int64."""
    parts = [tf.cast(data[start + i], tf.int64) for i in range(count)]
    if big_endian:
        parts.reverse()
    return sum(part * (256 ** i) for i, part in enumerate(parts))


def is_jpeg(data):
    """True when an encoded image starts with JPEG's SOI marker."""
    return tf.equal(tf.strings.substr(data, 0, 2), b"\xff\xd8")


def header_size(data):
    """(height, width) int64 read from an encoded image's header; (0, 0) for an unknown
    format (decoding then fails with its own message)."""
    head = tf.strings.substr(data, 0, _HEADER_BYTES)
    raw = tf.io.decode_raw(head, tf.uint8)
    raw = tf.pad(raw, [[0, _HEADER_BYTES - tf.shape(raw)[0]]])

    def starts(prefix: bytes, at: int = 0):
        expected = tf.constant(list(prefix), tf.uint8)
        return tf.reduce_all(tf.equal(raw[at:at + len(prefix)], expected))

    def signed32(start):  # BMP's height is negative for top-down rows
        value = _unsigned(raw, start, 4)
        return tf.abs(tf.where(value >= 2 ** 31, value - 2 ** 32, value))

    webp = tf.logical_and(starts(b"RIFF"), starts(b"WEBP", 8))
    lossless = _unsigned(raw, 21, 4)
    cases = [  # (condition, height, width), first match wins
        (starts(b"\x89PNG\r\n\x1a\n"), _unsigned(raw, 20, 4, True), _unsigned(raw, 16, 4, True)),
        (starts(b"GIF8"), _unsigned(raw, 8, 2), _unsigned(raw, 6, 2)),
        (starts(b"BM"), signed32(22), signed32(18)),
        (tf.logical_and(webp, starts(b"VP8X", 12)), _unsigned(raw, 27, 3) + 1,
         _unsigned(raw, 24, 3) + 1),
        (tf.logical_and(webp, starts(b"VP8L", 12)), (lossless // 2 ** 14) % 2 ** 14 + 1,
         lossless % 2 ** 14 + 1),
        (tf.logical_and(webp, starts(b"VP8 ", 12)), _unsigned(raw, 28, 2) % 2 ** 14,
         _unsigned(raw, 26, 2) % 2 ** 14),
    ]
    jpeg = is_jpeg(data)
    height, width = tf.constant(0, tf.int64), tf.constant(0, tf.int64)
    for condition, h, w in reversed(cases):
        height, width = tf.where(condition, h, height), tf.where(condition, w, width)
    jpeg_size = tf.cond(jpeg, lambda: tf.cast(tf.io.extract_jpeg_shape(data)[:2], tf.int64),
                        lambda: tf.stack([height, width]))
    return jpeg_size[0], jpeg_size[1]


def decode_checked(data, max_pixels: int):
    """One encoded image → uint8 [H, W, C] (C as stored, first frame of a GIF), refused with
    InvalidArgumentError when its header claims more than `max_pixels` pixels."""
    height, width = header_size(data)
    message = tf.strings.format(
        "the image's header claims {} x {} pixels; the limit is {} pixels per image "
        "(max_image_pixels)", (height, width, max_pixels))
    check = tf.debugging.Assert(height * width <= max_pixels, [message],
                                name="check_image_size")
    with tf.control_dependencies([check]):
        # JPEGs with libjpeg's accurate integer IDCT, Pillow's (TensorFlow's default is the
        # fast one, a few levels off), so a file decodes to the pixels training decoded.
        return tf.cond(is_jpeg(data),
                       lambda: tf.io.decode_jpeg(data, channels=0,
                                                 dct_method="INTEGER_ACCURATE"),
                       lambda: tf.io.decode_image(data, channels=0, expand_animations=False))
