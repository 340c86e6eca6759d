"""The demo world (scenes, renders, captions, held-out combinations) and the judge that reads renders
back into words."""
import numpy as np
import pytest
from PIL import Image

from inkwash.demo import judge, world
from inkwash.demo.world import Obj, Scene


def single_object_scenes(n, seed):
    """Random single-object scenes on plain backgrounds, held-out triples included."""
    rng = np.random.default_rng(seed)
    scenes = [world.random_scene(rng, n_objects=1, allow_held_out=True) for _ in range(n)]
    return [Scene(s.background, None, s.objects) for s in scenes]


def degrade(image, rng):
    """Roughly what a small generator's output looks like: blurred (sigma 1.5), noisy (std 10) and
    passed through a 64x64 bottleneck."""
    sigma, r = 1.5, 5
    kernel = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma ** 2))
    kernel /= kernel.sum()
    f = np.pad(image.astype(np.float32), ((r, r), (r, r), (0, 0)), mode="edge")
    f = sum(k * f[i:i + image.shape[0]] for i, k in enumerate(kernel))              # rows
    f = sum(k * f[:, i:i + image.shape[1]] for i, k in enumerate(kernel))           # columns
    f += rng.normal(0, 10, f.shape)
    small = Image.fromarray(np.clip(np.round(f), 0, 255).astype(np.uint8)).resize((64, 64), Image.BILINEAR)
    return np.asarray(small.resize(image.shape[1::-1], Image.BILINEAR))


# ------------------------------------------------------------------------------------------- world
def test_same_seed_same_batch():
    a, b, c = world.batch(40, seed=7), world.batch(40, seed=7), world.batch(40, seed=8)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert a[2] == b[2] and a[3] == b[3]
    assert not np.array_equal(a[0], c[0]) and a[2] != c[2]


def test_batch_shapes_and_ranges():
    images, depths, captions, scenes = world.batch(300, seed=0)
    assert images.shape == (300, 128, 128, 3) and images.dtype == np.uint8
    assert depths.shape == (300, 128, 128) and depths.dtype == np.float32
    assert depths.min() == 0 and depths.max() <= 1
    assert len(captions) == len(scenes) == 300 and all(isinstance(c, str) for c in captions)
    images, depths, _, _ = world.batch(3, seed=0, size=64)
    assert images.shape == (3, 64, 64, 3) and depths.shape == (3, 64, 64)


def test_random_scenes_follow_the_rules():
    rng = np.random.default_rng(1)
    scenes = [world.random_scene(rng) for _ in range(3000)]
    for s in scenes:
        assert 1 <= len(s.objects) <= 2
        assert len({o.position for o in s.objects}) == len(s.objects)
        assert all(o.colour not in s.backgrounds for o in s.objects)
        assert s.background2 != s.background
    assert 0.2 < np.mean([s.background2 is not None for s in scenes]) < 0.3
    assert 0.3 < np.mean([len(s.objects) == 2 for s in scenes]) < 0.7
    assert {o.shape for s in scenes for o in s.objects} == set(world.SHAPES)
    assert {o.position for s in scenes for o in s.objects} == set(world.POSITIONS)
    assert set(world.COLOURS) >= {"red", "orange", "yellow", "green", "blue", "purple", "white", "black"}


def test_captions_name_every_object_and_usually_the_rest():
    rng = np.random.default_rng(2)
    scenes = [world.random_scene(rng) for _ in range(2000)]
    captions = [world.caption(s, rng) for s in scenes]
    for s, c in zip(scenes, captions):
        for o in s.objects:
            assert f"{o.colour} {o.shape}" in c, c
    sized = [all(f"{o.size} {o.colour}" in c for o in s.objects) for s, c in zip(scenes, captions)]
    placed = [all(any(p in c for p in world._WHERE[o.position]) for o in s.objects)
              for s, c in zip(scenes, captions)]
    with_bg = [all(bg in c for bg in s.backgrounds) for s, c in zip(scenes, captions)]
    for share in (np.mean(sized), np.mean(placed), np.mean(with_bg)):
        assert 0.85 <= share < 1.0  # mostly there, but the model also sees captions without it
    assert len(set(captions)) > 1500  # varied phrasing


def test_prompt_for_is_complete():
    scene = Scene("blue", None, (Obj("circle", "red", "large", "top left"),))
    assert world.prompt_for(scene) == "a large red circle in the top left corner on a blue background"
    two = Scene("black", "white", (Obj("star", "orange", "small", "center"), Obj("square", "red", "large", "left")))
    assert world.prompt_for(two) == ("a small orange star in the center and a large red square on the left "
                                     "on a black and white background")


