"""A run's clusters as one static HTML page a person can judge without labels.

`render_review` writes `DIR/index.html` and its thumbnails under `DIR/thumbs/`; the page
references nothing else (no script, no font, no network), so it opens from a file on an
offline machine. It shows, in order:

- the run's settings and its read-out table: the label-free scores (`mixem_tf.quality`) of
  every read-out and of K-means on pixels, with ACC/NMI/ARI and a confusion matrix only where
  the data has labels (a check, never the story);
- a 2-D map of the read-out's feature (t-SNE, van der Maaten & Hinton 2008), coloured by
  cluster, with each cluster's most typical image (the member nearest its mean) on it;
- a histogram of the calibrated confidence;
- one section per cluster: size, mean confidence, stability, separation, and three rows of
  thumbnails: a random sample (what the cluster really holds), the most confident and the
  least confident members.

Caps (`thumbnails` per row, `MAX_MAP_POINTS` in the map) are said on the page.

Example:
    >>> render_review(ReviewData(...), "review/")     # → review/index.html
"""

from __future__ import annotations

import colorsys
import html
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["MAX_MAP_POINTS", "PAGE", "ReviewData", "cluster_colour", "is_review_dir",
           "map_coordinates", "render_review", "typical_members"]

PAGE = "index.html"
THUMBS = "thumbs"
MAX_MAP_POINTS = 2000
THUMB_PIXELS = 64
MAP_SIZE = (640, 440)
HISTOGRAM_BINS = 20
HISTOGRAM_SIZE = (440, 220)


@dataclass
class ReviewData:
    """Everything the page shows, for the images reviewed (a sample of the evaluation data).

    Attributes:
        title: the page's heading (e.g. the run directory's name).
        settings: name → value, shown as a table.
        table: one dict per read-out: "name", "default" (bool), the label-free scores of
            `quality.SCORE_NAMES`, and "acc"/"nmi"/"ari" where labels exist; the pixel
            baseline's row too.
        readout: the name of the read-out the rest of the page shows.
        clusters, confidence, stays: per image: cluster id, calibrated probability of that
            cluster, whether an augmented copy stays in it.
        cluster_rows: `quality.cluster_scores` of the read-out (one per cluster).
        thumbnail: image index → an RGB Pillow image (from the array or from its file).
        coordinates: [M, 2] map positions of the images `map_index` [M].
        typical: cluster → index of its most typical image.
        labels, class_names: ground truth (checks only), or None.
        notes: sentences for the page (sample sizes, caps, temperature, warnings).
    """

    title: str
    settings: dict
    table: list
    readout: str
    clusters: np.ndarray
    confidence: np.ndarray
    stays: np.ndarray
    cluster_rows: list
    thumbnail: Callable
    coordinates: np.ndarray
    map_index: np.ndarray
    typical: dict
    labels: np.ndarray | None = None
    class_names: tuple | None = None
    notes: list = field(default_factory=list)
    warning: str | None = None


def cluster_colour(k: int, count: int) -> str:
    """A distinct colour per cluster: hues spread evenly, two lightnesses alternating."""
    hue = (k * 0.618034) % 1.0 if count > 12 else k / max(count, 1)
    red, green, blue = colorsys.hls_to_rgb(hue, 0.45 if k % 2 else 0.55, 0.75)
    return f"#{int(red * 255):02x}{int(green * 255):02x}{int(blue * 255):02x}"


def map_coordinates(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE of `features` [M, D] into 2-D (PCA to 50 dimensions first when D is larger)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    features = np.asarray(features, np.float64).reshape(len(features), -1)
    if features.shape[1] > 50 and len(features) > 50:
        features = PCA(50, random_state=seed).fit_transform(features)
    perplexity = float(min(30.0, max(2.0, (len(features) - 1) / 3)))
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)


def typical_members(features: np.ndarray, clusters: np.ndarray) -> dict:
    """cluster → index of the member nearest the cluster's mean feature."""
    typical = {}
    for k in np.unique(clusters):
        members = np.flatnonzero(clusters == k)
        centre = features[members].mean(axis=0)
        typical[int(k)] = int(members[np.argmin(((features[members] - centre) ** 2).sum(1))])
    return typical


