"""The scan overlay: a mammogram with its heatmap, detections and true clusters, drawn by Pillow.

``shallowcnn scan`` writes one per image (``<name>.overlay.png``) and the web page shows it.
It is drawn with Pillow and NumPy rather than matplotlib (:mod:`shallowcnn.plots`): the
picture is a raster anyway, and importing matplotlib and rendering the figure took a
third of the command's time. What it shows::

    +--------------------------------------------------+
    |   title: name, detections, threshold, hits       |
    +-------------------------------------+----+-------+
    |  the 8-bit mammogram (longest side  | colour bar |
    |  <= max_side), breast outline, the  | P(cluster) |
    |  heatmap, circles and probabilities | 0 ... 1    |
    +-------------------------------------+------------+

* each window's probability colours a stride x stride cell at the window's centre
  (inferno, 55 % opaque; nothing below 0.1 or outside the breast);
* the breast mask's outline in light blue;
* each detection, where the network saw it (:mod:`shallowcnn.evidence`): a white circle of
  one window's size, the 17 x 17 receptive field as a small square, and its probability
  beside the circle -- above right, else left or below, always inside the image (never
  cut off, never under the colour bar);
* true clusters (``truth``, an :class:`~shallowcnn.froc.ImageTruth`): dashed circles,
  green when hit, red when missed.

Coordinates: scanned pixel k covers [k, k + 1) of the scanned image, which is shown
``shrink`` times smaller; an original pixel p (centres at whole numbers) lies at scanned
``(p + 0.5) / scale``.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .storage import atomic_write_bytes

MAX_SIDE = 1000               # the mammogram's longest side in the picture, pixels
HEAT_FLOOR = 0.1              # probabilities below this are not coloured
HEAT_OPACITY = 0.55
# matplotlib's "inferno" at 0, 1/16, ..., 1 (interpolated linearly in between: within 7 of
# 255 of the full table), so that the picture needs no matplotlib
INFERNO = np.array([(0, 0, 4), (11, 7, 36), (33, 12, 74), (61, 9, 101), (87, 16, 110), (113, 25, 110),
                    (138, 34, 106), (163, 44, 97), (188, 55, 84), (210, 70, 68), (228, 90, 49), (241, 115, 29),
                    (249, 142, 9), (252, 172, 17), (249, 203, 53), (242, 234, 105), (252, 255, 164)], dtype=np.float64)
OUTLINE = (0, 191, 255)       # the breast outline ("deepskyblue")
HIT, MISSED, DETECTION = (0, 255, 0), (255, 0, 0), (255, 255, 255)
TITLE_H, MARGIN, BAR_GAP, BAR_W = 34, 8, 14, 18


@dataclass
class OverlayLayout:
    """Where things were drawn, as (left, top, right, bottom) pixel boxes of the picture.

    image       the mammogram
    colour_bar  the colour bar (its ticks and label lie to its right)
    labels      (text, box) of each detection's probability
    """

    image: tuple
    colour_bar: tuple
    labels: list = field(default_factory=list)


def inferno(values: np.ndarray) -> np.ndarray:
    """(...) values in [0, 1] -> (..., 3) uint8 RGB of the inferno colour map."""
    x = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0, 1) * (len(INFERNO) - 1)
    k = np.minimum(x.astype(np.int64), len(INFERNO) - 2)
    t = (x - k)[..., None]
    return np.rint(INFERNO[k] * (1 - t) + INFERNO[k + 1] * t).astype(np.uint8)


def font(size: int):
    """Pillow's own font at ``size`` pixels (scalable: Pillow >= 10.1 with FreeType, as its wheels)."""
    from PIL import ImageFont
    return ImageFont.load_default(size=size)


