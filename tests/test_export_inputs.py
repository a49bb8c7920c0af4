"""What the exported graph refuses (export/inputs.py), checked on the graph pieces alone."""

import io

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from export.inputs import (  # noqa: E402
    DEFAULT_MAX_IMAGE_PIXELS,
    check_images,
    decode_checked,
    header_size,
)
from serving.limits import DEFAULT_MAX_IMAGE_PIXELS as SERVER_DEFAULT  # noqa: E402
from serving_fixtures import png_header  # noqa: E402

check = tf.function(check_images, input_signature=[tf.TensorSpec([None] * 4, tf.uint8)])


def encoded(fmt, height=37, width=61, **options):
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8)
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("shape", [(1, 8, 8, 1), (0, 8, 8, 3), (1, 1, 1, 1), (2, 3, 5, 2),
                                   (1, 9, 4, 4)])
def test_valid_batches_pass_unchanged(shape):
    x = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
    np.testing.assert_array_equal(check(tf.constant(x)).numpy(), x)


@pytest.mark.parametrize("shape", [(1, 0, 8, 1), (1, 8, 0, 3), (1, 8, 8, 5), (1, 8, 8, 200),
                                   (1, 8, 8, 0), (0, 8, 8, 5)])
def test_empty_images_and_channel_counts_outside_1_to_4_are_refused(shape):
    with pytest.raises(tf.errors.InvalidArgumentError, match="C = 1 \\(grey\\)"):
        check(tf.zeros(shape, tf.uint8))


@pytest.mark.parametrize("fmt, options", [("PNG", {}), ("JPEG", {}), ("GIF", {}), ("BMP", {}),
                                          ("WEBP", {}), ("WEBP", {"lossless": True})])
def test_header_size_of_every_decodable_format_matches_the_server(fmt, options):
    from serving.image_size import image_size

    data = encoded(fmt, **options)
    height, width = header_size(tf.constant(data))
    assert (int(height), int(width)) == (37, 61) == image_size(data)


def test_unknown_or_short_data_has_no_size():
    for data in (b"", b"GIF", b"not an image at all, just text"):
        assert [int(v) for v in header_size(tf.constant(data))] == [0, 0]


def test_decode_refuses_a_claimed_huge_image_before_decoding():
    decode = tf.function(lambda data: decode_checked(data, DEFAULT_MAX_IMAGE_PIXELS))
    with pytest.raises(tf.errors.InvalidArgumentError, match="20000 x 20000 pixels"):
        decode(tf.constant(png_header(20000, 20000)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit is 100"):
        decode_checked(tf.constant(encoded("JPEG", 20, 20)), 100)
    assert decode_checked(tf.constant(encoded("PNG", 10, 10)), 100).shape == (10, 10, 3)


def test_the_graph_and_the_server_share_the_default_limit():
    assert DEFAULT_MAX_IMAGE_PIXELS == SERVER_DEFAULT
