"""Composing cell images into one labelled grid PNG, like A1111's X/Y/Z plot.

Column labels above, row labels on the left, the X and Y axis titles outside them, and for a Z
axis one such grid per value, side by side, each with its title. Labels wrap (by word, or by
character for CJK text, which has no spaces) to fit their cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from .fonts import label_font

BACKGROUND = (255, 255, 255)
INK = (0, 0, 0)
TITLE_INK = (60, 60, 60)
MIN_CELL = 128  # smaller pictures (tiny test models) are enlarged, pixel for pixel, to at least this


@dataclass
class GridLayout:
    """Where everything went: tests and callers find each cell without redoing the arithmetic."""

    size: tuple[int, int]
    cell_size: tuple[int, int]
    cells: dict[tuple[int, int, int], tuple[int, int]] = field(default_factory=dict)  # (z, y, x) -> left, top
    column_label_boxes: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)
    row_label_boxes: dict[tuple[int, int], tuple[int, int, int, int]] = field(default_factory=dict)
    font_size: int = 0


def enlargement(width: int, height: int) -> int:
    """The whole factor that brings a picture's shorter side to at least MIN_CELL (1 if it is)."""
    side = min(width, height)
    return -(-MIN_CELL // side) if side < MIN_CELL else 1


def _text_width(font, text: str) -> int:
    if not text:
        return 0
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def wrap(text: str, font, width: int) -> list[str]:
    """Lines of `text` no wider than `width` where possible: break at spaces, else anywhere."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if _text_width(font, candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:  # a word (or CJK run) longer than the width: break between characters
                if line and _text_width(font, line + ch) > width:
                    lines.append(line)
                    line = ""
                line += ch
        lines.append(line)
    return lines or [""]


def _line_height(font) -> int:
    _, top, _, bottom = font.getbbox("Ag中")
    return int(bottom - top) + max(2, int(getattr(font, "size", 10)) // 5)


def _draw_lines(draw, box, lines, font, fill, align="center"):
    left, top, right, bottom = box
    height = _line_height(font)
    y = top + max(0, ((bottom - top) - height * len(lines)) // 2)
    for line in lines:
        w = _text_width(font, line)
        x = left + ((right - left) - w) // 2 if align == "center" else left
        draw.text((x, y), line, font=font, fill=fill)
        y += height


def draw_grid(
    cells: list[list[list[Image.Image]]],
    x_labels: list[str],
    y_labels: list[str],
    z_labels: list[str] | None = None,
    x_title: str = "",
    y_title: str = "",
    z_title: str = "",
    font_size: int | None = None,
) -> tuple[Image.Image, GridLayout]:
    """cells[z][y][x] -> one image. All cells have the size of the first one; cells smaller than
    MIN_CELL are enlarged by a whole factor (nearest pixel), so labels fit and pixels stay sharp."""
    cell_w, cell_h = cells[0][0][0].size
    scale = enlargement(cell_w, cell_h)
    cell_w, cell_h = cell_w * scale, cell_h * scale
    nz, ny, nx = len(cells), len(cells[0]), len(cells[0][0])
    size = font_size or max(12, (cell_w + cell_h) // 25)
    font = label_font(size)
    title_font = label_font(max(12, size * 9 // 10))
    line = _line_height(font)
    pad = max(4, size // 3)

    column_lines = [wrap(label, font, cell_w - pad) for label in x_labels]
    label_h = (line * max((len(c) for c in column_lines), default=0) + 2 * pad) if any(x_labels) else 0
    row_w = max(cell_w, 8 * size) - pad
    row_lines = [wrap(label, font, row_w) for label in y_labels]
    widest = max((_text_width(font, t) for lines in row_lines for t in lines), default=0)
    label_w = widest + 2 * pad if any(y_labels) else 0
    x_title_h = _line_height(title_font) + pad if x_title else 0
    y_title_w = _line_height(title_font) + pad if y_title else 0
    z_title_h = _line_height(title_font) + 2 * pad if z_labels and any(z_labels) else 0
    gap = 2 * pad if nz > 1 else 0

    left = y_title_w + label_w
    top = z_title_h + x_title_h + label_h
    block_w = left + nx * cell_w
    width = nz * block_w + (nz - 1) * gap
    height = top + ny * cell_h
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    layout = GridLayout(size=(width, height), cell_size=(cell_w, cell_h), font_size=size)

    for z in range(nz):
        x0 = z * (block_w + gap)
        if z_title_h:
            label = f"{z_title}: {z_labels[z]}" if z_title else z_labels[z]
            _draw_lines(draw, (x0, 0, x0 + block_w, z_title_h), [label], title_font, INK)
        if x_title_h:
            box = (x0 + left, z_title_h, x0 + block_w, z_title_h + x_title_h)
            _draw_lines(draw, box, [x_title], title_font, TITLE_INK)
        if y_title_w:
            _draw_vertical(canvas, y_title, title_font, (x0, top, x0 + y_title_w, height))
        for x, lines in enumerate(column_lines):
            box = (x0 + left + x * cell_w, top - label_h, x0 + left + (x + 1) * cell_w, top)
            if label_h:
                _draw_lines(draw, box, lines, font, INK)
                layout.column_label_boxes[(z, x)] = box
        for y, lines in enumerate(row_lines):
            box = (x0 + y_title_w + pad, top + y * cell_h, x0 + left - pad, top + (y + 1) * cell_h)
            if label_w:
                _draw_lines(draw, box, lines, font, INK)
                layout.row_label_boxes[(z, y)] = box
            for x in range(nx):
                position = (x0 + left + x * cell_w, top + y * cell_h)
                image = cells[z][y][x]
                if image.size != (cell_w, cell_h):
                    image = image.resize((cell_w, cell_h), Image.Resampling.NEAREST)
                canvas.paste(image.convert("RGB"), position)
                layout.cells[(z, y, x)] = position
    return canvas, layout


def _draw_vertical(canvas: Image.Image, text: str, font, box) -> None:
    """The Y axis title, turned to read bottom to top."""
    left, top, right, bottom = box
    length = bottom - top
    lines = wrap(text, font, max(1, length))[:1]
    strip = Image.new("RGB", (length, right - left), BACKGROUND)
    _draw_lines(ImageDraw.Draw(strip), (0, 0, length, right - left), lines, font, TITLE_INK)
    canvas.paste(strip.rotate(90, expand=True), (left, top))