def upright_text(text: str, text_font, colour=(0, 0, 0)):
    """``text`` on white, turned 90 degrees to read upwards (an axis or colour-bar label):
    a PIL RGB image one pixel wider than the text on every side."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=text_font)
    label = Image.new("RGB", (right - left + 2, bottom - top + 2), "white")
    ImageDraw.Draw(label).text((1 - left, 1 - top), text, font=text_font, fill=colour)
    return label.rotate(90, expand=True)


def png_bytes(picture, compress_level: int = 6) -> bytes:
    """A PIL image as PNG bytes (zlib level ``compress_level``, Pillow's default 6)."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def _outline(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool: the pixels of ``mask`` with a 4-neighbour outside it (its one-pixel edge)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _dashed_circle(draw, centre, radius: float, colour, width: int, dashes: int = 24) -> None:
    x, y = centre
    box = (x - radius, y - radius, x + radius, y + radius)
    step = 360 / dashes
    for k in range(dashes):
        draw.arc(box, k * step, k * step + step * 0.6, fill=colour, width=width)


def _label_box(centre, radius: float, size: tuple, image_size: tuple) -> tuple:
    """Where a detection's probability goes: (left, top) of a ``size`` (w, h) text.

    Above right of the circle; to the left where that leaves the image, below where it
    runs off the top; then moved inside the image if it still sticks out (a circle at the
    very edge)."""
    (x, y), (w, h), (width, height) = centre, size, image_size
    d = radius * 0.75
    left = x + d if x + d + w <= width else x - d - w
    top = y - d - h if y - d - h >= 0 else y + d
    return min(max(left, 0), width - w), min(max(top, 0), height - h)


def draw_scan_overlay(result, truth=None, max_side: int = MAX_SIDE, title: str | None = None):
    """The overlay of one scan: ``(PIL RGB image, OverlayLayout)``.

    result    a :class:`~shallowcnn.scan.ScanResult`
    truth     its :class:`~shallowcnn.froc.ImageTruth`, or None
    max_side  the mammogram's longest side in the picture (it is never enlarged)
    """
    from PIL import Image, ImageDraw

    img = result.image
    height, width = img.pixels.shape
    shrink = max(1.0, max(height, width) / max_side)          # scanned pixels per picture pixel
    w, h = max(1, round(width / shrink)), max(1, round(height / shrink))
    base = Image.fromarray(img.pixels, mode="L").resize((w, h), Image.Resampling.BOX).convert("RGB")
    rgb = np.array(base)
    mask = np.asarray(Image.fromarray(img.mask).resize((w, h), Image.Resampling.NEAREST))
    rgb[_outline(mask)] = OUTLINE

    # the heatmap: window (k, l) colours the stride x stride cell centred on its centre
    s, half = result.stride, result.window_size / 2
    rows, cols = result.window_rows, result.window_cols
    x0, y0 = (cols[0] + half - s / 2) / shrink, (rows[0] + half - s / 2) / shrink
    x1, y1 = (cols[-1] + half + s / 2) / shrink, (rows[-1] + half + s / 2) / shrink
    shown = result.prob_map >= HEAT_FLOOR                      # NaN (not scanned) is False
    cells = np.zeros(result.prob_map.shape + (4,), dtype=np.uint8)
    cells[..., :3] = inferno(result.prob_map)
    cells[..., 3] = np.where(shown, round(255 * HEAT_OPACITY), 0)
    heat = Image.fromarray(cells, mode="RGBA").resize((max(1, round(x1 - x0)), max(1, round(y1 - y0))),
                                                      Image.Resampling.NEAREST)
    picture = Image.fromarray(rgb).convert("RGBA")
    layer = Image.new("RGBA", picture.size, (0, 0, 0, 0))
    layer.paste(heat, (round(x0), round(y0)))
    picture = Image.alpha_composite(picture, layer).convert("RGB")

    # circles and labels, drawn on the picture itself so that nothing spills out of it
    small, large = font(13), font(15)
    draw = ImageDraw.Draw(picture)
    if truth is not None:
        for cluster, hit in zip(truth.clusters, truth.hit):
            cx, cy = ((np.asarray(cluster.centre[::-1], dtype=np.float64) + 0.5) / img.scale) / shrink
            _dashed_circle(draw, (cx, cy), half / shrink, HIT if hit else MISSED, width=2)
    labels = []
    for det in result.detections:
        cx, cy = ((np.array([det.col, det.row]) + 0.5) / img.scale) / shrink
        radius, field_half = half / shrink, det.receptive_field / img.scale / shrink / 2
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=DETECTION, width=2)
        draw.rectangle((cx - field_half, cy - field_half, cx + field_half, cy + field_half), outline=DETECTION,
                       width=1)
        text = f"{det.probability:.2f}"
        tl, tt, tr, tb = draw.textbbox((0, 0), text, font=small, stroke_width=2)
        lx, ly = (math.floor(v) for v in _label_box((cx, cy), radius, (tr - tl, tb - tt), (w, h)))
        draw.text((lx - tl, ly - tt), text, font=small, fill=DETECTION, stroke_width=2, stroke_fill=(0, 0, 0))
        labels.append((text, (lx, ly, lx + tr - tl, ly + tb - tt)))

    # the whole canvas: title above, colour bar to the right
    tick_w = max(draw.textbbox((0, 0), f"{v:.1f}", font=small)[2] for v in (0.0, 1.0))
    turned = upright_text(f"P(cluster) per {result.window_size} x {result.window_size} window", small)
    canvas_w = MARGIN + w + BAR_GAP + BAR_W + 6 + tick_w + 6 + turned.width + MARGIN
    canvas = Image.new("RGB", (canvas_w, TITLE_H + max(h, turned.height) + MARGIN), "white")
    left, top = MARGIN, TITLE_H
    canvas.paste(picture, (left, top))
    draw = ImageDraw.Draw(canvas)
    labels = [(text, (x0 + left, y0 + top, x1 + left, y1 + top)) for text, (x0, y0, x1, y1) in labels]

    # the colour bar: 1 at the top, 0 at the bottom, ticks every 0.2, its label turned upright
    bar_left = left + w + BAR_GAP
    gradient = inferno(np.linspace(1, 0, h))[:, None, :].repeat(BAR_W, axis=1)
    canvas.paste(Image.fromarray(np.ascontiguousarray(gradient)), (bar_left, top))
    draw.rectangle((bar_left - 1, top - 1, bar_left + BAR_W, top + h), outline=(0, 0, 0))
    for k in range(6):
        v = k / 5
        y = top + round((1 - v) * (h - 1))
        draw.line((bar_left + BAR_W, y, bar_left + BAR_W + 4, y), fill=(0, 0, 0))
        draw.text((bar_left + BAR_W + 6, y), f"{v:.1f}", font=small, fill=(0, 0, 0), anchor="lm")
    canvas.paste(turned, (bar_left + BAR_W + 6 + tick_w + 6, top + max(0, (h - turned.height) // 2)))

    n_truth = "" if truth is None else f", {sum(truth.hit)}/{len(truth.clusters)} clusters hit"
    heading = title or (f"{img.name}: {len(result.detections)} detection(s) at p >= {result.threshold:g}"
                        f"{n_truth} (stride {s})")
    title_font = large if draw.textlength(heading, font=large) <= canvas_w - 2 * MARGIN else small
    while len(heading) > 1 and draw.textlength(heading, font=title_font) > canvas_w - 2 * MARGIN:
        heading = heading[:-2] + "\u2026"                       # a name too long for the picture: cut
    draw.text((canvas_w / 2, TITLE_H / 2), heading, font=title_font, fill=(0, 0, 0), anchor="mm")
    layout = OverlayLayout(image=(left, top, left + w, top + h),
                           colour_bar=(bar_left - 1, top - 1, bar_left + BAR_W + 1, top + h + 1), labels=labels)
    return canvas, layout


def scan_overlay_png(result, truth=None, max_side: int = MAX_SIDE, title: str | None = None) -> bytes:
    """:func:`draw_scan_overlay`'s picture as PNG bytes."""
    picture, _ = draw_scan_overlay(result, truth, max_side, title)
    return png_bytes(picture, compress_level=3)     # level 6 (the default): 10 % smaller, 2.5x slower


def plot_scan_overlay(result, path, truth=None, max_side: int = MAX_SIDE, title: str | None = None) -> Path:
    """:func:`scan_overlay_png` written to ``path`` (atomically)."""
    return atomic_write_bytes(Path(path), scan_overlay_png(result, truth, max_side, title))
