"""The demo evaluation's own machinery: its measures on world renders, where the answer is known, and
the whole report on a tiny random family (numbers meaningless, every workflow run for real)."""
import json

import numpy as np
import torch

from inkwash.demo import evaluate, world
from inkwash.nodes.runtime import annotators
from tiny_models import write_tiny_checkpoint, write_tiny_controlnet


def test_samples_span_every_held_out_colour_and_leave_room_to_inpaint():
    scenes = evaluate.prompt_scenes(16)
    assert {s.objects[0].colour for s in scenes} == set(world.COLOURS)
    assert all(world.is_held_out(s) for s in scenes)
    for scene in evaluate.inpaint_scenes(8):
        assert "yellow" not in (scene.background, scene.objects[0].colour)
        assert evaluate._free_position(scene.objects[0]) is not None


def test_inpaint_measures_see_a_rendered_yellow_circle():
    scene = evaluate.inpaint_scenes(1)[0]
    obj = scene.objects[0]
    corner = evaluate._free_position(obj)
    painted = world.Scene(scene.background, None, (obj, world.Obj("circle", "yellow", "large", corner)))
    source, target = world.render(scene)[0], world.render(painted)[0]
    square = evaluate._square(corner)
    assert evaluate.painted_colour(target, square, scene.background) == "yellow"
    assert evaluate.painted_colour(source, square, scene.background) is None
    assert evaluate.outside_difference(target, source, square).max() == 0  # the circle fits the square


def test_edge_iou_and_pearson_on_renders():
    scene = evaluate.input_scenes(1)[0]
    image, depth = world.render(scene)
    edges = annotators.canny(torch.from_numpy(image / 255.0).float()[None], 0.4, 0.8)[0].numpy()[..., 0] > 0.5
    assert edges.any()
    assert evaluate.edge_iou(edges, edges) == 1.0
    assert evaluate.edge_iou(edges, np.roll(edges, 1, axis=1)) > 0.75  # a pixel off is nearly the same edge
    assert evaluate.edge_iou(edges, np.roll(edges, 8, axis=1)) < 0.35  # a shape's width off is not
    assert evaluate.pearson(depth * 3 + 1, depth) > 0.999
    assert evaluate.pearson(np.zeros_like(depth), depth) == 0.0


def test_report_on_a_tiny_family(tmp_path, folders):
    models = tmp_path / "tiny-family"
    (models / "checkpoints").mkdir(parents=True)
    (models / "controlnet").mkdir()
    write_tiny_checkpoint(models / "checkpoints", evaluate.CHECKPOINT)
    for kind in ("canny", "depth"):
        write_tiny_controlnet(models / "controlnet", f"inkwash-demo-{kind}.safetensors")
    out = tmp_path / "report"
    code = evaluate.main(["--n", "1", "--out", str(out), "--models-dir", str(models)])
    assert code == 1  # random weights miss the targets
    report = json.loads((out / "report.json").read_text())
    assert set(report["measurements"]) == {"txt2img", "txt2img_cfg1", "cfg", "img2img", "inpaint", "canny",
                                           "depth", "depth2img", "speed"}
    # Everything but the depth measurements ran: this family has no depth estimator.
    ran = {key for key, m in report["measurements"].items() if m["error"] is None}
    assert ran >= {"txt2img", "txt2img_cfg1", "cfg", "img2img", "inpaint", "canny", "speed"}
    assert "speed" in (out / "report.md").read_text() and (out / "grid.png").stat().st_size > 0
