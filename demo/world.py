"""A tiny procedural world of coloured shapes, the training data of the demo models.

A scene is a plain or two-tone background with one or two objects on it. Each object is a shape
(circle, square, triangle, star) of a colour, a size and one of nine positions. Everything here is
deterministic from a seed, and the same definitions (colours, centres, radii, shape outlines) are
what the judge measures generated images against.

Geometry is in fractions of the canvas, so a scene renders at any size; 128x128 is the default.

    >>> rng = np.random.default_rng(0)
    >>> scene = random_scene(rng)
    >>> image, depth = render(scene)
    >>> caption(scene, rng), prompt_for(scene)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Saturated and far apart in RGB (every pair is at least ~100 apart), so that the nearest named
# colour of a blurry generated pixel is still the intended one. Backgrounds use the same names.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (250, 135, 20),
    "yellow": (250, 235, 20),
    "green": (40, 170, 70),
    "blue": (40, 90, 220),
    "purple": (150, 50, 190),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center",
             "top left", "top right", "bottom left", "bottom right")

# Centre (x, y) of each position on a 3x3 grid, as fractions of the canvas (y grows downwards).
# On 128x128: 0.22 -> 28 px, 0.5 -> 64 px, 0.78 -> 100 px.
_NEAR, _MID, _FAR = 0.22, 0.5, 0.78
CENTRES: dict[str, tuple[float, float]] = {
    "left": (_NEAR, _MID), "right": (_FAR, _MID), "top": (_MID, _NEAR), "bottom": (_MID, _FAR),
    "center": (_MID, _MID),
    "top left": (_NEAR, _NEAR), "top right": (_FAR, _NEAR),
    "bottom left": (_NEAR, _FAR), "bottom right": (_FAR, _FAR),
}
# Outer radius of each size as a fraction of the canvas: circles and stars reach it, triangles have
# it as circumradius, squares have a half-side of SQUARE_HALF_SIDE * radius. A large object at a
# corner keeps 0.22 - 0.19 = 0.03 of the canvas (4 px at 128) between itself and the edge.
RADII = {"small": 0.11, "large": 0.19}
SQUARE_HALF_SIDE = 0.8  # so a square's area is close to a circle's of the same size
STAR_INNER = 0.42       # inner/outer radius of the five-pointed star: deep notches survive blur

# Depth: 1 = nearest. The background is far (0). Each object is a flat plate; a later object is
# OBJECT_STEP nearer than the one before it (it is drawn over it), and a small object is SMALL_BONUS
# nearer than a large one in the same slot, which never outweighs the drawing order.
OBJECT_DEPTH, OBJECT_STEP, SMALL_BONUS = 0.55, 0.25, 0.1

TWO_TONE_CHANCE = 0.25  # share of scenes with a two-tone background (background on top, background2 below)

_COLOUR_NAMES = tuple(COLOURS)


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """background2, when set, fills the bottom half of the canvas; background fills the top half."""
    background: str
    background2: str | None
    objects: tuple[Obj, ...]

    @property
    def backgrounds(self) -> tuple[str, ...]:
        return (self.background,) if self.background2 is None else (self.background, self.background2)


# ---------------------------------------------------------------------------------------- held out
# (object colour, shape, background colour) triples that no training caption ever shows, so that an
# evaluation can ask for combinations the model has only seen in parts. For colour number c
# (in COLOURS order) and k = 0, 1, 2: shape number (c + k) % 4 on background number (c + 1 + 3k) % 8.
# That is 24 of the 224 possible triples (~11%); each colour is held out 3 times, each background
# 3 times, each shape 6 times, and every (colour, shape) pair loses at most one of its 7 backgrounds,
# so every part of a held-out triple is still well represented in training.
# E.g. red circle on orange, red square on blue, red triangle on black, orange square on yellow...
HELD_OUT: frozenset[tuple[str, str, str]] = frozenset(
    (_COLOUR_NAMES[c], SHAPES[(c + k) % 4], _COLOUR_NAMES[(c + 1 + 3 * k) % 8])
    for c in range(8) for k in range(3))


def is_held_out(scene: Scene) -> bool:
    """True when any object, against any of the scene's background colours, is a held-out triple."""
    return any((o.colour, o.shape, bg) in HELD_OUT for o in scene.objects for bg in scene.backgrounds)


