"""A1111's X/Y/Z plot: one image per combination of up to three axes' values (webui/xyz_axes.py), drawn as
a labelled grid (webui/xyz_grid_image.py), from the txt2img and img2img tabs and the A1111 API's
`script_name: "x/y/z plot"`.

Every cell is the workflow a single generation with its parameters would run (generation.py), and all
the cells are merged into ONE workflow, a branch per cell, with nodes that are identical in every input
kept once: a seed axis loads the checkpoint and encodes the prompts once, and the executor's cache
shares whatever else the cells have in common. That workflow is what "Export grid workflow" saves and
what the grid PNG embeds. Each cell's image is saved with its own infotext; the grid's infotext is its
first cell's plus A1111's "Script", "X Type", "X Values"... entries.
"""
from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..nodes.folders import Folders, safe_path
from ..nodes.formats import png_metadata
from ..nodes.formats.png_metadata import quote, read_png_metadata
from ..nodes.runtime import image_files
from . import xyz_grid_image
from .a1111_images import postprocess_saved
from .bad_request import BadRequest
from .generation import (
    Plan,
    PreparedInputs,
    img2img_workflow,
    output_nodes,
    prepare_img2img,
    txt2img_workflow,
    with_prompt_loras,
)
from .parameters import DEFAULT_MAX_PIXELS, GenerationParams, resolve
from .xyz_axes import SEED_AXES, Axis, find_axis, fix_seeds, parse_values, value_label

TITLE = "X/Y/Z plot"
SCRIPT_NAME = "x/y/z plot"  # as A1111's API matches it (lower case)
MAX_CELLS = 400
MAX_GRID_PIXELS = 200_000_000  # A1111's default img_max_size_mp
GRID_PREFIX = "xyz_grid"
# A1111's script_args for the X/Y/Z plot, in its order (ui()'s return value, v1.10).
SCRIPT_ARGS = ("x_type", "x_values", "x_values_dropdown", "y_type", "y_values", "y_values_dropdown",
               "z_type", "z_values", "z_values_dropdown", "draw_legend", "include_lone_images",
               "include_sub_grids", "no_fixed_seeds", "vary_seeds_x", "vary_seeds_y", "vary_seeds_z",
               "margin_size", "csv_mode")
MAX_MARGIN = 500


@dataclass
class XyzSettings:
    """The plot's settings under A1111's script_args names (x_type: an axis index or label)."""

    x_type: Any = 1
    x_values: str = ""
    x_values_dropdown: list = field(default_factory=list)
    y_type: Any = 0
    y_values: str = ""
    y_values_dropdown: list = field(default_factory=list)
    z_type: Any = 0
    z_values: str = ""
    z_values_dropdown: list = field(default_factory=list)
    draw_legend: bool = True
    include_lone_images: bool = False
    include_sub_grids: bool = False
    no_fixed_seeds: bool = False
    vary_seeds_x: bool = False
    vary_seeds_y: bool = False
    vary_seeds_z: bool = False
    margin_size: int = 0
    csv_mode: bool = False

    @classmethod
    def from_script_args(cls, args: Any) -> XyzSettings:
        """A1111's positional script_args (fewer are fine: the rest keep A1111's defaults)."""
        if not isinstance(args, (list, tuple)):
            raise BadRequest("script_args", f"expected a list of the X/Y/Z plot's arguments, got {args!r}")
        if len(args) > len(SCRIPT_ARGS):
            raise BadRequest("script_args", f"the X/Y/Z plot takes {len(SCRIPT_ARGS)} arguments "
                                            f"({', '.join(SCRIPT_ARGS)}), got {len(args)}")
        return cls.from_values(dict(zip(SCRIPT_ARGS, args)))

    @classmethod
    def from_values(cls, values: dict) -> XyzSettings:
        settings = cls()
        for name, value in values.items():
            if name not in SCRIPT_ARGS or value is None:
                continue
            default = getattr(cls(), name)
            if isinstance(default, bool):
                value = value if isinstance(value, bool) else str(value).lower() in ("true", "1", "yes")
            elif name == "margin_size":
                try:
                    value = min(max(int(value), 0), MAX_MARGIN)
                except (TypeError, ValueError):
                    raise BadRequest("margin_size", f"expected a number of pixels, got {value!r}") from None
            elif name.endswith("_dropdown"):
                value = [str(v) for v in value] if isinstance(value, (list, tuple)) else []
            elif name.endswith("_values"):
                value = str(value)
            setattr(settings, name, value)
        return settings


@dataclass
class PlotAxis:
    axis: Axis
    text: str  # the values as given (the grid's infotext reports them)
    values: list

    @property
    def labels(self) -> list[str]:
        return [value_label(self.axis, value) for value in self.values]


