"""A photo set of handwritten-style digits made without MNIST, to measure ``predict`` on digits
written the way people write them (``python -m experiments.bench photos``).

Two sources, neither MNIST nor derived from it:

- pen: digits drawn here stroke by stroke from hand-placed control points, each with its
  variants (the crossed European 7, the 1 with a flag and a foot, the 9 with a straight tail,
  the open 4, ...), jittered point by point, slanted, rotated and squeezed per photo, in a felt
  pen's width (6-16 % of the digit's height; MNIST's strokes are about 10 %, see mnist_like);
- font: the digits of the machine's TrueType fonts (DejaVu, Liberation: sans, serif, mono,
  bold, italic), slanted and rotated a little.

Each digit is then "photographed": dark ink on paper of several greys with a light gradient,
blurred, with sensor noise, saved as JPEG or PNG at 96-200 pixels. The set is drawn from a seed,
so a measurement names the seed and can be repeated.
"""

from __future__ import annotations

import glob
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

# Strokes of each digit in a unit box (x right, y down), as lists of control points; a digit
# has one or more variants, each a list of strokes. Curved strokes pass through their points.


def ellipse(cx, cy, rx, ry, start=0.0, end=2 * math.pi, n=13):
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in np.linspace(start, end, n)]


DIGITS = {
    0: [[ellipse(0.5, 0.5, 0.28, 0.4)]],
    1: [[[(0.5, 0.08), (0.5, 0.92)]],
        [[(0.3, 0.3), (0.52, 0.08), (0.52, 0.92)]],  # flag
        [[(0.3, 0.3), (0.52, 0.08), (0.52, 0.92)], [(0.3, 0.92), (0.74, 0.92)]]],  # flag, foot
    2: [[[(0.22, 0.3), (0.35, 0.12), (0.6, 0.1), (0.75, 0.28), (0.6, 0.55), (0.22, 0.9),
          (0.8, 0.9)]],
        [[(0.22, 0.28), (0.5, 0.08), (0.76, 0.3), (0.45, 0.65), (0.2, 0.9), (0.45, 0.8),
          (0.8, 0.92)]]],  # a loop at the base
    3: [[[(0.25, 0.15), (0.55, 0.08), (0.75, 0.27), (0.45, 0.48)],
         [(0.45, 0.48), (0.78, 0.68), (0.6, 0.92), (0.22, 0.85)]],
        [[(0.22, 0.1), (0.78, 0.1), (0.45, 0.45), (0.78, 0.65), (0.6, 0.92), (0.22, 0.85)]]],
    4: [[[(0.65, 0.92), (0.65, 0.08), (0.18, 0.65), (0.85, 0.65)]],
        [[(0.3, 0.08), (0.25, 0.6), (0.82, 0.6)], [(0.66, 0.3), (0.66, 0.95)]]],  # open 4
    5: [[[(0.75, 0.1), (0.32, 0.1), (0.28, 0.45)],
         [(0.28, 0.45), (0.6, 0.38), (0.78, 0.62), (0.58, 0.9), (0.22, 0.85)]]],
    6: [[[(0.7, 0.08), (0.42, 0.3), (0.27, 0.6), (0.32, 0.85), (0.55, 0.92), (0.74, 0.75),
          (0.6, 0.52), (0.3, 0.6)]]],
    7: [[[(0.2, 0.1), (0.8, 0.1), (0.42, 0.92)]],
        [[(0.2, 0.1), (0.8, 0.1), (0.42, 0.92)], [(0.35, 0.5), (0.78, 0.5)]],  # crossed
        [[(0.22, 0.22), (0.25, 0.1), (0.8, 0.1), (0.45, 0.92)]]],  # a hook at the start
    8: [[ellipse(0.5, 0.28, 0.2, 0.2, math.pi / 2, 2.5 * math.pi),
         ellipse(0.5, 0.7, 0.26, 0.22, -math.pi / 2, 1.5 * math.pi)]],
    9: [[ellipse(0.48, 0.3, 0.24, 0.21, 0, 2 * math.pi), [(0.72, 0.3), (0.68, 0.92)]],  # straight
        [ellipse(0.48, 0.3, 0.24, 0.21, 0, 2 * math.pi),
         [(0.72, 0.3), (0.7, 0.7), (0.55, 0.92), (0.35, 0.88)]]],  # curved tail
}  # fmt: skip