def is_review_dir(path: Path) -> bool:
    """Whether `path` holds only a page this module wrote (so it may be replaced)."""
    return {p.name for p in Path(path).iterdir()} <= {PAGE, THUMBS}


def _number(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _flags(text: str) -> str:
    """`text` escaped, each command-line flag (and its argument in capitals) kept on one line."""
    import re

    return re.sub(r"(--[a-z-]+(?: [A-Z]+)?)", r'<code class="flag">\1</code>', html.escape(text))


def _table(headers, rows, classes="") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{classes}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Thumbs:
    """Writes each image's thumbnail once, under DIR/thumbs/, and gives its <img> tag."""

    def __init__(self, out_dir: Path, thumbnail: Callable, confidence: np.ndarray):
        self.folder = out_dir / THUMBS
        self.folder.mkdir()
        self.thumbnail, self.confidence, self.written = thumbnail, confidence, set()

    def src(self, index: int) -> str:
        name = f"{index}.png"
        if index not in self.written:
            self.thumbnail(index).save(self.folder / name)
            self.written.add(index)
        return f"{THUMBS}/{name}"

    def img(self, index: int, extra: str = "") -> str:
        return (f'<img src="{self.src(index)}" width="{THUMB_PIXELS}" height="{THUMB_PIXELS}" '
                f'alt="image {index}" title="image {index}: confidence '
                f'{self.confidence[index]:.2f}{extra}">')


def _readout_table(data: ReviewData) -> str:
    from mixem_tf.quality import SCORE_NAMES

    checks = [name for name in ("acc", "nmi", "ari") if any(name in r for r in data.table)]
    headers = ["read-out", *SCORE_NAMES, *(c.upper() for c in checks)]
    rows = []
    for row in data.table:
        name = html.escape(row["name"]) + (" <b>(default)</b>" if row.get("default") else "")
        if row["name"] == data.readout:
            name = f"<mark>{name}</mark>"
        rows.append([name, *(_number(row.get(s)) for s in SCORE_NAMES),
                     *(_number(row.get(c)) for c in checks)])
    return _table(headers, rows, "scores")


def _confusion(data: ReviewData) -> str:
    from mixem_tf.metrics import contingency_matrix

    counts, clusters, classes = contingency_matrix(data.labels, data.clusters)
    names = [data.class_names[c] if data.class_names else str(c) for c in classes]
    top = counts.max() or 1
    rows = []
    for row, k in enumerate(clusters):
        cells = [f"cluster {k}"]
        for count in counts[row]:
            shade = 1.0 - 0.7 * count / top
            cells.append(f'<span class="cell" style="background:hsl(210,60%,{shade * 100:.0f}%)'
                         f'">{count}</span>')
        rows.append(cells)
    return _table(["", *(html.escape(n) for n in names)], rows, "confusion")


def _map_svg(data: ReviewData, thumbs: _Thumbs, count: int) -> str:
    width, height = MAP_SIZE
    xy = np.asarray(data.coordinates, np.float64)
    low, high = xy.min(0), xy.max(0)
    span = np.where(high > low, high - low, 1.0)
    margin = 40
    scaled = margin + (xy - low) / span * (np.array([width, height]) - 2 * margin)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" class="map" role="img" '
             f'aria-label="2-D map of the read-out feature">',
             f'<rect width="{width}" height="{height}" fill="#fafafa"/>']
    for (x, y), index in zip(scaled, data.map_index):
        k = int(data.clusters[index])
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.2" '
                     f'fill="{cluster_colour(k, count)}" fill-opacity="0.7"/>')
    position = {int(i): p for i, p in zip(data.map_index, scaled)}
    size = 40
    for k, index in sorted(data.typical.items()):
        members = [position[int(i)] for i in data.map_index if data.clusters[i] == k]
        if not members:
            continue
        x, y = np.median(np.array(members), axis=0)
        x = float(np.clip(x - size / 2, 0, width - size))
        y = float(np.clip(y - size / 2, 0, height - size))
        colour = cluster_colour(k, count)
        parts.append(f'<a href="#cluster-{k}"><rect x="{x - 2:.1f}" y="{y - 2:.1f}" '
                     f'width="{size + 4}" height="{size + 4}" fill="{colour}"/>'
                     f'<image href="{thumbs.src(index)}" x="{x:.1f}" y="{y:.1f}" '
                     f'width="{size}" height="{size}"/>'
                     f'<text x="{x + size + 4:.1f}" y="{y + 12:.1f}" class="maplabel">{k}</text>'
                     '</a>')
    parts.append("</svg>")
    return "".join(parts)


