"""Training and serving see the same pixels for a file: the folder loader (Pillow, full-scale
decoding, the graph's resampling) and the exported graph (TensorFlow's decoders with Pillow's
JPEG IDCT, resize in the graph) agree on a mixed-format folder, and so do the clusters."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
Image = pytest.importorskip("PIL.Image")

from export.inputs import decode_checked  # noqa: E402
from export.module import _resize, _to_channels  # noqa: E402
from mixem_tf.data import load_folder  # noqa: E402
from mixem_tf.data.folder import list_files  # noqa: E402

# (format, mode, suffix): JPEG large enough for reduced-scale decoding, grey and colour; PNG
# RGB, grey, RGBA; lossy WebP; BMP; palette GIF.
FORMATS = [("JPEG", "RGB", "jpg"), ("JPEG", "L", "jpeg"), ("PNG", "RGB", "png"),
           ("PNG", "L", "png"), ("PNG", "RGBA", "png"), ("WEBP", "RGB", "webp"),
           ("BMP", "RGB", "bmp"), ("GIF", "P", "gif")]


def _picture(rng, height, width, phase):
    """Smooth stripes plus noise: detail at every scale, as in a photo."""
    yy, xx = np.mgrid[0:height, 0:width]
    waves = np.stack([np.sin(xx / 9 + phase), np.cos(yy / 13 - phase),
                      np.sin((xx + yy) / 21)], -1)
    return (waves * 90 + 128 + rng.normal(0, 25, (height, width, 3))).clip(0, 255) \
        .astype(np.uint8)


def _mixed_folder(root, per_class=8):
    rng = np.random.default_rng(0)
    for c, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            fmt, mode, suffix = FORMATS[(i + c) % len(FORMATS)]
            height, width = (int(v) for v in rng.integers(60, 400, 2))
            image = Image.fromarray(_picture(rng, height, width, phase=3 * c + i / 4))
            image = image.convert(mode) if mode != "P" else image.quantize(64)
            image.save(root / name / f"{i}.{suffix}", fmt, quality=90)
    return root


def _served_pixels(path, size):
    data = tf.constant(path.read_bytes())
    image = tf.cast(decode_checked(data, 10 ** 8)[None], tf.float32)
    return _to_channels(_resize(image, size), 3)[0].numpy()


def test_the_loader_gives_the_pixels_the_graph_computes_from_each_file(tmp_path):
    root = _mixed_folder(tmp_path / "images")
    ds = load_folder(root, image_size=24, progress=False)
    files = list_files(root)
    assert len(ds) == len(files) == 16
    for image, path in zip(ds.images, files):
        served = _served_pixels(path, (24, 24))
        # The graph does not round; the loader rounds once. Reduced-scale JPEG decoding, the
        # fast IDCT or Pillow's two-pass rounding each put pixels several levels apart.
        assert np.abs(image - served).max() <= 0.5 + 1e-3, path.name


def test_an_exported_folder_run_clusters_each_file_as_its_read_out(tmp_path):
    from export.savedmodel import export_run
    from mixem_tf.settings import TrainConfig
    from mixem_tf.training import train_run

    root = _mixed_folder(tmp_path / "images", per_class=12)
    run = tmp_path / "run"
    train_run(TrainConfig(dataset=f"folder:{root}", backbone="convnet", backbone_width=8,
                          image_size=16, batch_size=8, epochs=1), run, verbose=0)
    version = export_run(run, tmp_path / "models", "m", verbose=False)
    served = tf.saved_model.load(str(version))
    ds = load_folder(root, image_size=16, progress=False)
    # serving_default on the run's own (cached) images is the read-out's computation.
    readout = served.signatures["serving_default"](images=tf.constant(np.asarray(ds.images)))
    files = list_files(root)
    from_files = served.signatures["serving_bytes"](
        image_bytes=tf.constant([p.read_bytes() for p in files]))
    assert len(set(readout["cluster"].numpy().tolist())) > 1  # a real clustering
    np.testing.assert_array_equal(from_files["cluster"].numpy(), readout["cluster"].numpy())
    np.testing.assert_allclose(from_files["embedding"].numpy(), readout["embedding"].numpy(),
                               atol=0.02)