def smooth(points: list[tuple[float, float]], n: int = 8) -> list[tuple[float, float]]:
    """A Catmull-Rom curve through ``points`` (``n`` segments between two points)."""
    if len(points) < 3:
        return points
    p = np.array([points[0], *points, points[-1]], dtype=float)
    out = []
    for i in range(1, len(p) - 2):
        for t in np.linspace(0, 1, n, endpoint=False):
            t2, t3 = t * t, t * t * t
            out.append(
                0.5 * ((2 * p[i]) + (-p[i - 1] + p[i + 1]) * t
                       + (2 * p[i - 1] - 5 * p[i] + 4 * p[i + 1] - p[i + 2]) * t2
                       + (-p[i - 1] + 3 * p[i] - 3 * p[i + 1] + p[i + 2]) * t3)
            )  # fmt: skip
    out.append(p[-2])
    return [tuple(q) for q in out]


def pen_digit(digit: int, rng: random.Random, size: int = 256) -> Image.Image:
    """One digit drawn stroke by stroke: ink 255 on 0, ``size`` x ``size``."""
    variant = rng.choice(DIGITS[digit])
    slant, angle = rng.uniform(-0.35, 0.25), math.radians(rng.uniform(-8, 8))
    squeeze = rng.uniform(0.75, 1.1)
    width = max(2, round(size * 0.6 * rng.uniform(0.06, 0.16)))
    image = Image.new("L", (size, size))
    draw = ImageDraw.Draw(image)
    for stroke in variant:
        points = [(x + rng.gauss(0, 0.025), y + rng.gauss(0, 0.025)) for x, y in stroke]
        placed = []
        for x, y in smooth(points):
            x, y = (x - 0.5) * squeeze + slant * (0.5 - y), y - 0.5  # slant: top to the right
            x, y = (
                x * math.cos(angle) - y * math.sin(angle),
                x * math.sin(angle) + y * math.cos(angle),
            )
            placed.append((size / 2 + 0.6 * size * x, size / 2 + 0.6 * size * y))
        draw.line(placed, fill=255, width=width, joint="curve")
        for x, y in (placed[0], placed[-1]):  # round pen tips
            draw.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    return image


def font_digit(digit: int, rng: random.Random, size: int = 256) -> Image.Image:
    """One digit of a random system TrueType font: ink 255 on 0."""
    fonts = sorted(glob.glob("/usr/share/fonts/truetype/**/*.ttf", recursive=True))
    if not fonts:
        return pen_digit(digit, rng, size)
    font = ImageFont.truetype(rng.choice(fonts), int(size * 0.6))
    image = Image.new("L", (size, size))
    ImageDraw.Draw(image).text((size / 2, size / 2), str(digit), fill=255, font=font, anchor="mm")
    shear = rng.uniform(-0.25, 0.1)
    image = image.transform(image.size, Image.AFFINE, (1, shear, -shear * size / 2, 0, 1, 0),
                            Image.BILINEAR)  # fmt: skip
    return image.rotate(rng.uniform(-8, 8), Image.BILINEAR)


def photograph(ink: Image.Image, rng: random.Random) -> Image.Image:
    """Dark ink on grey paper with a light gradient, blur and noise, at 96-200 pixels."""
    side = rng.randint(96, 200)
    ink = np.asarray(ink.resize((side, side), Image.LANCZOS), dtype=np.float32) / 255
    paper = rng.uniform(0.55, 0.95)
    ramp = np.linspace(-1, 1, side)[None, :] * rng.uniform(-0.08, 0.08)
    ramp = ramp + np.linspace(-1, 1, side)[:, None] * rng.uniform(-0.08, 0.08)
    tone = rng.uniform(0.05, 0.3)  # the ink's grey
    pixels = (paper + ramp) * (1 - ink) + tone * ink
    pixels += np.random.default_rng(rng.randrange(2**32)).normal(0, 0.02, pixels.shape)
    image = Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5) * side / 100))


def make_photos(folder: str | Path, per_digit: int = 20, seed: int = 0) -> list[tuple[Path, int]]:
    """Writes ``per_digit`` photos of each digit (three in four drawn with a pen, one in four
    from a font) to ``folder``; returns ``(path, digit)`` pairs."""
    rng, folder = random.Random(seed), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for digit in range(10):
        for i in range(per_digit):
            source = "font" if i % 4 == 3 else "pen"
            ink = (font_digit if source == "font" else pen_digit)(digit, rng)
            suffix = rng.choice([".jpg", ".png"])
            path = folder / f"{digit}_{i:03d}_{source}{suffix}"
            image = photograph(ink, rng)
            image.save(path, quality=rng.randint(60, 95)) if suffix == ".jpg" else image.save(path)
            made.append((path, digit))
    return made