@dataclass
class Cell:
    position: tuple[int, int, int]  # ix, iy, iz
    params: GenerationParams  # resolved
    saver: str = ""  # its SaveImage (PreviewImage) node in the grid workflow
    overlay: Any = None  # an inpainting overlay to paste over its saved image


@dataclass
class XyzPlan(Plan):
    """A Plan whose one workflow makes every cell; `finish` draws the grid(s) and returns them before the
    cells (as A1111's images: grid, sub-grids with include_sub_grids, cells with include_lone_images)."""

    axes: tuple[PlotAxis, ...] = ()
    cells: list[Cell] = field(default_factory=list)
    settings: XyzSettings = field(default_factory=XyzSettings)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(len(axis.values) for axis in self.axes)

    def cell_at(self, ix: int, iy: int, iz: int) -> Cell:
        return next(cell for cell in self.cells if cell.position == (ix, iy, iz))

    def finish(self, folders: Folders, iteration: int, outputs: dict) -> list[Path]:
        cell_paths: dict[tuple, Path] = {}
        fixed: set[Path] = set()
        for cell in self.cells:
            entries = (outputs.get(cell.saver) or {}).get("images") or []
            if not entries:  # an interrupted run: the grid shows the cell blank, as A1111's
                continue
            entry = entries[0]
            base = folders.temp_dir if entry.get("type") == "temp" else folders.output_dir
            subfolder = entry.get("subfolder") or ""
            path = safe_path(base, f"{subfolder}/{entry['filename']}" if subfolder else entry["filename"])
            if cell.overlay is not None and path not in fixed:
                postprocess_saved(path, cell.overlay)
                fixed.add(path)
            cell_paths[cell.position] = path
        if not cell_paths:
            return []
        nx, ny, nz = self.shape
        x, y, z = self.axes
        legend = self.settings.draw_legend
        margin = self.settings.margin_size
        blank = Image.new("RGB", _open(next(iter(cell_paths.values()))).size)
        sub_grids = []
        for iz in range(nz):
            images = [_open(cell_paths[(ix, iy, iz)]) if (ix, iy, iz) in cell_paths else blank
                      for iy in range(ny) for ix in range(nx)]
            if legend:
                sub_grids.append(xyz_grid_image.annotated_grid(images, ny, x.labels, y.labels, margin))
            else:
                sub_grids.append(xyz_grid_image.image_grid(images, ny, margin))
        if nz == 1:
            main = sub_grids[0]
        else:
            main = xyz_grid_image.grid_of_grids(sub_grids, z.labels if legend else [""] * nz, margin)
        folder = folders.output_dir if self.params.save_images else folders.temp_dir
        first = next(iter(cell_paths.values()))
        paths = [self._save_grid(folder, main, cell_paths.get((0, 0, 0), first), with_z=True)]
        if self.settings.include_sub_grids:  # as A1111's: with one Z value too
            paths += [self._save_grid(folder, grid, cell_paths.get((0, 0, iz), first), with_z=False)
                      for iz, grid in enumerate(sub_grids)]
        if self.settings.include_lone_images:
            paths += [cell_paths[cell.position] for cell in self.ordered_cells() if cell.position in cell_paths]
        return paths

    def ordered_cells(self) -> list[Cell]:
        """The cells in A1111's image order: x fastest, then y, then z."""
        return sorted(self.cells, key=lambda cell: cell.position[::-1])

    def _save_grid(self, folder: Path, grid: Image.Image, first_cell: Path, with_z: bool) -> Path:
        infotext = grid_infotext(read_png_metadata(first_cell).get("parameters") or "", self.axes,
                                 self.settings, with_z)
        metadata = png_metadata.png_text(self.workflows[0], None, infotext)
        saved = image_files.save_png(grid, folder, GRID_PREFIX, metadata, compress_level=4)
        return saved.path

    def image_prompts(self, name: str = "prompt") -> list[str]:
        """The prompt (or negative prompt) of every image `finish` returns, in order."""
        return [getattr(self.cell_at(*position).params, name) for position in self._image_positions()]

    def image_seeds(self) -> list[int]:
        """The seed of every image `finish` returns, in order."""
        return [self.cell_at(*position).params.seed for position in self._image_positions()]

    def _image_positions(self) -> list[tuple[int, int, int]]:
        """The cell each returned image stands for (a grid: its first cell)."""
        nz = self.shape[2]
        grids = [(0, 0, 0)] + ([(0, 0, iz) for iz in range(nz)] if self.settings.include_sub_grids else [])
        cells = [cell.position for cell in self.ordered_cells()] if self.settings.include_lone_images else []
        return grids + cells



