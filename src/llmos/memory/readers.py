"""Document readers for `llmos load`: the text of a plain-text, Markdown, HTML or PDF file.

`extract_text(path)` picks the reader by suffix (PDF also by its magic
bytes). Markdown is parsed with markdown-it-py (CommonMark, plus tables and
strikethrough) and its text taken: links and images keep their text, headings
their words, code blocks their code. HTML keeps its visible text, with the
title first.

PDF gives each page's text layer (pypdf) as paragraphs: a PDF has hard line
breaks wherever its lines wrapped, so lines are joined within a paragraph and
paragraphs found from where each line sits (pypdf's text visitor): a gap
wider than the page's usual line pitch, a jump back up (a new column), a
change of font size (a heading) or an indented first line starts a new one.
A word hyphenated at a line end is joined ("exam-" "ple" -> "example"),
unless the document spells it with the hyphen elsewhere ("well-known").

Left out: OCR of scanned PDFs (pages without a text layer give no text),
DOCX/EPUB and URLs.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from llmos.errors import InvalidRequest

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.token import Token

TEXT_SUFFIXES = {".txt", ".text", ".rst", ".log", ".csv", ".json", ".py", ""}
MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdown"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
PDF_SUFFIXES = {".pdf"}
#: what a directory given to `load` is searched for
LOADABLE = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES


class LoadError(InvalidRequest):
    """A document could not be read or has no text."""


class _HTMLText(HTMLParser):
    """Visible text of an HTML page: script/style/head metadata dropped, blocks on own lines."""

    SKIP: ClassVar[set[str]] = {"script", "style", "noscript", "template", "head", "svg"}
    # elements after which text starts a new paragraph
    BLOCK: ClassVar[set[str]] = {
        "p", "div", "section", "article", "header", "footer", "main", "aside", "nav",
        "h1", "h2", "h3", "h4", "h5", "h6", "li", "ul", "ol", "table", "tr", "blockquote",
        "pre", "br", "hr", "dd", "dt", "figure", "figcaption", "title",
    }  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._title: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self.SKIP:
            self._skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self.SKIP and self._skip:
            self._skip -= 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            # the title is inside <head>, which is otherwise skipped
            self._title.append(data)
        elif not self._skip:
            self.parts.append(data)

    def text(self) -> str:
        body = "".join(self.parts)
        title = " ".join("".join(self._title).split())
        # collapse runs of spaces inside lines but keep paragraph breaks
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body)]
        out = [p for p in paragraphs if p]
        if title and (not out or out[0] != title):
            out.insert(0, title)
        return "\n\n".join(out)


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return parser.text()


@cache
def _markdown() -> MarkdownIt:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"])


def _inline_text(children: Sequence[Token]) -> str:
    parts: list[str] = []
    for child in children:
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif child.type == "image":  # its children are the alt text
            parts.append(_inline_text(child.children or []))
        # html_inline is a tag, and link_open/em_open/... are markup: no text
    return "".join(parts)


def markdown_to_text(md: str) -> str:
    """Markdown with its markup removed: links and images keep their text, headings
    their words; code blocks stay (their content is text worth finding)."""
    # Blocks are paragraphs of the result, except that the items of a tight
    # list and the rows of a table stay together, one per line.
    blocks: list[str] = []
    glued = False  # the last block may take the next tight item or row
    tight = False
    row: list[str] | None = None
    for token in _markdown().parse(md):
        kind = token.type
        if kind == "paragraph_open":
            tight = token.hidden  # markdown-it hides the paragraphs of tight list items
            continue
        if kind == "tr_open":
            row = []
            continue
        if kind == "tr_close" and row is not None:
            text, glue, row = " | ".join(row), True, None
        elif kind == "inline":
            text, glue = _inline_text(token.children or []), tight
            if row is not None:
                row.append(text.strip())
                continue
        elif kind in ("fence", "code_block"):
            text, glue = token.content.rstrip("\n"), False
        elif kind == "html_block":
            text, glue = html_to_text(token.content), False
        else:
            if kind == "paragraph_close":
                tight = False
            continue
        if not text.strip():
            continue
        if glue and glued:
            blocks[-1] = f"{blocks[-1]}\n{text}"
        else:
            blocks.append(text)
        glued = glue
    return "\n\n".join(blocks)


@dataclass(slots=True)
class _Line:
    text: str
    x: float
    y: float
    size: float


def _page_lines(page: Any) -> list[_Line]:
    """The page's text lines in content order, each with where it starts and its font size."""
    lines: list[_Line] = []
    current: _Line | None = None

    def visit(text: str, cm: list[float], tm: list[float], _font: Any, size: float) -> None:
        nonlocal current
        for i, part in enumerate(text.split("\n")):
            if i:  # a line ended
                if current is not None and current.text.strip():
                    lines.append(current)
                current = None
            if not part:
                continue
            if current is None:
                x = tm[4] * cm[0] + tm[5] * cm[2] + cm[4]
                y = tm[4] * cm[1] + tm[5] * cm[3] + cm[5]
                scale = abs(tm[3] * cm[3]) or 1.0
                current = _Line("", x, y, size * scale)
            current.text += part

    page.extract_text(visitor_text=visit)
    if current is not None and current.text.strip():
        lines.append(current)
    return lines


