"""Prompt styles as AUTOMATIC1111 keeps them: a styles.csv in the data folder with the columns name,
prompt, negative_prompt. A style's text containing `{prompt}` takes the user's prompt in its place;
otherwise it is appended after ", " (nothing is added for an empty text). The tabs' Styles dropdown and
the A1111 API's `styles` and /prompt-styles read the same file. Torch-free."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..nodes.folders import write_atomically

STYLES_FILE = "styles.csv"
PLACEHOLDER = "{prompt}"


class StylesError(ValueError):
    """A styles file that can't be read or a style that can't be saved; the message names it."""


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str = ""
    negative_prompt: str = ""


COLUMNS = [f.name for f in fields(PromptStyle)]


def merge_prompt(style_text: str, prompt: str) -> str:
    """One style's text applied to a prompt, by A1111's rule."""
    if PLACEHOLDER in style_text:
        return style_text.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style_text.strip()) if part)


def apply_styles(prompt: str, negative_prompt: str, styles: Iterable[PromptStyle]) -> tuple[str, str]:
    """(prompt, negative prompt) with `styles` applied in order."""
    for style in styles:
        prompt = merge_prompt(style.prompt, prompt)
        negative_prompt = merge_prompt(style.negative_prompt, negative_prompt)
    return prompt, negative_prompt


def read_styles(path: Path) -> dict[str, PromptStyle]:
    """The styles of a styles.csv by name, in file order (a later row of the same name wins, as in
    A1111); none when the file doesn't exist. A1111's old two-column files (name, text) are read too."""
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StylesError(f"styles file {path}: can't be read as UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), skipinitialspace=True)
    try:
        header = reader.fieldnames or []
        text_column = "prompt" if "prompt" in header else "text"
        if "name" not in header or text_column not in header:
            raise StylesError(f"styles file {path}: the first line must name the columns "
                              f"{', '.join(COLUMNS)} (it has {', '.join(header) or 'nothing'})")
        styles: dict[str, PromptStyle] = {}
        for row in reader:
            if None in row:  # more fields than columns: most often an unquoted comma
                raise StylesError(f"styles file {path}, line {reader.line_num}: more fields than the "
                                  f"{len(header)} columns; quote a text containing commas")
            name = (row["name"] or "").strip()
            if not name:
                continue
            styles[name] = PromptStyle(name, row[text_column] or "", row.get("negative_prompt") or "")
    except csv.Error as exc:
        raise StylesError(f"styles file {path}, line {reader.line_num}: {exc}") from None
    return styles


def write_styles(path: Path, styles: Iterable[PromptStyle]) -> None:
    """Write a styles.csv as A1111 does (a header row, minimal quoting, UTF-8 with a BOM), atomically."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(asdict(style) for style in styles)
    write_atomically(path, out.getvalue().encode("utf-8-sig"))


def save_style(path: Path, style: PromptStyle, replace: bool = False) -> None:
    """Add `style` to the file (created if needed); a style of the same name is replaced only when
    `replace`, else StylesError."""
    name = style.name.strip()
    if not name:
        raise StylesError("style name: give the style a name")
    styles = read_styles(path)
    if name in styles and not replace:
        raise StylesError(f"style name: a style named {name!r} already exists in {path}")
    styles[name] = PromptStyle(name, style.prompt, style.negative_prompt)
    write_styles(path, styles.values())


@dataclass
class StyleLibrary:
    """The styles a server offers: its own file (where styles are saved) first, then others read only
    (e.g. an A1111 install's), the first of a name winning."""
    path: Path
    others: tuple[Path, ...] = ()

    def styles(self) -> dict[str, PromptStyle]:
        merged: dict[str, PromptStyle] = {}
        for path in (self.path, *self.others):
            for name, style in read_styles(path).items():
                merged.setdefault(name, style)
        return merged

    def names(self) -> list[str]:
        return list(self.styles())

    def apply(self, prompt: str, negative_prompt: str, names: Iterable[str]) -> tuple[str, str, list[str]]:
        """(prompt, negative prompt, names not found) with the named styles applied in the given order;
        unknown names are left out, as A1111 does."""
        names = [name for name in names or () if name]
        if not names:
            return prompt, negative_prompt, []
        known = self.styles()
        prompt, negative_prompt = apply_styles(prompt, negative_prompt, (known[n] for n in names if n in known))
        return prompt, negative_prompt, [n for n in names if n not in known]

    def save(self, style: PromptStyle, replace: bool = False) -> None:
        save_style(self.path, style, replace)


def library(data_dir: Path, install_dirs: Iterable[Path] = ()) -> StyleLibrary:
    """The server's styles: data_dir/styles.csv, then the styles.csv at the root of the installs that
    extra_model_paths points at (an A1111 install keeps its styles there)."""
    return StyleLibrary(Path(data_dir) / STYLES_FILE, tuple(Path(d) / STYLES_FILE for d in install_dirs))
