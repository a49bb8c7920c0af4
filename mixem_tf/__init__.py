"""mixem-tf: unsupervised image classification (MIX'EM, MiCE, SimCLR + K-means) in Keras 3.

The core (augmentation, backbones, heads, losses, metrics, clustering read-outs) needs only
keras, numpy, scipy and scikit-learn, and runs under ``KERAS_BACKEND=tensorflow`` or ``jax``.
TensorFlow-only parts (tf.data, TFDS, SavedModel, serving) import TensorFlow where they use it.
"""

__version__ = "0.1.0"
