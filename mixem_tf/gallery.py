"""A picture of what each cluster means: one row of sample images per cluster, labelled.

Example:
    >>> label = cluster_label(0, 120, majority="3", purity=0.46)   # ... "mostly 3 (46%)"
    >>> image = draw_gallery({0: [img_a, img_b], 1: [img_c]}, {0: label})
    >>> image.save("gallery.png")
"""

from __future__ import annotations

import numpy as np

__all__ = ["LABEL_WIDTH", "PAD", "cluster_label", "draw_gallery", "gallery_size", "thumbnail"]

LABEL_WIDTH = 160  # pixels of the text column on the left
PAD = 2


def gallery_size(rows: int, columns: int, cell: int) -> tuple[int, int]:
    """(width, height) in pixels of a gallery of `rows` clusters × `columns` samples."""
    return LABEL_WIDTH + columns * (cell + PAD) + PAD, rows * (cell + PAD) + PAD


def cluster_label(cluster: int, size: int, majority=None, purity: float | None = None,
                  confidence: float | None = None) -> str:
    """A row's text: the cluster and its size, its images' mean confidence when given, then,
    where the training data's labels are known, its majority label with its purity (the
    share of that label), so that "mostly clothes" at 46% does not read as a clean cluster."""
    text = f"cluster {cluster}: {size} images"
    if confidence is not None:
        text += f"\nmean confidence {confidence:.2f}"
    if majority is None:
        return text
    share = f" ({purity:.0%})" if purity is not None else ""
    return f"{text}\ntraining data:\nmostly {majority}{share}"


def thumbnail(image: np.ndarray, cell: int):
    """uint8 [H, W, C] → an RGB Pillow image fitting in cell × cell (nearest when enlarging,
    so small images stay crisp)."""
    from PIL import Image

    array = image[..., 0] if image.shape[-1] == 1 else image
    picture = Image.fromarray(array).convert("RGB")
    scale = cell / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    method = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
    return picture.resize(size, method)


def draw_gallery(samples: dict, labels: dict | None = None, *, rows: int | None = None,
                 columns: int = 8, cell: int = 64):
    """A white sheet: row k holds up to `columns` of `samples[k]` (uint8 [H, W, C] images)
    after the text `labels[k]` (default "cluster k"); `rows` defaults to max cluster + 1."""
    from PIL import Image, ImageDraw

    if columns < 1 or cell < 1:
        raise ValueError(f"a gallery needs columns >= 1 and cell >= 1, got {columns}, {cell}")
    rows = rows if rows is not None else max(samples, default=-1) + 1
    sheet = Image.new("RGB", gallery_size(rows, columns, cell), "white")
    draw = ImageDraw.Draw(sheet)
    for k in range(rows):
        top = PAD + k * (cell + PAD)
        text = (labels or {}).get(k, f"cluster {k}")
        _, upper, _, lower = draw.multiline_textbbox((0, 0), text)
        draw.multiline_text((4, top + (cell - lower - upper) // 2), text, fill="black")
        for j, image in enumerate(samples.get(k, [])[:columns]):
            thumb = thumbnail(image, cell)
            left = LABEL_WIDTH + PAD + j * (cell + PAD)
            sheet.paste(thumb, (left + (cell - thumb.width) // 2, top + (cell - thumb.height) // 2))
    return sheet
