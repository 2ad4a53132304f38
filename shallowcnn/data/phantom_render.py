"""Rendering one synthetic mammogram: breast outline, textures, structures, lesions, noise.

:func:`render_image` draws what an :class:`ImagePlan` asks for and returns the 14-bit
pixels with the ROIs of what it drew; :mod:`shallowcnn.data.phantom` plans the patients
and writes the INbreast-layout folder. What one image is made of (all vectorised NumPy,
one FFT pass for textures):

* a breast outline (half ellipse from the chest wall, CC or MLO with pectoral muscle),
  thickness falling off near the skin line, on a dark background;
* fibroglandular texture: power-law noise (power spectrum ~ 1/f^3, as measured on
  mammograms) passed through a soft threshold, plus lobular fat variation;
* linear structures (ducts, vessels) running towards the nipple;
* microcalcifications 0.1-1 mm (radius 0.75-7 px) with contrast from obvious to barely
  visible; clusters of 3-30 within 1 cm^2, isolated calcifications, masses and other
  findings (hard negatives); Cluster outlines (Type 9, 200 points) on some images only;
* quantum noise whose variance grows with the signal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .inbreast import ROI_TYPE_CONTOUR, ROI_TYPE_CURVE, ROI_TYPE_POINT
from .phantom_files import BITS_STORED

DEFAULT_SIZE = (832, 1024)    # demo size (width, height): 58 x 72 mm; larger images scale their features


# ---------------------------------------------------------------------------------------
# Geometry of the breast (drawn with the chest wall on the left, mirrored for R)
# ---------------------------------------------------------------------------------------


@dataclass
class BreastShape:
    """Outline parameters, in pixels. ``u`` = column from the chest wall, ``v`` = row.

    radius(u, v) < 1 inside the breast; 1 on the skin line.
    """

    depth: float          # chest wall -> nipple
    half_height: float
    centre_row: float
    shear: float          # MLO: the breast hangs down away from the chest wall
    wobble: np.ndarray    # (2, 2) amplitudes and phases of 2nd/3rd harmonics of the outline

    def radius(self, u, v):
        a = u / self.depth
        b = (v - self.centre_row - self.shear * u) / self.half_height
        angle = np.arctan2(b, a)
        wobble = 1 + self.wobble[0, 0] * np.cos(2 * angle + self.wobble[0, 1]) \
                   + self.wobble[1, 0] * np.cos(3 * angle + self.wobble[1, 1])
        return np.sqrt(a * a + b * b) / wobble


def _random_shape(rng, width, height, view) -> BreastShape:
    wobble = np.array([[rng.uniform(0, 0.05), rng.uniform(0, 2 * np.pi)],
                       [rng.uniform(0, 0.03), rng.uniform(0, 2 * np.pi)]])
    if view == "CC":
        return BreastShape(depth=width * rng.uniform(0.68, 0.86), half_height=height * rng.uniform(0.40, 0.46),
                           centre_row=height * rng.uniform(0.47, 0.53), shear=0.0, wobble=wobble)
    # MLO: taller, reaching the top edge (axilla), hanging down
    return BreastShape(depth=width * rng.uniform(0.66, 0.82), half_height=height * rng.uniform(0.50, 0.56),
                       centre_row=height * rng.uniform(0.50, 0.56), shear=rng.uniform(0.15, 0.35),
                       wobble=wobble)


# ---------------------------------------------------------------------------------------
# Textures
# ---------------------------------------------------------------------------------------


def power_law_textures(rng, height, width, beta=3.0, largest_px=300.0):
    """Two independent (H, W) float32 fields with power spectrum ~ 1/f^beta, unit std.

    White complex noise in the frequency domain is shaped by f^(-beta/2) (amplitude is the
    square root of power); the real and imaginary parts of its inverse FFT are two
    independent real textures for the price of one transform. Frequencies below
    1/largest_px are held flat so no single blob fills the breast.
    """
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(width).astype(np.float32)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    amplitude = np.maximum(f, 1.0 / largest_px) ** (-beta / 2)
    amplitude[0, 0] = 0.0  # zero mean
    noise = (rng.standard_normal((height, width), dtype=np.float32)
             + 1j * rng.standard_normal((height, width), dtype=np.float32)).astype(np.complex64)
    field_ = np.fft.ifft2(noise * amplitude)
    textures = []
    for part in (field_.real, field_.imag):
        part = part.astype(np.float32)
        textures.append((part - part.mean()) / (part.std() + 1e-12))
    return textures


def _gaussian_transfer(height, width, sigma):
    """Fourier transfer function (rfft2 layout) of a Gaussian blur of std ``sigma`` px."""
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(width).astype(np.float32)[None, :]
    return np.exp(-2 * np.pi ** 2 * sigma ** 2 * (fx * fx + fy * fy)).astype(np.float32)


def _splat(image, rows, cols, weights):
    """Add ``weights`` at the nearest pixels (rows, cols) of ``image``; outside ones dropped."""
    r = np.rint(rows).astype(np.int64)
    c = np.rint(cols).astype(np.int64)
    ok = (r >= 0) & (r < image.shape[0]) & (c >= 0) & (c < image.shape[1])
    np.add.at(image.ravel(), r[ok] * image.shape[1] + c[ok], weights[ok])


def _linear_structures(rng, shape: BreastShape, height, width, count):
    """Ducts and vessels: curves from inside the breast towards the nipple.

    returns (thin, thick): (H, W) float32 images of unblurred curve points (the caller blurs)
    """
    thin = np.zeros((height, width), np.float32)
    thick = np.zeros((height, width), np.float32)
    nipple = np.array([shape.depth * 0.98, shape.centre_row + shape.shear * shape.depth])
    start_u = rng.uniform(0.02, 0.7, count) * shape.depth
    start_v = shape.centre_row + shape.shear * start_u + rng.uniform(-0.95, 0.95, count) * shape.half_height
    steps = int(shape.depth)
    heading = np.arctan2(nipple[1] - start_v, nipple[0] - start_u)
    # a random walk of the heading makes the curves wander (vectorised over all curves)
    turning = np.cumsum(rng.normal(0, 0.035, (count, steps)).astype(np.float32), axis=1)
    angle = heading[:, None] + turning
    u = start_u[:, None] + np.cumsum(np.cos(angle), axis=1)
    v = start_v[:, None] + np.cumsum(np.sin(angle), axis=1)
    length = rng.uniform(0.2, 0.9, count) * np.hypot(nipple[0] - start_u, nipple[1] - start_v)
    alive = np.arange(steps)[None, :] < length[:, None]
    strength = rng.lognormal(0, 0.5, count).astype(np.float32)
    is_vessel = rng.random(count) < 0.12
    weights = np.broadcast_to(strength[:, None], alive.shape)
    for target, which in ((thin, ~is_vessel), (thick, is_vessel)):
        sel = alive & which[:, None]
        _splat(target, v[sel], u[sel], weights[sel])
    return thin, thick


# ---------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------


def _blob_radius(angle, radius, harmonics):
    """Irregular outline: radius * (1 + sum_k a_k cos(k angle + phi_k)), harmonics (n, 2)."""
    out = np.ones_like(angle)
    for k, (amp, phase) in enumerate(harmonics, start=2):
        out = out + amp * np.cos(k * angle + phase)
    return radius * out


def _add_blob(image, row, col, radius, amplitude, harmonics, edge):
    """Add a soft-edged irregular blob (calcification or mass) to ``image`` in place.

    profile(d) = amplitude * (1 - tanh((d - R(angle)) / edge)) / 2, evaluated only in a box.
    """
    reach = int(np.ceil(radius * 1.6 + 3 * edge + 2))
    r0, r1 = max(0, int(row) - reach), min(image.shape[0], int(row) + reach + 1)
    c0, c1 = max(0, int(col) - reach), min(image.shape[1], int(col) + reach + 1)
    if r0 >= r1 or c0 >= c1:
        return
    dr = np.arange(r0, r1, dtype=np.float32)[:, None] - np.float32(row)
    dc = np.arange(c0, c1, dtype=np.float32)[None, :] - np.float32(col)
    dist = np.sqrt(dr * dr + dc * dc)
    boundary = _blob_radius(np.arctan2(dr, dc), radius, harmonics)
    image[r0:r1, c0:c1] += amplitude * 0.5 * (1 - np.tanh((dist - boundary) / edge))


def _outline_points(row, col, radius, harmonics, count, rotation=0.0):
    """(count, 2) (x, y) points on the irregular outline, anticlockwise from ``rotation``."""
    angle = rotation + np.linspace(0, 2 * np.pi, count, endpoint=False)
    rad = _blob_radius(angle, radius, harmonics)
    return np.stack([col + rad * np.cos(angle), row + rad * np.sin(angle)], axis=1)


def _sample_inside(rng, shape, width, height, count, max_radius, margin=80):
    """Up to ``count`` random (u, v) points with breast radius < max_radius, ``margin`` px
    from the image edges (so that a 1 cm window around them fits in the image)."""
    u = rng.uniform(0, shape.depth, count * 4)
    v = rng.uniform(0, height, count * 4)
    keep = shape.radius(u, v) < max_radius
    keep &= (v > margin) & (v < height - margin) & (u > margin) & (u < width - margin)
    return np.stack([u[keep], v[keep]], axis=1)[:count]


@dataclass
class Calcification:
    row: float
    col: float
    radius: float
    amplitude: float
    harmonics: np.ndarray


def _place_cluster(rng, centre_uv, contrast):
    """Calcifications of one cluster around centre (u, v): 3-30 within a 1 cm^2 window."""
    count = int(min(30, 3 + rng.geometric(1 / 6.0) - 1))
    spread = rng.uniform(14, 58)                      # semi-axis in px; cluster span < 124 px
    aspect = rng.uniform(0.45, 1.0)
    tilt = rng.uniform(0, np.pi)
    calcs = []
    for _ in range(count * 8):
        if len(calcs) == count:
            break
        # uniform in an ellipse
        rho, phi = np.sqrt(rng.random()) * spread, rng.uniform(0, 2 * np.pi)
        x, y = rho * np.cos(phi), rho * aspect * np.sin(phi)
        du, dv = x * np.cos(tilt) - y * np.sin(tilt), x * np.sin(tilt) + y * np.cos(tilt)
        radius = float(np.exp(rng.uniform(np.log(0.75), np.log(3.2)))) if rng.random() < 0.85 \
            else float(rng.uniform(3.2, 7.0))
        row, col = centre_uv[1] + dv, centre_uv[0] + du
        if any(np.hypot(row - c.row, col - c.col) < radius + c.radius + 2.5 for c in calcs):
            continue
        amplitude = contrast * float(np.exp(rng.normal(0, 0.3)))
        calcs.append(Calcification(row, col, radius, amplitude, rng.uniform(-0.18, 0.18, (2, 2)) * [1, 20]))
    return calcs


def _calcification_roi(rng, calc: Calcification):
    """A point (Type 19) for most calcifications, a small contour (Type 15) for bigger ones."""
    if calc.radius >= 2.5 and rng.random() < 0.7:
        points = _outline_points(calc.row, calc.col, calc.radius, calc.harmonics,
                                 int(rng.integers(4, 13)), rng.uniform(0, 2 * np.pi))
        return ROI_TYPE_CONTOUR, points
    jitter = rng.normal(0, 0.4, 2)  # annotators click near, not exactly on, the centre
    return ROI_TYPE_POINT, np.array([[calc.col + jitter[0], calc.row + jitter[1]]])


def _cluster_outline(rng, calcs):
    """(200, 2) (x, y) smooth closed curve around the calcifications of one cluster."""
    pts = np.array([[c.col, c.row] for c in calcs])
    centre = pts.mean(axis=0)
    angle = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    # radius of the outline in each direction: farthest calcification near that direction
    rel = pts - centre
    rel_angle = np.arctan2(rel[:, 1], rel[:, 0])
    rel_dist = np.hypot(rel[:, 0], rel[:, 1]) + np.array([c.radius for c in calcs])
    closeness = np.cos(angle[:, None] - rel_angle[None, :])            # (200, n)
    reach = np.max(rel_dist[None, :] * np.clip(closeness, 0, None) ** 0.5, axis=1)
    radius = np.maximum(reach, 6.0) + rng.uniform(8, 16)
    # smooth the radius around the curve (circular moving average) so it looks hand-drawn
    kernel = np.ones(41) / 41
    radius = np.convolve(np.concatenate([radius[-20:], radius, radius[:20]]), kernel, mode="valid")
    radius = np.maximum(radius, np.interp(angle, np.sort(rel_angle), rel_dist[np.argsort(rel_angle)],
                                          period=2 * np.pi) + 6)
    return np.stack([centre[0] + radius * np.cos(angle), centre[1] + radius * np.sin(angle)], axis=1)


# ---------------------------------------------------------------------------------------
# One image
# ---------------------------------------------------------------------------------------


@dataclass
class ImagePlan:
    """What to put in one image (chosen per patient so that views of a breast agree)."""

    laterality: str
    view: str
    clusters: int
    outline: bool
    isolated: int
    other_finding: str | None
    density: float


def render_image(rng, width: int, height: int, plan: ImagePlan) -> tuple:
    """Render one mammogram.

    returns ``(pixels, rois)``: (H, W) uint16 with 14-bit values (MONOCHROME2, bright =
    dense) and a list of ``(name, type, points (K, 2) as (x, y))`` in image coordinates.
    """
    scale = np.sqrt(width * height / float(DEFAULT_SIZE[0] * DEFAULT_SIZE[1]))
    shape = _random_shape(rng, width, height, plan.view)
    v = np.arange(height, dtype=np.float32)[:, None]
    u = np.arange(width, dtype=np.float32)[None, :]
    radius = shape.radius(u, v).astype(np.float32)
    # thickness: flat compressed breast, falling off to zero over the outer ~8 % (skin line)
    edge = np.clip((1 - radius) / 0.08, 0, 1)
    thickness = np.sqrt(1 - (1 - edge) ** 2)

    texture_a, texture_b = power_law_textures(rng, height, width, beta=3.0, largest_px=300 * scale)
    # glandular tissue sits behind the nipple towards the chest wall, fading at the edges
    a = u / shape.depth
    b = (v - shape.centre_row - shape.shear * u) / shape.half_height
    profile = np.exp(-((a - 0.35) ** 2) / 0.12 - (b ** 2) / 0.45)
    gland = 1 / (1 + np.exp(-1.5 * (texture_a + 2.0 * profile - 1.5 + plan.density)))
    fat_level, gland_level = rng.uniform(1000, 1250), rng.uniform(700, 1100)
    signal = fat_level + gland_level * gland + 90 * texture_b

    if plan.view == "MLO":  # pectoral muscle: a bright band along the chest wall at the top
        top_width, side_height = width * rng.uniform(0.22, 0.36), height * rng.uniform(0.35, 0.55)
        muscle_edge = 1 - u / top_width - v / side_height + 0.08 * np.sin(v / side_height * 3)
        muscle = np.clip(muscle_edge / 0.03, 0, 1)
        signal = signal * (1 - muscle) + muscle * (fat_level + gland_level * 0.75 + 120 * texture_b)

    # ducts/vessels, blurred in the frequency domain together
    thin, thick = _linear_structures(rng, shape, height, width, count=int(rng.integers(60, 120) * scale))
    lines = np.fft.irfft2(np.fft.rfft2(thin) * _gaussian_transfer(height, width, 1.1)
                          + np.fft.rfft2(thick) * (_gaussian_transfer(height, width, 2.4) * 6),
                          s=(height, width)).astype(np.float32)
    signal += 110 * lines

    overlay = np.zeros((height, width), np.float32)   # findings, added on top of tissue
    rois = []
    placed_calcs = []                                  # (row, col) of every calcification

    def far_from_calcs(row, col, distance):
        return all(max(abs(row - r), abs(col - c)) >= distance for r, c in placed_calcs)

    # clusters: centres well inside the breast, separated so that no window holds two
    for _ in range(plan.clusters):
        candidates = _sample_inside(rng, shape, width, height, 40, 0.78, margin=110)
        for cu, cv in candidates:
            if far_from_calcs(cv, cu, 250):
                break
        else:
            continue
        # Cluster contrast 160-560 raw units (log-uniform), each calcification +-30 % around
        # it: from obvious to faint. Below ~160 most calcifications of 1-2 px vanish into the
        # quantum noise after the 8-bit window, and the patch label would be unlearnable.
        contrast = 40 * float(np.exp(rng.uniform(np.log(4.0), np.log(14.0))))
        calcs = _place_cluster(rng, (cu, cv), contrast)
        for calc in calcs:
            _add_blob(overlay, calc.row, calc.col, calc.radius, calc.amplitude, calc.harmonics, 0.6)
            rois.append(("Calcification", *_calcification_roi(rng, calc)))
            placed_calcs.append((calc.row, calc.col))
        if plan.outline:
            rois.append(("Cluster", ROI_TYPE_CURVE, _cluster_outline(rng, calcs)))

    # isolated calcifications: >= 150 px (Chebyshev) from every other one, so no 144 x 144
    # window ever holds two of them -- hard negatives for a whole-image scan
    for _ in range(plan.isolated):
        for cu, cv in _sample_inside(rng, shape, width, height, 40, 0.85):
            if far_from_calcs(cv, cu, 150):
                calc = Calcification(cv, cu, float(rng.uniform(1.0, 6.0)),
                                     40 * float(np.exp(rng.uniform(np.log(3), np.log(15)))),
                                     rng.uniform(-0.15, 0.15, (2, 2)) * [1, 20])
                _add_blob(overlay, calc.row, calc.col, calc.radius, calc.amplitude, calc.harmonics, 0.6)
                rois.append(("Calcification", *_calcification_roi(rng, calc)))
                placed_calcs.append((calc.row, calc.col))
                break

    if plan.other_finding is not None:
        mass_radius = rng.uniform(35, 90) * min(scale, 2.0)
        for cu, cv in _sample_inside(rng, shape, width, height, 40, 0.7):
            if far_from_calcs(cv, cu, mass_radius * 1.3 + 40):
                break
        else:
            cu = None
        if cu is not None:
            harmonics = rng.uniform(-0.12, 0.12, (3, 2)) * [1, 20]
            name = plan.other_finding
            label = name.replace(" ", "").lower()
            if label == "mass":
                _add_blob(overlay, cv, cu, mass_radius, gland_level * rng.uniform(0.3, 0.55), harmonics, 6.0)
                rois.append((name, ROI_TYPE_CONTOUR, _outline_points(cv, cu, mass_radius, harmonics,
                                                                     int(rng.integers(30, 60)))))
            elif "spiculated" in label:
                _add_blob(overlay, cv, cu, mass_radius * 0.6, gland_level * rng.uniform(0.3, 0.5), harmonics, 4.0)
                spokes = np.zeros((height, width), np.float32)
                angles = rng.uniform(0, 2 * np.pi, 24)
                reach = np.arange(int(mass_radius * 1.2), dtype=np.float32)
                rows = cv + np.sin(angles)[:, None] * reach[None, :]
                cols = cu + np.cos(angles)[:, None] * reach[None, :]
                _splat(spokes, rows.ravel(), cols.ravel(), np.full(rows.size, 1.0, np.float32))
                overlay += 180 * np.fft.irfft2(np.fft.rfft2(spokes) * _gaussian_transfer(height, width, 1.2),
                                               s=(height, width)).astype(np.float32)
                rois.append((name, ROI_TYPE_CURVE, _outline_points(cv, cu, mass_radius * 1.25,
                                                                   harmonics * 0.3, 200)))
            else:  # asymmetry / distortion: a faint, broad density change
                _add_blob(overlay, cv, cu, mass_radius * 1.2, gland_level * rng.uniform(0.1, 0.2), harmonics, 15.0)
                rois.append((name, ROI_TYPE_CONTOUR, _outline_points(cv, cu, mass_radius * 1.3, harmonics,
                                                                     int(rng.integers(20, 40)))))

    background = 60 + 25 * (v / height)
    image = background + thickness * (signal + overlay)
    # quantum noise: Poisson-like, variance proportional to the signal
    image += rng.standard_normal((height, width), dtype=np.float32) * np.sqrt(0.7 * image)
    pixels = np.clip(np.rint(image), 0, (1 << BITS_STORED) - 1).astype(np.uint16)

    if plan.laterality == "R":  # right breasts face the other way: chest wall on the right
        pixels = np.ascontiguousarray(pixels[:, ::-1])
        rois = [(n, t, np.column_stack([width - 1 - p[:, 0], p[:, 1]])) for n, t, p in rois]
    rois = [(n, t, np.column_stack([np.clip(p[:, 0], 0, width - 1), np.clip(p[:, 1], 0, height - 1)]))
            for n, t, p in rois]
    return pixels, rois