def held_out_scenes(n: int, seed: int) -> list[Scene]:
    """n single-object, plain-background scenes that use only held-out triples, for evaluation.
    The triples are cycled through in a fixed order so every one is used; size and position vary."""
    rng = np.random.default_rng(seed)
    triples = sorted(HELD_OUT)
    scenes = []
    for i in range(n):
        colour, shape, background = triples[i % len(triples)]
        obj = Obj(shape, colour, str(rng.choice(SIZES)), str(rng.choice(POSITIONS)))
        scenes.append(Scene(background, None, (obj,)))
    return scenes


# ----------------------------------------------------------------------------------------- scenes
def random_scene(rng: np.random.Generator, n_objects: int | None = None,
                 allow_held_out: bool = False) -> Scene:
    """A random scene: 1 or 2 objects at different positions, a two-tone background a quarter of the
    time. Objects never share a colour with the background, and two objects never share both colour
    and shape (a caption could not tell them apart). Held-out triples are redrawn unless allowed."""
    while True:
        n = int(rng.integers(1, 3)) if n_objects is None else n_objects
        background = str(rng.choice(_COLOUR_NAMES))
        background2 = None
        if rng.random() < TWO_TONE_CHANCE:
            background2 = str(rng.choice([c for c in _COLOUR_NAMES if c != background]))
        free_colours = [c for c in _COLOUR_NAMES if c not in (background, background2)]
        positions = rng.choice(len(POSITIONS), size=n, replace=False)
        objects = tuple(Obj(str(rng.choice(SHAPES)), str(rng.choice(free_colours)),
                            str(rng.choice(SIZES)), POSITIONS[p]) for p in positions)
        if len({(o.colour, o.shape) for o in objects}) < n:
            continue
        scene = Scene(background, background2, objects)
        if allow_held_out or not is_held_out(scene):
            return scene


