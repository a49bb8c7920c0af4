"""mixem-tf: unsupervised image classification (MIX'EM, MiCE, cdec, SimCLR + K-means) in Keras 3.

The methods are specified in docs/METHODS.md; each is a plug-in in `mixem_tf.methods`.

The core (augmentation, backbones, heads, losses, metrics, clustering read-outs) needs only
keras, numpy, scipy and scikit-learn, and runs under ``KERAS_BACKEND=tensorflow`` or ``jax``.
TensorFlow-only parts (tf.data, TFDS, SavedModel, serving) import TensorFlow where they use it.
"""

__version__ = "0.1.0"
