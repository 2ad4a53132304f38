"""The FROC figure (``froc.png``): sensitivity against false positives per image, drawn by Pillow.

``shallowcnn scan`` writes it beside the overlays whenever the images are annotated, and
the evaluation's detection report one per split. Like the overlay (:mod:`shallowcnn.overlay`)
it is drawn with Pillow rather than matplotlib, whose import alone took a tenth of a scan.
What it shows: the FROC curve as a step line (a threshold sweep moves in steps), the
operating point of the threshold as a red dot, the sensitivity at each false-positive rate
of ``rates`` as a green square with its value, a legend, a grid and labelled axes.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .overlay import font, png_bytes, upright_text
from .storage import atomic_write_bytes

SIZE = (605, 462)                         # pixels, as the matplotlib figure it replaces
BOX = (64, 30, 590, 410)                  # the axes: left, top, right, bottom
CURVE, OPERATING, RATE = (31, 119, 180), (214, 39, 40), (44, 160, 44)
GRID, BLACK = (231, 231, 231), (0, 0, 0)


def nice_ticks(high: float, most: int = 8) -> np.ndarray:
    """Ticks 0, step, 2 step, ... <= ``high`` with step 1, 2, 2.5 or 5 times a power of ten,
    the smallest giving at most ``most`` intervals."""
    if not high > 0:
        return np.array([0.0])
    base = 10.0 ** math.floor(math.log10(high / most))
    step = next(m * base for m in (1, 2, 2.5, 5, 10) if high / (m * base) <= most)
    return np.arange(0, high + step * 1e-9, step)


def _tick_text(value: float) -> str:
    return f"{value:g}" if value == int(value) or abs(value) >= 1 else f"{value:.2g}"


def froc_picture(curve, threshold: float = 0.5, rates=()):
    """The FROC figure of ``curve`` (:class:`~shallowcnn.froc.FrocCurve`) as a PIL RGB image."""
    from PIL import Image, ImageDraw

    small, medium = font(12), font(13)
    picture = Image.new("RGB", SIZE, "white")
    draw = ImageDraw.Draw(picture)
    left, top, right, bottom = BOX
    op = curve.at_threshold(threshold)
    marks = [(rate, curve.sensitivity_at_fpi(rate)) for rate in rates]
    x_data = max([float(np.max(curve.fp_per_image, initial=0.0)), op["fp_per_image"], *rates])
    x_high = x_data * 1.05 if x_data > 0 else 1.0                 # a 5 % margin beyond the data
    y_low, y_high = -0.02, 1.02

    def at(x, y):
        return (left + x / x_high * (right - left), bottom - (y - y_low) / (y_high - y_low) * (bottom - top))

    for x in nice_ticks(x_high):
        px = at(x, 0)[0]
        draw.line((px, top, px, bottom), fill=GRID)
        draw.line((px, bottom, px, bottom + 4), fill=BLACK)
        draw.text((px, bottom + 6), _tick_text(x), font=small, fill=BLACK, anchor="mt")
    for y in np.linspace(0, 1, 6):
        py = at(0, y)[1]
        draw.line((left, py, right, py), fill=GRID)
        draw.line((left - 4, py, left, py), fill=BLACK)
        draw.text((left - 6, py), f"{y:.1f}", font=small, fill=BLACK, anchor="rm")

    # the step curve: each point holds until the next one ("post" steps)
    xs, ys = np.asarray(curve.fp_per_image, dtype=float), np.asarray(curve.sensitivity, dtype=float)
    points = []
    for k in range(len(xs)):
        if k:
            points.append(at(xs[k], ys[k - 1]))
        points.append(at(xs[k], ys[k]))
    if len(points) > 1:
        draw.line(points, fill=CURVE, width=2)
    for rate, sens in marks:
        x, y = at(rate, sens)
        draw.rectangle((x - 3.5, y - 3.5, x + 3.5, y + 3.5), fill=RATE)
        draw.text((x + 5, y + 3), f"{sens:.2f}", font=small, fill=BLACK)
    x, y = at(op["fp_per_image"], op["sensitivity"])
    draw.ellipse((x - 4.5, y - 4.5, x + 4.5, y + 4.5), fill=OPERATING)
    draw.rectangle((left, top, right, bottom), outline=BLACK)

    # the legend, in the lower right corner of the axes
    entries = [(OPERATING, "dot", f"threshold {threshold:g}: sens {op['sensitivity']:.2f}, "
                                  f"{op['fp_per_image']:.2f} FP/image")]
    if rates:
        entries.insert(0, (RATE, "square", "sensitivity at " + " / ".join(f"{r:g}" for r in rates)
                           + " FP per image"))
    line_h, width = 18, max(draw.textlength(text, font=small) for _, _, text in entries) + 34
    x0, y0 = right - 8 - width, bottom - 8 - line_h * len(entries) - 6
    draw.rectangle((x0, y0, right - 8, bottom - 8), fill="white", outline=(204, 204, 204))
    for k, (colour, shape, text) in enumerate(entries):
        cx, cy = x0 + 14, y0 + 3 + line_h * k + line_h / 2
        if shape == "dot":
            draw.ellipse((cx - 4.5, cy - 4.5, cx + 4.5, cy + 4.5), fill=colour)
        else:
            draw.rectangle((cx - 3.5, cy - 3.5, cx + 3.5, cy + 3.5), fill=colour)
        draw.text((cx + 14, cy), text, font=small, fill=BLACK, anchor="lm")

    draw.text(((left + right) / 2, top / 2), f"FROC: {curve.n_clusters} clusters in {curve.n_images} images",
              font=medium, fill=BLACK, anchor="mm")
    draw.text(((left + right) / 2, SIZE[1] - 14), "false positives per image", font=medium, fill=BLACK,
              anchor="mm")
    turned = upright_text("sensitivity (clusters hit)", medium, BLACK)
    picture.paste(turned, (8, round((top + bottom) / 2 - turned.height / 2)))
    return picture


def plot_froc(curve, path, threshold: float = 0.5, rates=()) -> Path:
    """:func:`froc_picture` written to ``path`` as PNG (atomically)."""
    return atomic_write_bytes(Path(path), png_bytes(froc_picture(curve, threshold, rates)))