def test_held_out_triples_never_reach_training():
    assert 0.08 < len(world.HELD_OUT) / (8 * 7 * 4) < 0.12
    assert all(colour != bg for colour, _, bg in world.HELD_OUT)
    # every part of a held-out triple is still seen in training
    assert {c for c, _, _ in world.HELD_OUT} == set(world.COLOURS)
    assert {s for _, s, _ in world.HELD_OUT} == set(world.SHAPES)
    rng = np.random.default_rng(3)
    assert not any(world.is_held_out(world.random_scene(rng)) for _ in range(5000))
    _, _, _, scenes = world.batch(500, seed=3)
    assert not any(world.is_held_out(s) for s in scenes)
    assert any(world.is_held_out(world.random_scene(rng, allow_held_out=True)) for _ in range(500))


def test_held_out_scenes_use_only_held_out_triples():
    scenes = world.held_out_scenes(96, seed=0)
    assert len(scenes) == 96 and scenes == world.held_out_scenes(96, seed=0)
    for s in scenes:
        assert world.is_held_out(s) and len(s.objects) == 1 and s.background2 is None
    assert {(s.objects[0].colour, s.objects[0].shape, s.background) for s in scenes} == world.HELD_OUT
    assert {s.objects[0].size for s in scenes} == set(world.SIZES)
    assert len({s.objects[0].position for s in scenes}) > 5


def test_every_object_stays_inside_the_canvas():
    for x, y in world.CENTRES.values():
        assert 0 < x < 1 and 0 < y < 1
    for position in world.POSITIONS:
        for shape in world.SHAPES:
            image, _ = world.render(Scene("black", None, (Obj(shape, "white", "large", position),)))
            edge = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
            assert (edge == world.COLOURS["black"]).all(), (shape, position)
            assert (image == world.COLOURS["white"]).all(-1).sum() > 200  # and it is drawn


def test_two_tone_background_is_top_and_bottom():
    image, _ = world.render(Scene("blue", "green", ()))
    assert (image[:64] == world.COLOURS["blue"]).all() and (image[64:] == world.COLOURS["green"]).all()


def test_depth_background_far_later_objects_nearer():
    earlier, later = Obj("circle", "red", "small", "center"), Obj("square", "blue", "large", "center")
    image, depth = world.render(Scene("white", None, (earlier, later)))
    assert depth[0, 0] == 0 and depth[64, 64] == pytest.approx(world.object_depth(1, later))
    assert (image[64, 64] == world.COLOURS["blue"]).all()
    # a later object is nearer than an earlier one whatever their sizes
    for a in world.SIZES:
        for b in world.SIZES:
            assert world.object_depth(1, Obj("star", "red", b, "top")) > world.object_depth(0, Obj("star", "red", a, "top"))
            assert 0 < world.object_depth(0, Obj("star", "red", a, "top")) <= 1
    # overlapping neighbours: where they meet, the later one is in front
    first, second = Obj("circle", "red", "large", "left"), Obj("circle", "blue", "large", "center")
    image, depth = world.render(Scene("white", None, (first, second)))
    overlap = (world.shape_mask("circle", world.CENTRES["left"], world.RADII["large"]) > 0.99) & \
              (world.shape_mask("circle", world.CENTRES["center"], world.RADII["large"]) > 0.99)
    assert overlap.any()
    assert np.allclose(depth[overlap], world.object_depth(1, second))
    assert (image[overlap] == world.COLOURS["blue"]).all()


# ------------------------------------------------------------------------------------------- judge
def test_judge_is_right_on_clean_renders():
    for scene in single_object_scenes(300, seed=4):
        image, _ = world.render(scene)
        assert all(judge.judge(image, scene).values()), (scene, judge.describe(image))


def test_judge_copes_with_blurry_noisy_renders():
    rng = np.random.default_rng(5)
    scenes = single_object_scenes(300, seed=5)
    verdicts = [judge.judge(degrade(world.render(s)[0], rng), s) for s in scenes]
    assert np.mean([all(v.values()) for v in verdicts]) >= 0.97


def test_describe_reports_what_it_sees():
    scene = Scene("yellow", None, (Obj("star", "purple", "large", "bottom right"),))
    image, _ = world.render(scene)
    assert judge.describe(image) == {"background": "yellow", "colour": "purple", "shape": "star",
                                     "position": "bottom right", "size": "large"}
    big = np.asarray(Image.fromarray(image).resize((512, 512), Image.BICUBIC))  # any resolution
    assert judge.describe(big)["shape"] == "star"
    wrong = Scene("yellow", None, (Obj("circle", "blue", "large", "top left"),))
    assert judge.judge(image, wrong) == {"background": True, "colour": False, "shape": False,
                                         "position": False}
    empty = judge.describe(np.full((128, 128, 3), world.COLOURS["green"], np.uint8))
    assert empty["background"] == "green" and empty["shape"] is None
