"""Recipe helpers: a method's settings per dataset, as data (`ClusteringMethod.recipe`).

A method declares its recipes with `recipe_table` and looks one up with `dataset_recipe`; the
run's settings that the recipes fill in are `mixem_tf.settings.TrainConfig`.

Example:
    >>> recipes = recipe_table(paper={"lr": 1e-4}, small={"lr": 1e-3})
    >>> dataset_recipe(recipes, "folder:/data/photos")["image_size"]
    96
"""

from __future__ import annotations

from mixem_tf.data.registry import DATASET_FACTS, DATASET_KEYS, dataset_key

__all__ = ["DATASET_KEYS", "dataset_recipe", "recipe_table"]


def recipe_table(paper: dict, small: dict, folder: dict | None = None) -> dict:
    """A method's recipes per dataset key, from each dataset's recipe class
    (`mixem_tf.data.registry.DATASET_FACTS`): `paper` for STL-10 (96 px) and CIFAR (32 px),
    and with `folder` on top for `folder:` (96 px); `small` for MNIST and Fashion-MNIST
    (15 epochs, 28 px) and digits (60 epochs, 8 px), the budgets of a 2-core CPU. Every
    recipe trains at the dataset's native size."""
    table = {}
    for key, facts in DATASET_FACTS.items():
        base = small if facts.recipe == "small" else paper
        epochs = {"epochs": facts.epochs} if facts.epochs else {}
        extra = (folder or {}) if facts.recipe == "folder" else {}
        table[key] = {**base, **epochs, "image_size": facts.image_size, **extra}
    return table


def dataset_recipe(recipes: dict, dataset: str) -> dict:
    """A copy of `recipes[KEY]` for a dataset name (`folder:PATH` uses "folder")."""
    key = dataset_key(dataset)
    if key not in recipes:
        raise ValueError(f"this method has no recipe for {dataset!r}")
    recipe = dict(recipes[key])
    if "options" in recipe:
        recipe["options"] = dict(recipe["options"])
    return recipe
