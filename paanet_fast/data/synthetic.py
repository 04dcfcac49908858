"""The built-in dataset: segmentation images generated from a seed, with no files.

Each image has a textured background (random gratings and smooth colour noise), one to four
target objects (ellipses and wobbly blobs of varied size, colour and contrast, some of them faint)
and up to two distractors of the same colours that are NOT in the mask (rectangles and thick line
segments, so a model must learn shape, not just contrast), then blur and sensor noise.
Image `i` depends only on (seed, i, image_size), so the set is identical for the same seed on
every machine and in every worker process.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

NAME = "synthetic"
_ID_PREFIX = "synthetic_"


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) float32 noise with about `cells` features across, roughly unit amplitude."""
    grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))


def _gratings(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, count: int) -> np.ndarray:
    """Sum of `count` sinusoidal gratings of random frequency, orientation and phase."""
    total = np.zeros_like(yy)
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 40)
        phase = rng.uniform(0, 2 * np.pi)
        total += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    return total


def _background(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    size = yy.shape[0]
    base = rng.uniform(60, 190, size=3).astype(np.float32)
    texture = rng.uniform(4, 14) * _gratings(rng, yy, xx, int(rng.integers(1, 4)))
    tint = rng.standard_normal(3).astype(np.float32)
    blotches = rng.uniform(8, 25) * _smooth_noise(rng, size, int(rng.integers(2, 7)))
    return base + texture[..., None] + blotches[..., None] * (0.6 + 0.4 * tint)


def _rotated(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = yy - cy, xx - cx
    return dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)


def _target(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """An ellipse or a blob with a wobbly outline, anywhere in the image."""
    size = yy.shape[0]
    radius = rng.uniform(0.05, 0.17) * size
    cy, cx = rng.uniform(0.1, 0.9, size=2) * size
    u, v = _rotated(yy, xx, cy, cx, rng.uniform(0, np.pi))
    if rng.random() < 0.5:
        aspect = rng.uniform(0.45, 1.0)
        return (u / radius) ** 2 + (v / (radius * aspect)) ** 2 <= 1.0
    theta = np.arctan2(v, u)
    outline = np.ones_like(theta)
    for k in range(2, 6):
        outline += rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(u, v) <= radius * outline


def _distractor(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A rotated rectangle or a thick line segment: straight edges and corners, never in the mask."""
    size = yy.shape[0]
    cy, cx = rng.uniform(0.1, 0.9, size=2) * size
    u, v = _rotated(yy, xx, cy, cx, rng.uniform(0, np.pi))
    if rng.random() < 0.5:
        half_w, half_h = rng.uniform(0.04, 0.14, size=2) * size
        return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)
    half_length = rng.uniform(0.12, 0.35) * size
    half_width = rng.uniform(1.0, 0.03 * size + 1.0)
    return (np.abs(u) <= half_length) & (np.abs(v) <= half_width)


def _paint(rng: np.random.Generator, image: np.ndarray, region: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> None:
    """Fill `region` with a colour offset from the local background, plus its own fine texture."""
    if not region.any():
        return
    local = image[region].mean(axis=0)
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction) + 1e-6
    contrast = rng.uniform(18, 80) * (1 if rng.random() < 0.5 else -1)
    texture = rng.uniform(2, 10) * _gratings(rng, yy, xx, 1)[region]
    image[region] = local + contrast * (0.5 + 0.5 * np.abs(direction)) + texture[:, None]


def generate_sample(seed: int, index: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image `index` of the synthetic set for `seed`: ((S, S, 3) uint8, (S, S) bool), S = image_size."""
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    image = _background(rng, yy, xx)
    mask = np.zeros((image_size, image_size), dtype=bool)
    kinds = [True] * int(rng.integers(1, 5)) + [False] * int(rng.integers(0, 3))
    for is_target in rng.permutation(kinds):
        region = _target(rng, yy, xx) if is_target else _distractor(rng, yy, xx)
        _paint(rng, image, region, yy, xx)
        # Later objects occlude earlier ones, so a distractor on top of a target cuts it.
        mask = (mask | region) if is_target else (mask & ~region)
    blurred = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    noisy = np.asarray(blurred, dtype=np.float32) + rng.normal(0, rng.uniform(3, 14), size=image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), mask


def _triangle(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A triangle of random size, shape and orientation (three corners around a centre)."""
    size = yy.shape[0]
    radius = rng.uniform(0.08, 0.2) * size
    cy, cx = rng.uniform(0.1, 0.9, size=2) * size
    angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.4, 0.4, 3)
    corners = np.stack([cy + radius * np.sin(angles), cx + radius * np.cos(angles)], axis=1)
    sides = []
    for (y0, x0), (y1, x1) in zip(corners, np.roll(corners, -1, axis=0)):
        sides.append((x1 - x0) * (yy - y0) - (y1 - y0) * (xx - x0))
    sides = np.stack(sides)
    return (sides >= 0).all(axis=0) | (sides <= 0).all(axis=0)


def _rectangle(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A rotated rectangle of random size and aspect."""
    size = yy.shape[0]
    cy, cx = rng.uniform(0.1, 0.9, size=2) * size
    u, v = _rotated(yy, xx, cy, cx, rng.uniform(0, np.pi))
    half_w, half_h = rng.uniform(0.05, 0.15, size=2) * size
    return (np.abs(u) <= half_w) & (np.abs(v) <= half_h)


# The classes of the multi-class variant: told apart by shape only (colours are drawn alike for all).
CLASS_SHAPES = {"blob": _target, "rectangle": _rectangle, "triangle": _triangle}


def generate_multiclass_sample(seed: int, index: int, image_size: int, classes: int
                               ) -> tuple[np.ndarray, np.ndarray]:
    """Image `index` of the multi-class variant: ((S, S, 3) uint8, (S, S, classes) bool), S = image_size.

    Two to five objects, each of a random class among the first `classes` of CLASS_SHAPES, on the
    binary set's backgrounds; a later object occludes earlier ones (in every class's mask).
    """
    rng = np.random.default_rng([seed, index, classes])
    yy, xx = np.mgrid[0:image_size, 0:image_size].astype(np.float32)
    image = _background(rng, yy, xx)
    mask = np.zeros((image_size, image_size, classes), dtype=bool)
    shapes = list(CLASS_SHAPES.values())[:classes]
    for _ in range(int(rng.integers(2, 6))):
        label = int(rng.integers(classes))
        region = shapes[label](rng, yy, xx)
        _paint(rng, image, region, yy, xx)
        mask[region] = False
        mask[region, label] = True
    blurred = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    noisy = np.asarray(blurred, dtype=np.float32) + rng.normal(0, rng.uniform(3, 14), size=image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), mask


class SyntheticSource:
    """`num_images` generated samples with ids synthetic_00000, synthetic_00001, ...

    With `classes` 2 or 3, the multi-class variant (generate_multiclass_sample): masks (S, S, classes).
    """

    name = NAME
    official_split = None

    def __init__(self, num_images: int, image_size: int, seed: int, classes: int = 1) -> None:
        if num_images < 3:
            raise ValueError(f"synthetic: num_images must be at least 3 (train/val/test), got {num_images}")
        if image_size < 16:
            raise ValueError(f"synthetic: image_size must be at least 16, got {image_size}")
        if not 1 <= classes <= len(CLASS_SHAPES):
            raise ValueError(f"synthetic: --classes must be 1 (targets and distractors) or 2 to {len(CLASS_SHAPES)} "
                             f"(shapes: {', '.join(CLASS_SHAPES)}), got {classes}")
        self.num_images = num_images
        self.image_size = image_size
        self.seed = seed
        self.classes = classes
        self.class_names = ["foreground"] if classes == 1 else list(CLASS_SHAPES)[:classes]
        classes_note = "" if classes == 1 else f", {classes} classes ({', '.join(self.class_names)})"
        self.root = f"<generated: {num_images} images of {image_size}x{image_size}, seed {seed}{classes_note}>"
        # Generated samples are kept (about 50 KB each at 128x128): later epochs only augment them.
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def ids(self) -> list[str]:
        """Sample ids, sorted."""
        return [f"{_ID_PREFIX}{i:05d}" for i in range(self.num_images)]

    def load(self, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(image (S, S, 3) uint8, mask (S, S) bool, or (S, S, classes) bool) of one sample."""
        if sample_id not in self._cache:
            index = int(sample_id.removeprefix(_ID_PREFIX))
            sample = (generate_sample(self.seed, index, self.image_size) if self.classes == 1 else
                      generate_multiclass_sample(self.seed, index, self.image_size, self.classes))
            for array in sample:
                array.setflags(write=False)  # shared by every epoch: nothing may change it in place
            self._cache[sample_id] = sample
        return self._cache[sample_id]