# -------------------------------------------------------------------------------------- rendering
def _outline(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Polygon of a triangle or star (pointing up) around its centroid (cx, cy), in pixels."""
    if shape == "triangle":
        angles, radii = np.deg2rad([-90, 30, 150]), [r] * 3
    else:  # star: ten vertices alternating between the outer and the inner radius
        angles = np.deg2rad(-90 + 36 * np.arange(10))
        radii = [r if i % 2 == 0 else r * STAR_INNER for i in range(10)]
    return [(cx + rr * np.cos(a), cy + rr * np.sin(a)) for a, rr in zip(angles, radii)]


def shape_mask(shape: str, centre: tuple[float, float], radius: float, size: int = 128) -> np.ndarray:
    """Coverage (float32 [size, size], 0..1) of one shape; centre and radius in canvas fractions.
    Drawn at 2x and box-downsampled, which anti-aliases the edges."""
    s = 2 * size
    cx, cy, r = centre[0] * s, centre[1] * s, radius * s
    canvas = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        h = r * SQUARE_HALF_SIDE
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=255)
    elif shape in ("triangle", "star"):
        draw.polygon(_outline(shape, cx, cy, r), fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    return np.asarray(canvas.reduce(2), dtype=np.float32) / 255.0


def object_depth(index: int, obj: Obj) -> float:
    return OBJECT_DEPTH + OBJECT_STEP * index + (SMALL_BONUS if obj.size == "small" else 0.0)


def render(scene: Scene, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 [size, size, 3] and depth float32 [size, size] (0 = far background, 1 = nearest)."""
    image = np.empty((size, size, 3), np.float32)
    image[:] = COLOURS[scene.background]
    if scene.background2 is not None:
        image[size // 2:] = COLOURS[scene.background2]
    depth = np.zeros((size, size), np.float32)
    for i, obj in enumerate(scene.objects):
        cover = shape_mask(obj.shape, CENTRES[obj.position], RADII[obj.size], size)
        image += cover[..., None] * (np.float32(COLOURS[obj.colour]) - image)
        depth += cover * (object_depth(i, obj) - depth)
    return np.round(image).astype(np.uint8), depth


# ---------------------------------------------------------------------------------------- captions
# The first phrase of each position is the canonical one used by prompt_for.
_WHERE = {
    "left": ("on the left", "at the left", "on the left side"),
    "right": ("on the right", "at the right", "on the right side"),
    "top": ("at the top", "near the top", "at the top of the image"),
    "bottom": ("at the bottom", "near the bottom", "at the bottom of the image"),
    "center": ("in the center", "in the middle", "at the center"),
    "top left": ("in the top left corner", "at the top left", "in the top left"),
    "top right": ("in the top right corner", "at the top right", "in the top right"),
    "bottom left": ("in the bottom left corner", "at the bottom left", "in the bottom left"),
    "bottom right": ("in the bottom right corner", "at the bottom right", "in the bottom right"),
}
MENTION_CHANCE = 0.9  # each of size, position and background is in ~90% of captions


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _object_phrase(obj: Obj, size: bool, where: str | None, article: bool) -> str:
    phrase = f"{obj.size} {obj.colour} {obj.shape}" if size else f"{obj.colour} {obj.shape}"
    phrase = _a(phrase) if article else phrase
    return f"{phrase} {where}" if where else phrase


def _background_words(scene: Scene) -> str:
    """'blue' or, for a two-tone background, 'blue and green' (top colour first)."""
    if scene.background2 is None:
        return scene.background
    return f"{scene.background} and {scene.background2}"


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """A plain-English caption with varied phrasing. It always names every object's colour and shape;
    size, position and background are each left out of about one caption in ten."""
    with_size, with_where, with_bg = (rng.random(3) < MENTION_CHANCE)
    article = rng.random() < 0.8
    objects = " and ".join(
        _object_phrase(o, with_size, str(rng.choice(_WHERE[o.position])) if with_where else None, article)
        for o in scene.objects)
    if not with_bg:
        return objects
    bg = _background_words(scene)
    template = int(rng.integers(5))
    if template == 0:
        return f"{objects} on {_a(bg)} background"
    if template == 1:
        return f"{objects}, {bg} background"
    if template == 2:
        return f"{_a(bg)} background with {objects}"
    if template == 3:
        return f"{objects} against {_a(bg)} background"
    return f"{bg} background, {objects}"


def prompt_for(scene: Scene) -> str:
    """The one canonical, complete caption of a scene, used as the evaluation prompt, e.g.
    'a large red circle in the top left corner on a blue background'."""
    objects = " and ".join(_object_phrase(o, True, _WHERE[o.position][0], True) for o in scene.objects)
    return f"{objects} on {_a(_background_words(scene))} background"


# ------------------------------------------------------------------------------------------ batches
def batch(n: int, seed: int, size: int = 128):
    """A training set: (images uint8 [n,H,W,3], depths float32 [n,H,W], captions, scenes).
    Scenes and captions draw from separate streams, so the images of a seed do not depend on how
    captions are phrased."""
    scene_seed, caption_seed = np.random.SeedSequence(seed).spawn(2)
    scene_rng, caption_rng = np.random.default_rng(scene_seed), np.random.default_rng(caption_seed)
    images = np.empty((n, size, size, 3), np.uint8)
    depths = np.empty((n, size, size), np.float32)
    captions, scenes = [], []
    for i in range(n):
        scene = random_scene(scene_rng)
        images[i], depths[i] = render(scene, size)
        captions.append(caption(scene, caption_rng))
        scenes.append(scene)
    return images, depths, captions, scenes