def _paragraphs(lines: list[_Line]) -> list[list[str]]:
    """Lines grouped into paragraphs by the gaps, jumps, size changes and indents between them."""
    pitches = sorted(a.y - b.y for a, b in itertools.pairwise(lines) if a.y - b.y > 0)
    pitch = pitches[len(pitches) // 2] if pitches else 0.0
    out: list[list[str]] = []
    for i, line in enumerate(lines):
        text = " ".join(line.text.split())
        prev = lines[i - 1] if i else None
        starts = (
            prev is None
            or (
                prev.y - line.y > 1.4 * pitch + 0.5  # a blank line's worth of gap
                or line.y > prev.y + 0.5  # back up the page: a new column or box
                or abs(line.size - prev.size) > 0.5  # a heading, a footnote
                or (line.x - prev.x > line.size and prev.text.rstrip()[-1:] in ".!?:")
            )
        )
        if starts:
            out.append([text])
        else:
            out[-1].append(text)
    return out


_HYPHENATED = re.compile(r"(\w+)-$")
_FIRST_WORD = re.compile(r"^([a-z]\w*)")
_COMPOUND = re.compile(r"\b\w+-\w+\b")


def _join(lines: list[str], compounds: set[str]) -> str:
    text = lines[0]
    for line in lines[1:]:
        end, start = _HYPHENATED.search(text), _FIRST_WORD.match(line)
        if end and start:
            whole = f"{end.group(1)}-{start.group(1)}".lower()
            # a word broken at the line end, unless the document writes it hyphenated
            text = text if whole in compounds else text[:-1]
            text += line
        else:
            text += " " + line
    return text


def pdf_to_text(path: Path) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        pages = [_paragraphs(_page_lines(page)) for page in reader.pages]
    except (PdfReadError, ValueError, OSError) as e:
        raise LoadError(f"{path}: not a readable PDF ({e})") from None
    # hyphenated words written within a line: these keep their hyphen at a line end
    compounds = {
        w.lower()
        for page in pages
        for para in page
        for line in para
        for w in _COMPOUND.findall(line[:-1] if line.endswith("-") else line)
    }
    return "\n\n".join(_join(para, compounds) for page in pages for para in page)


def extract_text(path: Path, data: bytes | None = None) -> str:
    """The text of a document, chosen by its suffix (PDF also by its magic bytes)."""
    data = path.read_bytes() if data is None else data
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES or data.startswith(b"%PDF-"):
        return pdf_to_text(path)
    if b"\x00" in data[:8192]:
        raise LoadError(f"{path}: looks binary; llmos loads text, Markdown, HTML and PDF")
    text = data.decode("utf-8", errors="replace")
    if suffix in HTML_SUFFIXES:
        return html_to_text(text)
    if suffix in MARKDOWN_SUFFIXES:
        return markdown_to_text(text)
    return text