def _histogram_svg(confidence: np.ndarray, num_clusters: int) -> str:
    (width, height), margin = HISTOGRAM_SIZE, 36
    counts, edges = np.histogram(confidence, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    top = counts.max() or 1
    bar = (width - 2 * margin) / HISTOGRAM_BINS
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="confidence histogram">']
    for i, count in enumerate(counts):
        h = (height - 2 * margin) * count / top
        parts.append(f'<rect x="{margin + i * bar + 1:.1f}" y="{height - margin - h:.1f}" '
                     f'width="{bar - 2:.1f}" height="{h:.1f}" fill="#4a78b5">'
                     f'<title>{edges[i]:.2f}–{edges[i + 1]:.2f}: {count} images</title></rect>')
    parts.append(f'<text x="{margin - 4}" y="{margin + 4}" class="axis" text-anchor="end">'
                 f'{top}</text><text x="{margin - 4}" y="{height - margin}" class="axis" '
                 'text-anchor="end">0</text>')
    chance = 1.0 / num_clusters
    x = margin + chance * (width - 2 * margin)
    parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{margin - 10}" y2="{height - margin}" '
                 f'stroke="#c33" stroke-dasharray="4 3"/>'
                 f'<text x="{x + 4:.1f}" y="{margin - 2}" class="axis">chance 1/K</text>')
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        tx = margin + tick * (width - 2 * margin)
        parts.append(f'<text x="{tx:.1f}" y="{height - margin + 16}" class="axis" '
                     f'text-anchor="middle">{tick:.2f}</text>')
    parts.append(f'<text x="{width / 2:.0f}" y="{height - 2}" class="axis" '
                 'text-anchor="middle">confidence of the assigned cluster</text></svg>')
    return "".join(parts)


