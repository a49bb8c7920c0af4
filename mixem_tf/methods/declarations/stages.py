"""What SCAN's two stages declare alike (no Keras): the settings they take from their source
run, the checks of that run before anything is written, their recipes and default read-out
(the head's argmax); the models are in `mixem_tf.methods.stages`.
"""

from __future__ import annotations

from typing import ClassVar

from mixem_tf.methods.declaration import MethodDeclaration
from mixem_tf.recipes import DATASET_KEYS

__all__ = ["StageDeclaration", "stage_recipes"]

#: The settings a stage takes from its source run when the user leaves them unset.
INHERITED = ("data_dir", "train_on", "evaluate_on", "image_size", "backbone",
             "backbone_width", "stem")
#: The settings that must equal the source's (the backbone's weights and the data must fit).
MUST_MATCH = ("dataset", "image_size", "backbone", "backbone_width", "stem")


def stage_recipes(paper: dict, small: dict, small_epochs: dict) -> dict:
    """A stage's recipes: `paper` (the official one) for STL-10, CIFAR and folders, `small`
    with `small_epochs[dataset]` for MNIST, Fashion-MNIST and digits."""
    recipes = {key: dict(paper) for key in DATASET_KEYS}
    for key, epochs in small_epochs.items():
        recipes[key] = {**small, "epochs": epochs}
    return recipes


class StageDeclaration(MethodDeclaration):
    """A stage of SCAN started from another run (`--init-from`).

    Class attributes a stage sets besides `MethodDeclaration`'s:
        readout_option: the name of its option that picks the source read-out it reads
            (None: it reads the source's default read-out).
    """

    protocol = {"train_on": "whole", "evaluate_on": "all"}
    default_readout = {"feature": "p", "normalize": False, "clustering": "argmax"}
    readout_option: ClassVar[str | None] = None

    @classmethod
    def source_settings(cls, source_dir) -> dict:
        from mixem_tf.runs import load_run_config

        saved = load_run_config(source_dir, flag="--init-from")
        settings = saved["settings"]
        return {**{key: settings.get(key) for key in INHERITED},
                "clusters": saved["num_clusters"]}

    @classmethod
    def check_source(cls, config) -> None:
        from mixem_tf.readouts import load_metrics, load_readout
        from mixem_tf.runs import load_run_config

        if not config.init_from:
            raise ValueError(f"--method {cls.name} refines a trained run: pass --init-from RUN "
                             "(e.g. a simclr run)")
        saved = load_run_config(config.init_from, flag="--init-from")
        theirs = saved["settings"]
        for key in MUST_MATCH:
            if theirs.get(key) != getattr(config, key):
                raise ValueError(f"--init-from {config.init_from}: its {key} is "
                                 f"{theirs.get(key)!r}, this run's {getattr(config, key)!r}; "
                                 f"{cls.name} refines a run on the same data and backbone")
        if config.clusters != saved["num_clusters"]:
            raise ValueError(f"--clusters {config.clusters}: {cls.name} keeps the K of its "
                             f"source run ({saved['num_clusters']} in {config.init_from})")
        try:
            load_metrics(config.init_from)
            choice = config.options.get(cls.readout_option) if cls.readout_option else None
            load_readout(config.init_from, choice or None)
        except ValueError as error:
            raise ValueError(f"--init-from: {error}") from None
