"""Recipe helpers: a method's settings per dataset, as data (`MethodDeclaration.recipe`).

A method declares its recipes with `recipe_table` and looks one up with `dataset_recipe`; the
run's settings that the recipes fill in are `mixem_tf.settings.TrainConfig`.

Example:
    >>> recipes = recipe_table(paper={"lr": 1e-4}, small={"lr": 1e-3})
    >>> dataset_recipe(recipes, "folder:/data/photos")["image_size"]
    96
"""

from __future__ import annotations

__all__ = ["DATASET_KEYS", "dataset_recipe", "recipe_table"]

DATASET_KEYS = ("stl10", "cifar10", "cifar100_20", "mnist", "fashion_mnist", "digits", "folder")


def recipe_table(paper: dict, small: dict, folder: dict | None = None) -> dict:
    """A method's recipes per dataset key: `paper` for STL-10 (96 px) and CIFAR (32 px), and
    with `folder` on top for `folder:` (96 px); `small` for MNIST and Fashion-MNIST (15 epochs,
    28 px) and digits (60 epochs, 8 px), the budgets of a 2-core CPU."""
    return {
        "stl10": {**paper, "image_size": 96},
        "cifar10": {**paper, "image_size": 32},
        "cifar100_20": {**paper, "image_size": 32},
        "mnist": {**small, "epochs": 15, "image_size": 28},
        "fashion_mnist": {**small, "epochs": 15, "image_size": 28},
        "digits": {**small, "epochs": 60, "image_size": 8},
        "folder": {**paper, "image_size": 96, **(folder or {})},
    }


def dataset_recipe(recipes: dict, dataset: str) -> dict:
    """A copy of `recipes[KEY]` for a dataset name (`folder:PATH` uses "folder")."""
    key = "folder" if dataset.startswith("folder:") else dataset
    if key not in DATASET_KEYS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from "
                         f"{', '.join(k for k in DATASET_KEYS if k != 'folder')} or folder:PATH")
    if key not in recipes:
        raise ValueError(f"this method has no recipe for {dataset!r}")
    recipe = dict(recipes[key])
    if "options" in recipe:
        recipe["options"] = dict(recipe["options"])
    return recipe
