"""The X/Y/Z plot's grid pictures (Pillow): the cells in rows and columns with the column labels above and
the row labels to the left, as A1111's image_grid + draw_grid_annotations lay them out; and a grid of
the Z grids side by side, each titled with its Z label."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = "white"
TEXT = "black"
MIN_FONT = 14  # px: labels stay readable under small cells


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """`text` in lines no wider than `width` px, broken at spaces (a long word stays whole)."""
    lines: list[str] = []
    for paragraph in str(text).split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and draw.textlength(candidate, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines if any(lines) else []


def _block(draw, lines: list[str], font, spacing: int) -> int:
    """The height of `lines` of text."""
    if not lines:
        return 0
    ascent, descent = font.getmetrics()
    return len(lines) * (ascent + descent) + (len(lines) - 1) * spacing


def _draw_lines(draw, lines: list[str], font, spacing: int, centre_x: float, top: float) -> None:
    ascent, descent = font.getmetrics()
    for index, line in enumerate(lines):
        y = top + index * (ascent + descent + spacing)
        draw.text((centre_x, y), line, font=font, fill=TEXT, anchor="ma")


def image_grid(images: list[Image.Image], rows: int, margin: int = 0) -> Image.Image:
    """`images` row by row, `rows` rows, each cell the size of the largest image, `margin` px apart."""
    cols = math.ceil(len(images) / rows)
    width = max(image.width for image in images)
    height = max(image.height for image in images)
    grid = Image.new("RGB", (cols * width + (cols - 1) * margin, rows * height + (rows - 1) * margin), BACKGROUND)
    for index, image in enumerate(images):
        col, row = index % cols, index // cols
        grid.paste(image.convert("RGB"), (col * (width + margin), row * (height + margin)))
    return grid


def annotated_grid(images: list[Image.Image], rows: int, column_labels: list[str], row_labels: list[str],
                   margin: int = 0) -> Image.Image:
    """The cells as a grid (`rows` rows, len(column_labels) columns) with the labels drawn around it;
    empty label lists (an axis of "Nothing") take no room."""
    grid = image_grid(images, rows, margin)
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    return annotate(grid, cell_w, cell_h, column_labels, row_labels, margin)


def annotate(grid: Image.Image, cell_w: int, cell_h: int, column_labels: list[str], row_labels: list[str],
             margin: int = 0) -> Image.Image:
    """`grid` with a band of column labels above and of row labels to the left (A1111's
    draw_grid_annotations, with a font that stays readable for small cells)."""
    size = max(MIN_FONT, (cell_w + cell_h) // 25)
    font, spacing = _font(size), size // 2
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    columns = [_wrap(scratch, label, font, cell_w) for label in column_labels]
    has_rows = any(label for label in row_labels)
    row_width = max(cell_w * 3 // 4, size * 6) if has_rows else 0
    rows = [_wrap(scratch, label, font, row_width - spacing * 2) for label in row_labels]
    top = max((_block(scratch, lines, font, spacing) for lines in columns), default=0)
    pad_top = top + spacing * 2 if top else 0
    left_heights = [_block(scratch, lines, font, spacing) for lines in rows]
    out = Image.new("RGB", (grid.width + row_width, grid.height + pad_top), BACKGROUND)
    out.paste(grid, (row_width, pad_top))
    draw = ImageDraw.Draw(out)
    for index, lines in enumerate(columns):
        x = row_width + index * (cell_w + margin) + cell_w / 2
        _draw_lines(draw, lines, font, spacing, x, spacing)
    for index, lines in enumerate(rows):
        y = pad_top + index * (cell_h + margin) + (cell_h - left_heights[index]) / 2
        _draw_lines(draw, lines, font, spacing, row_width / 2, y)
    return out


def grid_of_grids(grids: list[Image.Image], titles: list[str], margin: int = 0) -> Image.Image:
    """The Z axis: each value's grid side by side, its label above it."""
    cell_w = max(grid.width for grid in grids)
    cell_h = max(grid.height for grid in grids)
    return annotate(image_grid(grids, 1, margin), cell_w, cell_h, titles, [""] * len(grids), margin)
