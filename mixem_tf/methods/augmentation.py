"""Each method's view pipeline per dataset: the papers' augmentation settings as data.

A method names its pipeline (`MethodDeclaration.pipeline`); `view_config` turns that pipeline and
a dataset into an `AugmentConfig`. Sources (``docs/METHODS.md``):

* ``"simclr"`` (MIX'EM and its SimCLR baseline) — MIX'EM ``dataset_wrapper.py`` (§1.3): scale
  (0.08, 1), flip, ColorJitter(0.8, 0.8, 0.8, 0.2) with p 0.8, grayscale p 0.2, blur p 0.5 with
  σ ~ U(0.1, 2) and a kernel of 10 % of the size; CIFAR-10 / CIFAR-100 mean and std, identity
  for STL-10 and every other dataset.
* ``"mice"`` — MiCE ``train_MiCE.py`` / ``util.py`` (§2.3): scale (0.2, 1), grayscale p 0.2,
  ColorJitter(0.4, 0.4, 0.4, 0.4) always, flip, no blur; MiCE's per-dataset mean and std (grey
  datasets: their own statistics, not from docs/METHODS.md).
* ``"cdec"`` — ``transform_sic.py`` (§3.3): scale (0.08, 1), flip,
  ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 (s = 0.5, its CIFAR-10 setting, used for every
  dataset here), grayscale p 0.2, no blur (the original blurs only ImageNet-10/dogs), no
  normalisation.

On grey datasets saturation, hue and grayscale are off (they do nothing to one channel);
``mnist`` and ``digits`` never flip; ``digits`` uses the milder crop scale
:data:`DIGITS_CROP_SCALE` (not from docs/METHODS.md). The blur kernel follows the output size
(28 px → 3, 8 px → below 3, so no blur).
"""

from __future__ import annotations

from mixem_tf.augment import AugmentConfig
from mixem_tf.data.registry import FOLDER_KEY, dataset_facts, dataset_key

__all__ = ["DIGITS_CROP_SCALE", "PIPELINES", "view_config"]
IDENTITY = ((0.0,), (1.0,))
# MIX'EM dataset_wrapper.py (docs/METHODS.md §1.3). Its CIFAR-10 std is the widely copied
# (0.2023, 0.1994, 0.2010), kept here for fidelity.
MIXEM_NORMALISATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100_20": ((0.507, 0.487, 0.441), (0.267, 0.256, 0.276)),
}
# MiCE util.py (docs/METHODS.md §2.3). The grey datasets are not in MiCE; they get their own
# statistics so that MiCE's "normalise by dataset statistics" still holds (not from
# docs/METHODS.md):
# MNIST and Fashion-MNIST the usual train-set values, digits computed on sklearn's 1797 images.
MICE_NORMALISATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100_20": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "stl10": ((0.4409, 0.4279, 0.3868), (0.2683, 0.2610, 0.2687)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "digits": ((0.3053,), (0.3760,)),
}
#: Milder crop for 8x8 digits: at scale 0.08 a crop keeps about 5 pixels of a digit.
DIGITS_CROP_SCALE = (0.5, 1.0)

#: pipeline name → (AugmentConfig settings, normalisation per dataset).
PIPELINES = {
    "simclr": (dict(crop_scale=(0.08, 1.0), brightness=0.8, contrast=0.8, saturation=0.8,
                    hue=0.2, jitter_prob=0.8, gray_prob=0.2, blur_prob=0.5, order="mixem"),
               MIXEM_NORMALISATION),
    "mice": (dict(crop_scale=(0.2, 1.0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.4,
                  jitter_prob=1.0, gray_prob=0.2, blur_prob=0.0, order="mice"),
             MICE_NORMALISATION),
    "cdec": (dict(crop_scale=(0.08, 1.0), brightness=0.4, contrast=0.4, saturation=0.4,
                  hue=0.1, jitter_prob=0.8, gray_prob=0.2, blur_prob=0.0, order="mixem"),
             {}),
}


def view_config(pipeline: str, dataset: str, image_size=None) -> AugmentConfig:
    """The `AugmentConfig` of `pipeline` (a key of `PIPELINES`) on `dataset`.

    Args:
        dataset: one of `DATASET_NAMES` (``folder:PATH`` needs ``image_size``).
        image_size: output size (int or ``(h, w)``); ``None`` means the dataset's native size
            (`mixem_tf.data.registry.DATASET_FACTS`).

    Raises:
        ValueError: unknown pipeline or dataset, or ``folder:`` without ``image_size``.

    Example:
        >>> view_config("mice", "cifar10").crop_scale
        (0.2, 1.0)
    """
    if pipeline not in PIPELINES:
        raise ValueError(f"unknown view pipeline {pipeline!r}; valid: {sorted(PIPELINES)}")
    key = dataset_key(dataset)
    native, channels = None, None  # a folder's images come at the size they are loaded at
    if key != FOLDER_KEY:
        native, channels = dataset_facts(dataset).image_size, dataset_facts(dataset).channels
    if image_size is None:
        if native is None:
            raise ValueError(f"the {pipeline} views of {dataset!r} need an image size: pass "
                             "the size the folder images are loaded at, e.g. 64")
        image_size = native
    settings, normalisation = PIPELINES[pipeline]
    mean, std = normalisation.get(key, IDENTITY)
    kwargs = dict(settings)
    if channels == 1:
        kwargs.update(saturation=0.0, hue=0.0, gray_prob=0.0)
    if key in ("mnist", "digits"):
        kwargs["flip"] = False
    if key == "digits":
        kwargs["crop_scale"] = DIGITS_CROP_SCALE
    return AugmentConfig(size=image_size, mean=mean, std=std, **kwargs)
