"""Recipe helpers: a method's settings per dataset, as data (`MethodDeclaration.recipe`).

A method declares its recipes with `recipe_table` and looks one up with `dataset_recipe`; the
run's settings that the recipes fill in are `mixem_tf.settings.TrainConfig`.

Example:
    >>> recipes = recipe_table(paper={"lr": 1e-4}, small={"lr": 1e-3})
    >>> dataset_recipe(recipes, "folder:/data/photos")["image_size"]
    96
"""

from __future__ import annotations

from mixem_tf.data.registry import DATASET_FACTS, DATASET_KEYS, dataset_key

__all__ = ["CPU_FOLDER", "DATASET_KEYS", "cpu_folder_recipe", "dataset_recipe",
           "describe_cpu_recipe", "recipe_table", "uses_cpu_recipe"]

#: A `folder:` run sized for a CPU: the small datasets' settings (the method's recipe for
#: `CPU_FOLDER["like"]`: the ConvNet, its learning rate and weights) at this image size and
#: epoch count, which trains a few thousand images in minutes on two cores
#: (docs/BENCHMARKS.md, "A folder on a CPU").
CPU_FOLDER = {"like": "fashion_mnist", "image_size": 32, "epochs": 30}


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


def uses_cpu_recipe(dataset: str, backbone: str | None, gpu: bool) -> bool:
    """Whether a run gets `cpu_folder_recipe`: a `folder:` run with the ConvNet asked for, or
    with no backbone asked for on a machine without a GPU."""
    return dataset.startswith("folder:") and (backbone == "convnet" or
                                              (backbone is None and not gpu))


def cpu_folder_recipe(method_recipe) -> dict:
    """`CPU_FOLDER` built from a method's `recipe` function (dataset name → settings)."""
    recipe = method_recipe(CPU_FOLDER["like"])
    recipe.update(image_size=CPU_FOLDER["image_size"], epochs=CPU_FOLDER["epochs"])
    return recipe


def describe_cpu_recipe() -> str:
    """The CPU recipe in a few words, for the line a run prints when it uses it."""
    return (f"the ConvNet at {CPU_FOLDER['image_size']} px, {CPU_FOLDER['epochs']} epochs, "
            f"the small datasets' settings; --backbone, --image-size, --epochs change them")
