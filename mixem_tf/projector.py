"""The evaluation embeddings in TensorBoard's projector, with a thumbnail sprite.

Written with TensorBoard's own projector plug-in (`tensorboard.plugins.projector`) into a
folder of the run's TensorBoard logs, so `tensorboard --logdir RUN/logs` shows them under
"Projector": the vectors as a TSV (`tensor_path`, no TensorFlow checkpoint needed), one
metadata row per image (cluster, confidence, stays when augmented, and the label where the
data has one), and a sprite of thumbnails. Nothing is written when TensorBoard is not
installed.

Example:
    >>> write_projector("runs/x/logs/projector", space, images, {"cluster": clusters})
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["MAX_SPRITE_PIXELS", "write_projector"]

#: The projector refuses sprites larger than 8192 × 8192 pixels.
MAX_SPRITE_PIXELS = 8192
THUMB = 32


def _sprite(images: np.ndarray, cell: int):
    """A square grid of `cell`-pixel thumbnails, row by row, as the projector reads it."""
    from PIL import Image

    from mixem_tf.gallery import thumbnail

    side = math.ceil(math.sqrt(len(images)))
    sheet = Image.new("RGB", (side * cell, side * cell), "white")
    for i, image in enumerate(images):
        thumb = thumbnail(image, cell)
        sheet.paste(thumb, ((i % side) * cell, (i // side) * cell))
    return sheet


def write_projector(log_dir, embedding, images, metadata: dict, *,
                    name: str = "embedding") -> Path | None:
    """Writes the projector's files for `embedding` [N, D] of uint8 `images` [N, H, W, C],
    with `metadata` (column → N values), into `log_dir`; returns it, or None when
    TensorBoard is not installed."""
    try:
        from tensorboard.plugins import projector
    except ImportError:
        return None
    embedding = np.asarray(embedding, np.float32)
    if len(embedding) != len(images) or any(len(v) != len(images) for v in metadata.values()):
        raise ValueError("the projector needs one embedding, image and metadata row per image")
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    np.savetxt(log_dir / "tensors.tsv", embedding, delimiter="\t", fmt="%.6g")
    columns = list(metadata)
    lines = ["\t".join(columns)] + ["\t".join(str(metadata[c][i]) for c in columns)
                                    for i in range(len(images))]
    (log_dir / "metadata.tsv").write_text("\n".join(lines) + "\n")
    cell = min(THUMB, MAX_SPRITE_PIXELS // math.ceil(math.sqrt(len(images))))
    _sprite(images, cell).save(log_dir / "sprite.png")
    config = projector.ProjectorConfig()
    entry = config.embeddings.add()
    entry.tensor_name = name
    entry.tensor_path = "tensors.tsv"
    entry.metadata_path = "metadata.tsv"
    entry.sprite.image_path = "sprite.png"
    entry.sprite.single_image_dim.extend([cell, cell])
    projector.visualize_embeddings(str(log_dir), config)
    return log_dir
