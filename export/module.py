"""The exported graph: any image in, cluster out, everything a client should not know inside.

`ClusteringModule` wraps a trained run's Keras model (backbone + heads, with the evaluation
`preprocess`: resize to the training resolution and the training normalisation) and its
read-out into two `tf.function` signatures:

    serving_default(images: uint8 [N, H, W, C])       any H, W; C = 1 grey, 2 grey + alpha,
                                                      3 RGB, 4 RGBA (alpha dropped)
    serving_bytes(image_bytes: string [N])            JPEG / PNG / BMP / GIF (first frame),
                                                      each decoded and resized on its own

Both return
    cluster        int64 [N]       the read-out's cluster id
    probabilities  float32 [N, K]  soft assignment (see below)
    distances      float32 [N, K]  see below
    embedding      float32 [N, D]  the read-out's feature (L2-normalised if it says so)

K-means read-outs: `distances` are squared Euclidean distances from the embedding to the K
centroids, `cluster = argmin distances`, and `probabilities = softmax(-distances / T)`, where
the temperature T is the mean squared distance of the run's evaluation images to their nearest
centroid (the K-means inertia per image, set by `calibrate` and written to the model card).
Mixture-argmax read-outs: `probabilities` are the mixing weights π, `cluster = argmax π`,
`distances = 1 - π`, and the embedding is the mixed embedding z.

Images whose size or channel count differs from the training data's are converted to
its channels (grey = 0.299 R + 0.587 G + 0.114 B, as the augmentation's grey; grey → RGB by
repetition) and resized to its resolution with the augmentation's PIL-style bilinear
resampling (antialiased when shrinking; skipped when the size already matches).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mixem_tf.augment import rgb_luma, resample_matrix, separable_resample

__all__ = ["ClusteringModule", "OUTPUTS"]

OUTPUTS = ("cluster", "probabilities", "distances", "embedding")
MIN_TEMPERATURE = 1e-12


def _to_channels(images, channels: int):
    """float [N, H, W, C] with C in 1..4 → [N, H, W, channels] (alpha dropped); untouched
    when C already equals `channels`."""
    c = tf.shape(images)[-1]

    def convert():
        index = tf.where(c >= 3, tf.constant([0, 1, 2]), tf.constant([0, 0, 0]))
        rgb = tf.gather(images, index, axis=-1)                 # grey repeated, or R, G, B
        if channels == 3:
            return rgb
        return tf.where(c >= 3, rgb_luma(rgb), rgb[..., 0:1])

    return tf.cond(tf.equal(c, channels), lambda: tf.identity(images), convert)


def _resize(images, size):
    """PIL-style bilinear resize of a float batch of any (dynamic) size to `size` (h, w); the
    batch is returned untouched when it already has that size."""
    shape = tf.shape(images)

    def resample():
        # One [1, out, in] matrix per axis, broadcast over the batch.
        zero = tf.zeros([1], tf.float32)
        rows = resample_matrix(zero, zero + tf.cast(shape[1], tf.float32), size[0], shape[1])
        cols = resample_matrix(zero, zero + tf.cast(shape[2], tf.float32), size[1], shape[2])
        return separable_resample(images, rows, cols)

    same = tf.logical_and(tf.equal(shape[1], size[0]), tf.equal(shape[2], size[1]))
    return tf.cond(same, lambda: tf.identity(images), resample)


class ClusteringModule(tf.Module):
    """A trained run's model and read-out as a servable `tf.Module`.

    Args:
        model: the run's `ClusteringMethod` (weights restored, built).
        readout: a `mixem_tf.runs.Readout`.
        input_shape: the training images' (H, W, C).
        temperature: T of the K-means soft assignment (replaced by `calibrate`).
    """

    def __init__(self, model, readout, input_shape, temperature: float = 1.0):
        super().__init__(name="mixem_tf_export")
        self.model = model
        self.input_shape = tuple(int(v) for v in input_shape)
        self.feature = readout.feature
        self.normalize = readout.normalize
        self.argmax = readout.centroids is None
        if self.argmax:
            self.feature, self.normalize = "z", False
            self.centroids = None
        else:
            self.centroids = tf.constant(readout.centroids, tf.float32)
        self.temperature = tf.Variable(float(temperature), dtype=tf.float32, trainable=False,
                                       name="temperature")
        self.serving_default = tf.function(
            self._serve_images,
            input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, name="images")])
        self.serving_bytes = tf.function(
            self._serve_bytes,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])

    @property
    def num_clusters(self) -> int:
        if self.argmax:
            return int(self.model.num_components)
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
        """Prepared images → the four outputs."""
        features = self.model(images, training=False)
        embedding = tf.cast(features[self.feature], tf.float32)
        if self.normalize:
            embedding = tf.math.l2_normalize(embedding, axis=-1, epsilon=1e-12)
        if self.argmax:
            pi = tf.cast(features["pi"], tf.float32)
            return {"cluster": tf.argmax(pi, axis=-1, output_type=tf.int64),
                    "probabilities": pi, "distances": 1.0 - pi, "embedding": embedding}
        distances = (tf.reduce_sum(tf.square(embedding), -1, keepdims=True)
                     - 2.0 * tf.matmul(embedding, self.centroids, transpose_b=True)
                     + tf.reduce_sum(tf.square(self.centroids), -1)[None, :])
        distances = tf.maximum(distances, 0.0)
        temperature = tf.maximum(self.temperature, MIN_TEMPERATURE)
        return {"cluster": tf.argmin(distances, axis=-1, output_type=tf.int64),
                "probabilities": tf.nn.softmax(-distances / temperature, axis=-1),
                "distances": distances, "embedding": embedding}

    def _serve_images(self, images):
        return self._head(self._prepare(images))

    def _serve_bytes(self, image_bytes):
        h, w, c = self.input_shape

        def decode(data):
            image = tf.io.decode_image(data, channels=0, expand_animations=False)
            return self._prepare(image[None])[0]

        images = tf.map_fn(decode, image_bytes,
                           fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
        return self._head(images)

    # -- calibration ------------------------------------------------------------------
    def predict(self, images, batch_size: int = 256) -> dict:
        """serving_default over a uint8 array in batches → numpy outputs."""
        parts = [self.serving_default(tf.constant(images[i:i + batch_size]))
                 for i in range(0, len(images), batch_size)]
        return {name: np.concatenate([p[name].numpy() for p in parts]) for name in OUTPUTS}

    def calibrate(self, images) -> np.ndarray:
        """Sets T from `images` (the run's evaluation data); returns their cluster ids."""
        outputs = self.predict(images)
        if not self.argmax:
            nearest = outputs["distances"].min(axis=-1)
            self.temperature.assign(float(max(nearest.mean(), MIN_TEMPERATURE)))
        return outputs["cluster"]
