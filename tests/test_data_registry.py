"""Registry, digits, protocols and the CIFAR-100 → 20 map; none of it needs TensorFlow."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mixem_tf.data import (
    CIFAR100_TO_20,
    DATASET_NAMES,
    dataset_info,
    load_dataset,
    load_protocol,
)
from mixem_tf.data.tfds_source import CIFAR100_COARSE_NAMES, CIFAR100_FINE_NAMES

pytestmark = pytest.mark.core

# CIFAR-100's superclasses as listed on www.cs.toronto.edu/~kriz/cifar.html, with the fine
# class names spelled as in the dataset's `meta` file.
_CIFAR100_HIERARCHY = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}


def test_cifar100_to_20_matches_the_official_hierarchy():
    # Label ids are the alphabetical order of the names, as in CIFAR-100's meta file.
    fine_names = sorted(n for names in _CIFAR100_HIERARCHY.values() for n in names)
    coarse_names = sorted(_CIFAR100_HIERARCHY)
    assert tuple(fine_names) == CIFAR100_FINE_NAMES
    assert tuple(coarse_names) == CIFAR100_COARSE_NAMES
    expected = np.empty(100, np.int64)
    for coarse_id, coarse in enumerate(coarse_names):
        for fine in _CIFAR100_HIERARCHY[coarse]:
            expected[fine_names.index(fine)] = coarse_id
    np.testing.assert_array_equal(CIFAR100_TO_20, expected)
    np.testing.assert_array_equal(np.bincount(CIFAR100_TO_20), [5] * 20)
    assert not CIFAR100_TO_20.flags.writeable


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: stl10, cifar10, cifar100_20.*folder:PATH"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="valid names"):
        dataset_info("cifar100")
    assert len(DATASET_NAMES) == 7


def test_unknown_split_lists_valid_splits():
    with pytest.raises(ValueError, match=r"valid splits: \['train', 'test', 'all'\]"):
        load_dataset("cifar10", "validation")
    with pytest.raises(ValueError, match="unlabeled"):
        load_dataset("stl10", "extra")


@pytest.mark.parametrize("size", [0, "x", (1, 2, 3)])
def test_bad_image_size_fails_before_loading(size):
    with pytest.raises((ValueError, TypeError), match="image_size"):
        load_dataset("cifar10", image_size=size)  # no TFDS access happens


def test_dataset_info_without_loading():
    stl = dataset_info("stl10")
    assert stl.num_classes == 10 and stl.image_shape == (96, 96, 3) and stl.channels == 3
    assert stl.splits == {"train": 5000, "test": 8000, "unlabeled": 100000}
    assert stl.labeled_splits == ("train", "test")
    assert dataset_info("cifar100_20").num_classes == 20
    assert dataset_info("mnist").image_shape == (28, 28, 1)
    assert dataset_info("fashion_mnist").splits == {"train": 60000, "test": 10000}
    digits = dataset_info("digits")
    assert digits.single_split and digits.splits == {"all": 1797}
    folder = dataset_info("folder:/does/not/matter")
    assert folder.num_classes is None and folder.image_shape == (96, 96, 3)


def test_digits():
    ds = load_dataset("digits")
    assert ds.images.shape == (1797, 8, 8, 1) and ds.images.dtype == np.uint8
    assert ds.images.min() == 0 and ds.images.max() == 255
    assert set(np.unique(ds.images).tolist()) <= {round(v * 255 / 16) for v in range(17)}
    assert ds.labels.dtype == np.int64 and ds.num_classes == 10
    np.testing.assert_array_equal(np.bincount(ds.labels).sum(), 1797)
    resized = load_dataset("digits", "all", image_size=16, channels=3)
    assert resized.images.shape == (1797, 16, 16, 3)
    with pytest.raises(ValueError, match="one split, 'all', and no held-out test images"):
        load_dataset("digits", "test")


def test_digits_protocols_use_the_whole_set_on_both_sides():
    for evaluate_on in ("test", "all"):
        train, evaluation = load_protocol("digits", train_on="whole", evaluate_on=evaluate_on)
        assert train is evaluation and len(train) == 1797
    train, evaluation = load_protocol("digits", train_on="train", evaluate_on="test")
    assert len(train) == len(evaluation) == 1797


def test_protocol_argument_errors():
    with pytest.raises(ValueError, match="train_on"):
        load_protocol("digits", train_on="test")
    with pytest.raises(ValueError, match="evaluate_on"):
        load_protocol("digits", evaluate_on="train")
    with pytest.raises(ValueError, match="no unlabeled split"):
        load_protocol("cifar10", include_unlabeled=True)


@pytest.mark.skipif(
    not __import__("os").path.exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
    reason="Debian Fashion-MNIST files not installed",
)
def test_fashion_mnist_protocols_from_idx_files():
    train, evaluation = load_protocol("fashion_mnist", train_on="whole", evaluate_on="test")
    assert len(train) == 70000 and len(evaluation) == 10000 and evaluation.split == "test"
    train, evaluation = load_protocol("fashion_mnist", train_on="train", evaluate_on="all")
    assert len(train) == 60000 and len(evaluation) == 70000


def test_import_and_core_sources_work_without_tensorflow():
    script = textwrap.dedent(
        """
        import sys

        class NoTensorFlow:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
                    raise ImportError("TensorFlow is blocked in this test")

        sys.meta_path.insert(0, NoTensorFlow())
        import mixem_tf.data as data
        train, evaluation = data.load_protocol("digits")
        assert len(train) == 1797
        try:
            data.load_dataset("cifar10")
        except data.DatasetUnavailableError as exc:
            assert "not installed" in str(exc), exc
        else:
            raise AssertionError("cifar10 loaded without TFDS")
        assert not any(m.startswith("tensorflow") for m in sys.modules)
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_dataset_facts_are_the_one_source_of_sizes_channels_and_recipe_classes():
    from mixem_tf.data.registry import DATASET_FACTS, DATASET_KEYS, dataset_facts
    from mixem_tf.methods.augmentation import view_config
    from mixem_tf.recipes import dataset_recipe, recipe_table

    table = recipe_table({"lr": 1.0}, {"lr": 2.0}, folder={"batch_size": 7})
    assert tuple(table) == DATASET_KEYS == tuple(DATASET_FACTS)
    for name in ("stl10", "cifar10", "cifar100_20", "mnist", "fashion_mnist", "digits"):
        facts = dataset_facts(name)
        info = dataset_info(name)
        assert info.image_shape == (facts.image_size, facts.image_size, facts.channels)
        recipe = dataset_recipe(table, name)
        assert recipe["image_size"] == facts.image_size
        assert recipe["lr"] == (2.0 if facts.recipe == "small" else 1.0)
        assert view_config("mice", name).size == (facts.image_size, facts.image_size)
    assert [k for k, f in DATASET_FACTS.items() if f.recipe == "small"] == [
        "mnist", "fashion_mnist", "digits"]
    folder = dataset_recipe(table, "folder:/any/where")
    assert folder == {"lr": 1.0, "image_size": 96, "batch_size": 7}
    assert dataset_info("folder:/x").facts is DATASET_FACTS["folder"]
    with pytest.raises(ValueError, match="unknown dataset 'folder'"):
        dataset_facts("folder")  # the key is not a name