def _open(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image


def grid_infotext(first_cell: str, axes: tuple[PlotAxis, ...], settings: XyzSettings, with_z: bool) -> str:
    """A grid's infotext: its first cell's, with A1111's script entries added to the parameters line."""
    extra = {"Script": TITLE}
    for name, axis in zip("XYZ", axes):
        if axis.axis.label == "Nothing" or (name == "Z" and not with_z):
            continue
        extra[f"{name} Type"] = axis.axis.label
        extra[f"{name} Values"] = axis.text
        if axis.axis.label in SEED_AXES and not settings.no_fixed_seeds:
            extra[f"Fixed {name} Values"] = ", ".join(str(v) for v in axis.values)
    line = ", ".join(f"{key}: {quote(value)}" for key, value in extra.items())
    return f"{first_cell}, {line}" if first_cell else line


def script_info(mode: str) -> dict:
    """The plot as A1111's /sdapi/v1/script-info describes a script: its arguments in script_args order."""
    from .xyz_axes import axes_for

    labels = [axis.label for axis in axes_for(mode)]
    args = []
    for name in SCRIPT_ARGS:
        default = getattr(XyzSettings(), name)
        arg = {"label": name.replace("_", " ").capitalize(), "value": default, "minimum": None, "maximum": None,
               "step": None, "choices": None}
        if name.endswith("_type"):
            arg["choices"] = labels
        if name == "margin_size":
            arg.update(minimum=0, maximum=MAX_MARGIN, step=2)
        args.append(arg)
    return {"name": SCRIPT_NAME, "is_alwayson": False, "is_img2img": mode != "txt2img", "args": args}


# -- building --------------------------------------------------------------------------------------------

def _match_file(value: str, names: list[str], which: str, label: str) -> str:
    """A model file named as A1111 names it: its file name, its name without extension, or its title
    "name [hash]"."""
    wanted = re.sub(r"\s*\[[0-9a-fA-F]{8,64}\]$", "", value.strip())
    for name in names:
        if wanted in (name, os.path.splitext(name)[0], os.path.splitext(os.path.basename(name))[0]):
            return name
    raise BadRequest(f"{which} values", f"{label}: {value!r} not found; available: {', '.join(names) or 'none'}")


def _choice_values(axis: Axis, values: list, folders: Folders, which: str) -> list:
    """Model names resolved to their files (as A1111's confirm_checkpoints checks them up front)."""
    if axis.choices == "checkpoints":
        return [_match_file(v, folders.list("checkpoints"), which, axis.label) for v in values]
    if axis.choices == "refiners":
        return [v if v in ("None", "none", "") else _match_file(v, folders.list("checkpoints"), which, axis.label)
                for v in values]
    if axis.choices == "vae":
        return [v if v in ("Automatic", "None", "") else _match_file(v, folders.list("vae"), which, axis.label)
                for v in values]
    return values


def plot_axes(mode: str, settings: XyzSettings, folders: Folders) -> tuple[PlotAxis, PlotAxis, PlotAxis]:
    axes = []
    for which in "xyz":
        axis = find_axis(mode, getattr(settings, f"{which}_type"), which.upper())
        text = getattr(settings, f"{which}_values")
        dropdown = getattr(settings, f"{which}_values_dropdown")
        if axis.choices and not settings.csv_mode and dropdown:  # A1111's multi-select for choice axes
            text = ", ".join(quote(v) for v in dropdown)
        values = parse_values(axis, text, which.upper())
        values = _choice_values(axis, values, folders, which.upper())
        if not settings.no_fixed_seeds:
            values = fix_seeds(axis, values)
        axes.append(PlotAxis(axis, text, values))
    return tuple(axes)


def _cell_params(params: GenerationParams, axes: tuple[PlotAxis, ...], position: tuple[int, int, int],
                 settings: XyzSettings) -> GenerationParams:
    """The cell's parameters: each axis's value applied in X, Y, Z order, then A1111's varied seeds."""
    for which, axis, index in zip("XYZ", axes, position):
        try:
            params = axis.axis.apply(params, axis.values[index], axis.values)
        except BadRequest as exc:
            raise BadRequest(f"{which} values", f"{axis.axis.label} {axis.labels[index]!r}: {exc.message}") from None
    nx, ny, _ = (len(axis.values) for axis in axes)
    ix, iy, iz = position
    xdim = nx if settings.vary_seeds_x else 1
    ydim = ny if settings.vary_seeds_y else 1
    offset = (ix if settings.vary_seeds_x else 0) + (iy * xdim if settings.vary_seeds_y else 0) + \
        (iz * xdim * ydim if settings.vary_seeds_z else 0)
    if offset and params.seed >= 0:
        params = params.replace(seed=params.seed + offset)
    return params


def cell_order(axes: tuple[PlotAxis, ...]) -> list[tuple[int, int, int]]:
    """Every (ix, iy, iz), the costliest axis (checkpoints) outermost so it changes least often, as A1111."""
    ranked = sorted(range(3), key=lambda i: (-axes[i].axis.cost, -i))  # among equals z, y, x as A1111's
    positions = []
    for combo in itertools.product(*(range(len(axes[i].values)) for i in ranked)):
        position = [0, 0, 0]
        for axis_index, value_index in zip(ranked, combo):
            position[axis_index] = value_index
        positions.append(tuple(position))
    return positions


def build_plot(mode: str, params: GenerationParams, settings: XyzSettings, folders: Folders,
               max_pixels: int | None = DEFAULT_MAX_PIXELS, prefix: str = "img2img") -> XyzPlan:
    """The plot of `params` (a tab's form or an API request, unresolved) over the settings' axes, for
    "txt2img" or an img2img `mode` (the init image stored once, at each cell size a Size axis asks for)."""
    warnings = []
    if params.batch_size > 1 or params.n_iter > 1:
        warnings.append("X/Y/Z plot: one image per cell; batch count and batch size are set to 1")
    base = resolve(params.replace(batch_size=1, n_iter=1), folders, max_pixels)  # the seed, drawn once
    start = params.replace(batch_size=1, n_iter=1, seed=params.seed if settings.no_fixed_seeds else base.seed)
    axes = plot_axes(mode, settings, folders)
    nx, ny, nz = (len(axis.values) for axis in axes)
    if nx * ny * nz > MAX_CELLS:
        raise BadRequest("X/Y/Z plot", f"{nx}x{ny}x{nz} = {nx * ny * nz} cells, more than {MAX_CELLS}")
    prepared: dict[tuple[int, int], PreparedInputs] = {}
    cells, workflows = [], []
    for position in cell_order(axes):
        cell = resolve(_cell_params(start, axes, position, settings), folders, max_pixels)
        if mode == "txt2img":
            made, cell_warnings = with_prompt_loras(cell, folders, lambda p: [txt2img_workflow(p)])
            overlay = None
        else:
            size = (cell.width, cell.height)
            if size not in prepared:
                prepared[size] = prepare_img2img(folders, cell, prefix)
            inputs = prepared[size]
            made, cell_warnings = with_prompt_loras(cell, folders, lambda p: [img2img_workflow(
                p, inputs.init_name, inputs.mask_name, resized=inputs.resized)])
            overlay = inputs.overlay
        warnings += [w for w in cell_warnings if w not in warnings]
        cells.append(Cell(position, cell, overlay=overlay))
        workflows.append(made[0])
    if sum(c.params.width * c.params.height for c in cells) > MAX_GRID_PIXELS:
        raise BadRequest("X/Y/Z plot", f"the grid would be over {MAX_GRID_PIXELS // 1_000_000} megapixels")
    merged, savers = merge_workflows(workflows)
    for cell, saver in zip(cells, savers):
        cell.saver = saver
    stored = [name for inputs in prepared.values() for name in inputs.stored]
    inputs = PreparedInputs(stored[0], None, True, None, stored) if stored else None
    plan = XyzPlan(base, [merged], inputs, [], warnings, axes=axes, cells=cells, settings=settings)
    plan.seeds = [plan.image_seeds()]
    return plan


def merge_workflows(workflows: list[dict]) -> tuple[dict, list[str]]:
    """One workflow of every cell's workflow, nodes renumbered "1", "2"... in cell order; a node whose
    class and inputs (its links by what they point to) equal an earlier one's is that node. Returns it
    and each cell's output node id."""
    merged: dict[str, dict] = {}
    known: dict[str, str] = {}
    savers = []
    for workflow in workflows:
        ids: dict[str, str] = {}
        for node_id in _topological(workflow):
            node = workflow[node_id]
            inputs = {name: [ids[value[0]], value[1]] if _is_link(value) else value
                      for name, value in node["inputs"].items()}
            copy = {"class_type": node["class_type"], "inputs": inputs}
            key = json.dumps(copy, sort_keys=True)
            if key not in known:
                known[key] = str(len(merged) + 1)
                merged[known[key]] = {**copy, **({"_meta": node["_meta"]} if "_meta" in node else {})}
            ids[node_id] = known[key]
        savers.append(ids[output_nodes(workflow)[0]])
    return merged, savers


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _topological(workflow: dict) -> list[str]:
    """The workflow's node ids, each after the nodes it links from."""
    order: list[str] = []
    placed: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in placed:
            return
        placed.add(node_id)
        for value in workflow[node_id]["inputs"].values():
            if _is_link(value):
                visit(value[0])
        order.append(node_id)

    for node_id in workflow:
        visit(node_id)
    return order
