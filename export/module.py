"""The exported graph: any image in, cluster out, everything a client should not know inside.

`ClusteringModule` wraps a trained run's Keras model (backbone + heads, with the evaluation
`preprocess`: resize to the training resolution and the training normalisation) and its
read-out into two `tf.function` signatures:

    serving_default(images: uint8 [N, H, W, C])       any H, W; C = 1 grey, 2 grey + alpha,
                                                      3 RGB, 4 RGBA (alpha dropped)
    serving_bytes(image_bytes: string [N])            JPEG / PNG / BMP / GIF (first frame) /
                                                      WebP, each decoded and resized on its own

Both refuse, with InvalidArgumentError (export/inputs.py): images with H or W = 0 or a channel
count outside 1..4 (also in the ONNX conversion of serving_default), and encoded images whose
header claims more than `max_image_pixels` pixels (checked before decoding).

Both return
    cluster        int64 [N]       the read-out's cluster id
    probabilities  float32 [N, K]  soft assignment (see below)
    distances      float32 [N, K]  see below
    embedding      float32 [N, D]  the read-out's feature (L2-normalised if it says so)

K-means read-outs: `distances` are squared Euclidean distances from the embedding to the K
centroids, `cluster = argmin distances`, and `probabilities = softmax(-distances / T)`, where
the temperature T is the read-out's label-free one, fitted by the run so that the
probabilities predict the cluster of an augmented copy of each image (`mixem_tf.calibration`;
for a read-out stored without it, the K-means inertia per image), stored with the read-out
(`mixem_tf.readouts`) and written to the model card.
Argmax read-outs (a method's own assignment, e.g. MIX'EM's π or cdec's Student-t q: the
read-out's feature is a probability vector): `probabilities` are that vector p,
`cluster = argmax p`, `distances = 1 - p`, and the embedding is the method's
`embedding_feature` (MIX'EM's and cdec's z).

Images whose size or channel count differs from the training data's are converted to
its channels (grey = 0.299 R + 0.587 G + 0.114 B, as the augmentation's grey; grey → RGB by
repetition) and resized to its resolution with the augmentation's PIL-style bilinear
resampling (antialiased when shrinking; the identity when the size already matches).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from export.inputs import DEFAULT_MAX_IMAGE_PIXELS, check_images, decode_checked
from mixem_tf.augment import resample_matrix, rgb_luma

__all__ = ["ClusteringModule", "OUTPUTS"]

OUTPUTS = ("cluster", "probabilities", "distances", "embedding")
MIN_TEMPERATURE = 1e-12


def _to_channels(images, channels: int):
    """float [N, H, W, C] with C in 1..4 → [N, H, W, channels] (alpha dropped). No tf.cond:
    when C already equals `channels` the same ops give the input back exactly (gathering
    [0, 1, 2] of RGB, or channel 0 of grey), and OpenVINO mishandles a cond whose branches are
    both Identity in the ONNX file."""
    c = tf.shape(images)[-1]
    index = tf.where(c >= 3, tf.constant([0, 1, 2]), tf.constant([0, 0, 0]))
    rgb = tf.gather(images, index, axis=-1)                     # grey repeated, or R, G, B
    if channels == 3:
        return rgb
    return tf.where(c >= 3, rgb_luma(rgb), rgb[..., 0:1])


def _resize(images, size):
    """PIL-style bilinear resize of a float batch of any (dynamic) size to `size` (h, w). At
    the same size the resampling matrices are the identity (weight 1 on the pixel itself, 0 on
    its neighbours), so the batch comes back exactly, without a tf.cond (see _to_channels)."""
    shape = tf.shape(images)
    zero = tf.zeros([1], tf.float32)
    rows = resample_matrix(zero, zero + tf.cast(shape[1], tf.float32), size[0], shape[1])[0]
    cols = resample_matrix(zero, zero + tf.cast(shape[2], tf.float32), size[1], shape[2])[0]
    return _apply_along(_apply_along(images, rows, axis=1), cols, axis=2)


def _apply_along(images, matrix, axis: int):
    """`matrix` [out, in] applied along `axis` (1 or 2) of [N, H, W, C], as one 2-D MatMul.
    Not a broadcast batched matmul: TensorFlow 2.21's oneDNN kernel corrupts the heap on
    [1, 1, h, H] @ [N, C, H, W] (a segfault a few calls later), and a plain MatMul converts
    to every ONNX runtime as it is."""
    order, inverse = ((1, 0, 2, 3), (1, 0, 2, 3)) if axis == 1 else ((2, 0, 1, 3), (1, 2, 0, 3))
    moved = tf.transpose(images, order)                         # [in, ...the other axes]
    rest = tf.shape(moved)[1:]
    flat = tf.reshape(moved, tf.stack([tf.shape(moved)[0], -1]))
    out = tf.reshape(tf.matmul(matrix, flat), tf.concat([tf.shape(matrix)[:1], rest], 0))
    return tf.transpose(out, inverse)


class ClusteringModule(tf.Module):
    """A trained run's model and read-out as a servable `tf.Module`.

    Args:
        model: the run's `ClusteringMethod` (weights restored, built).
        readout: a `mixem_tf.readouts.Readout`; its kind's `head` picks the clustering head
            (`READOUT_HEADS`) and its temperature T the softmax's.
        input_shape: the training images' (H, W, C).
        max_image_pixels: `serving_bytes` refuses an image whose header claims more pixels
            (height × width) before decoding it.
    """

    def __init__(self, model, readout, input_shape,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        super().__init__(name="mixem_tf_export")
        if max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be >= 1, got {max_image_pixels}")
        self.model = model
        self.input_shape = tuple(int(v) for v in input_shape)
        self.max_image_pixels = int(max_image_pixels)
        self.feature = readout.feature
        self.normalize = readout.normalize
        self.kind = readout.head
        self.argmax = self.kind == "argmax"
        if self.argmax:
            self.probabilities_feature = readout.feature
            self.feature, self.normalize = model.embedding_feature, False
            probe = model(np.zeros((1, *self.input_shape), np.uint8), training=False)
            self._num_clusters = int(probe[readout.feature].shape[-1])
            self.centroids = None
        else:
            self.centroids = tf.constant(readout.centroids, tf.float32)
        self.temperature = tf.Variable(float(readout.temperature), dtype=tf.float32,
                                       trainable=False, name="temperature")
        self.serving_default = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
        self.serving_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])

    @property
    def num_clusters(self) -> int:
        if self.argmax:
            return self._num_clusters
        return int(self.centroids.shape[0])

    def signatures(self) -> dict:
        return {"serving_default": self.serving_default, "serving_bytes": self.serving_bytes}

    # -- graph pieces -----------------------------------------------------------------
    def _prepare(self, images):
        """uint8 (or float) [N, H, W, C] → float [N, h, w, c] of the training data's shape."""
        h, w, c = self.input_shape
        # Resize first: both steps are linear, and converting the smaller image is cheaper.
        x = _to_channels(_resize(tf.cast(images, tf.float32), (h, w)), c)
        return tf.ensure_shape(x, [None, h, w, c])

    def _head(self, images):
        """Prepared images → the four outputs of the read-out's kind (`READOUT_HEADS`)."""
        features = self.model(images, training=False)
        embedding = tf.cast(features[self.feature], tf.float32)
        if self.normalize:
            embedding = tf.math.l2_normalize(embedding, axis=-1, epsilon=1e-12)
        return READOUT_HEADS[self.kind](self, features, embedding)

    def _centroid_head(self, features, embedding):
        """K-means read-outs: squared distances to the centroids, softmax(-d / T)."""
        distances = (tf.reduce_sum(tf.square(embedding), -1, keepdims=True)
                     - 2.0 * tf.matmul(embedding, self.centroids, transpose_b=True)
                     + tf.reduce_sum(tf.square(self.centroids), -1)[None, :])
        distances = tf.maximum(distances, 0.0)
        temperature = tf.maximum(self.temperature, MIN_TEMPERATURE)
        return {"cluster": tf.argmin(distances, axis=-1, output_type=tf.int64),
                "probabilities": tf.nn.softmax(-distances / temperature, axis=-1),
                "distances": distances, "embedding": embedding}

    def _argmax_head(self, features, embedding):
        """A method's own assignment: its probability vector is the probabilities."""
        p = tf.cast(features[self.probabilities_feature], tf.float32)
        return {"cluster": tf.argmax(p, axis=-1, output_type=tf.int64),
                "probabilities": p, "distances": 1.0 - p, "embedding": embedding}

    def _serve_images(self, images):
        return self._head(self._prepare(check_images(images)))

    def _serve_bytes(self, image_bytes):
        h, w, c = self.input_shape

        def decode(data):
            return self._prepare(decode_checked(data, self.max_image_pixels)[None])[0]

        # One image at a time: a batch of large images never sits decoded in memory at once.
        images = tf.map_fn(decode, image_bytes, parallel_iterations=1,
                           fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
        return self._head(images)

    # -- in Python ----------------------------------------------------------------------
    def predict(self, images, batch_size: int = 256) -> dict:
        """serving_default over a uint8 array (or a memory map, read a batch at a time:
        `read_rows`) in batches → numpy outputs."""
        from mixem_tf.data.cache import read_rows

        parts = []
        for i in range(0, len(images), batch_size):
            batch = read_rows(images, slice(i, i + batch_size))
            outputs = self.serving_default(tf.constant(batch))
            parts.append({name: outputs[name].numpy() for name in OUTPUTS})
        return {name: np.concatenate([p[name] for p in parts]) for name in OUTPUTS}


# The exported head of each read-out kind (`ReadoutKind.head`) → method.
READOUT_HEADS = {"centroids": ClusteringModule._centroid_head,
                 "argmax": ClusteringModule._argmax_head}