def _cluster_section(data: ReviewData, thumbs: _Thumbs, row: dict, count: int,
                     per_row: int, rng) -> str:
    k = row["cluster"]
    members = np.flatnonzero(data.clusters == k)
    colour = cluster_colour(k, count)
    head = (f'<h3 id="cluster-{k}"><span class="swatch" style="background:{colour}"></span>'
            f'cluster {k}</h3>')
    facts = (f'<p class="facts"><b>{row["size"]}</b> images ({row["share"]:.1%}) · confidence '
             f'<b>{_number(row["confidence"], 2)}</b> · stability <b>{_number(row["stability"], 2)}'
             f'</b> · separation <b>{_number(row["separation"], 2)}</b></p>')
    if not members.size:
        return (f'<section class="cluster">{head}{facts}<p>No image of the reviewed ones '
                'falls in this cluster.</p></section>')
    if data.labels is not None:
        values, counts = np.unique(data.labels[members], return_counts=True)
        best = int(values[np.argmax(counts)])
        name = data.class_names[best] if data.class_names else str(best)
        facts += (f'<p class="check">labels (a check only): mostly {html.escape(name)} '
                  f'({counts.max() / members.size:.0%})</p>')
    order = members[np.argsort(-data.confidence[members], kind="stable")]
    groups = (("random sample", rng.choice(members, min(per_row, members.size), replace=False)),
              ("most confident", order[:per_row]),
              ("least confident", order[::-1][:per_row]))
    rows = []
    for title, chosen in groups:
        images = "".join(
            thumbs.img(int(i), "" if data.stays[i] else " (leaves the cluster when augmented)")
            for i in chosen)
        rows.append(f'<div class="strip"><span class="what">{title}</span>{images}</div>')
    return f'<section class="cluster">{head}{facts}{"".join(rows)}</section>'


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;
max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#ddd}h3{font-size:15px;margin:0 0 4px}table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}.settings td{text-align:left}
mark{background:#fff3b0}.warning{background:#fff0f0;border-left:4px solid #c33;padding:8px}
.note{color:#555}.facts{margin:0 0 4px}.check{margin:0 0 6px;color:#777;font-size:12px}
.cluster{border:1px solid #e4e4e4;border-radius:6px;padding:10px;margin:10px 0}
.strip{display:flex;align-items:center;gap:3px;margin:3px 0;flex-wrap:wrap}
.strip img{image-rendering:pixelated;border:1px solid #ccc;background:#fff}
.what{width:120px;color:#555;font-size:12px}.swatch{display:inline-block;width:12px;
height:12px;border-radius:2px;margin-right:6px}.maplabel{font-size:12px;font-weight:bold}
.axis{font-size:11px;fill:#555}.cell{display:inline-block;min-width:28px;padding:1px 3px}
.row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.flag{white-space:nowrap}
"""


def render_review(data: ReviewData, out_dir, *, thumbnails: int = 8, seed: int = 0) -> Path:
    """Writes the page and its thumbnails into `out_dir` (created, or replaced if it holds a
    page written before); returns the page's path.

    Raises:
        ValueError: `out_dir` holds other files, or `thumbnails` < 1.
    """
    out_dir = Path(out_dir)
    if thumbnails < 1:
        raise ValueError(f"--thumbnails must be >= 1, got {thumbnails}")
    if out_dir.exists():
        if not out_dir.is_dir() or not is_review_dir(out_dir):
            raise ValueError(f"--out {out_dir} holds other files; choose an empty or new folder")
        shutil.rmtree(out_dir / THUMBS, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    thumbs = _Thumbs(out_dir, data.thumbnail, data.confidence)
    count = len(data.cluster_rows)
    rng = np.random.default_rng(seed)
    settings = _table(["setting", "value"], [[html.escape(str(k)), html.escape(str(v))]
                                             for k, v in data.settings.items()], "settings")
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes)
    warning = f'<p class="warning">{_flags(data.warning)}</p>' if data.warning else ""
    confusion = ""
    if data.labels is not None:
        confusion = ("<h2>Clusters against labels (a check)</h2>"
                     "<p class=\"note\">The data has labels; they never choose anything "
                     "here.</p>" + _confusion(data))
    sections = "".join(_cluster_section(data, thumbs, row, count, thumbnails, rng)
                       for row in data.cluster_rows)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(data.title)}: cluster review</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(data.title)}</h1>
<p class="note">Read-out shown: <b>{html.escape(data.readout)}</b>.
<b>Stability</b>: share of images that stay in their cluster when augmented with the method's
own views (<b>kappa</b>: the same beyond chance). <b>Separation</b>: mean silhouette on the read-out's feature (1 = tight and apart,
0 = on a border). <b>Confidence</b>: mean calibrated probability of the assigned cluster.
Judge a cluster's purity from its <i>random sample</i>, not from its best cases.</p>
{warning}{notes}
<h2>Read-outs</h2>{_readout_table(data)}
{confusion}
<h2>Map and confidence</h2>
<div class="row"><div style="max-width:{MAP_SIZE[0]}px">{_map_svg(data, thumbs, count)}
<p class="note">t-SNE of {len(data.map_index)} images (at most {MAX_MAP_POINTS}); each
thumbnail is its cluster's most typical image (nearest its mean); click it to jump to the
cluster.</p></div>
<div style="max-width:{HISTOGRAM_SIZE[0]}px">{_histogram_svg(data.confidence, count)}
<p class="note">Images per confidence bin ({len(data.confidence)} images). Near 1/K: the
read-out cannot tell the clusters apart for that image.</p></div></div>
<h2>Clusters</h2>
<p class="note">Up to {thumbnails} thumbnails per row. Hover a thumbnail for its confidence.</p>
{sections}
<h2>Settings</h2>{settings}
</body></html>
"""
    path = out_dir / PAGE
    path.write_text(page, encoding="utf-8")
    return path
