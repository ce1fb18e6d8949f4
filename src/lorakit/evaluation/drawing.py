"""Composing cell images into one labelled grid PNG, like A1111's X/Y/Z plot, and a strip of
pictures side by side (training previews).

A caption on top (the prompt, so a grid explains itself when shared), column labels above, row
labels on the left, the X and Y axis titles outside them, and for a Z axis one such grid per
value, side by side, each with its title. Labels wrap (by word, or by character for CJK text,
which has no spaces) to fit their cell.
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
    caption_box: tuple[int, int, int, int] | None = None


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


def _caption_block(caption: str, font, width: int, pad: int) -> tuple[list[str], int]:
    """The caption's lines across `width`, and the height they take (0 without a caption)."""
    lines = wrap(caption, font, width - 2 * pad) if caption else []
    return lines, (_line_height(font) * len(lines) + 2 * pad if lines else 0)


def _draw_caption(draw, layout: GridLayout, lines: list[str], height: int, font, pad: int) -> None:
    if lines:
        layout.caption_box = (pad, 0, layout.size[0] - pad, height)
        _draw_lines(draw, layout.caption_box, lines, font, INK, align="left")


def draw_grid(
    cells: list[list[list[Image.Image]]],
    x_labels: list[str],
    y_labels: list[str],
    z_labels: list[str] | None = None,
    x_title: str = "",
    y_title: str = "",
    z_title: str = "",
    font_size: int | None = None,
    caption: str = "",
) -> tuple[Image.Image, GridLayout]:
    """cells[z][y][x] -> one image. All cells have the size of the first one; cells smaller than
    MIN_CELL are enlarged by a whole factor (nearest pixel), so labels fit and pixels stay sharp.
    `caption` (the prompt) is written across the top."""
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
    block_w = left + nx * cell_w
    width = nz * block_w + (nz - 1) * gap
    caption_lines, caption_h = _caption_block(caption, font, width, pad)
    top = caption_h + z_title_h + x_title_h + label_h
    height = top + ny * cell_h
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    layout = GridLayout(size=(width, height), cell_size=(cell_w, cell_h), font_size=size)
    _draw_caption(draw, layout, caption_lines, caption_h, font, pad)

    for z in range(nz):
        x0 = z * (block_w + gap)
        if z_title_h:
            label = f"{z_title}: {z_labels[z]}" if z_title else z_labels[z]
            _draw_lines(draw, (x0, caption_h, x0 + block_w, caption_h + z_title_h), [label], title_font, INK)
        if x_title_h:
            box = (x0 + left, caption_h + z_title_h, x0 + block_w, caption_h + z_title_h + x_title_h)
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


def draw_strip(
    images: list[Image.Image], labels: list[str], caption: str = "", font_size: int | None = None
) -> tuple[Image.Image, GridLayout]:
    """Pictures side by side, each under its label (its prompt), the caption (what the strip is:
    the run and epoch) on top. Pictures may differ in size; those under MIN_CELL are enlarged by
    one whole factor, as in the grids, so every picture keeps its proportions."""
    scale = max(enlargement(*i.size) for i in images)
    images = [i.resize((i.width * scale, i.height * scale), Image.Resampling.NEAREST) for i in images]
    size = font_size or max(12, (images[0].width + images[0].height) // 25)
    font = label_font(size)
    line, pad = _line_height(font), max(4, size // 3)
    width = sum(i.width for i in images) + pad * (len(images) - 1)
    caption_lines, caption_h = _caption_block(caption, font, width, pad)
    label_lines = [wrap(label, font, image.width - pad) for label, image in zip(labels, images)]
    label_h = line * max((len(lines) for lines in label_lines), default=0) + 2 * pad if any(labels) else 0
    top = caption_h + label_h
    canvas = Image.new("RGB", (width, top + max(i.height for i in images)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    layout = GridLayout(size=canvas.size, cell_size=images[0].size, font_size=size)
    _draw_caption(draw, layout, caption_lines, caption_h, font, pad)
    x = 0
    for index, (image, lines) in enumerate(zip(images, label_lines)):
        if label_h:
            box = (x, caption_h, x + image.width, top)
            _draw_lines(draw, box, lines, font, INK)
            layout.column_label_boxes[(0, index)] = box
        canvas.paste(image.convert("RGB"), (x, top))
        layout.cells[(0, 0, index)] = (x, top)
        x += image.width + pad
    return canvas, layout


def _draw_vertical(canvas: Image.Image, text: str, font, box) -> None:
    """The Y axis title, turned to read bottom to top."""
    left, top, right, bottom = box
    length = bottom - top
    lines = wrap(text, font, max(1, length))[:1]
    strip = Image.new("RGB", (length, right - left), BACKGROUND)
    _draw_lines(ImageDraw.Draw(strip), (0, 0, length, right - left), lines, font, TITLE_INK)
    canvas.paste(strip.rotate(90, expand=True), (left, top))
