"""Document loading into archival memory: extraction, chunking, progress, resume, idempotence."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import HashEmbedder, both_engines

from llmos import Kernel
from llmos.memory.embedders import EmbeddingError
from llmos.memory.loader import LoadProgress, chunk_text
from llmos.memory.readers import LoadError, extract_text, html_to_text, markdown_to_text

engine = both_engines()

PAGES = 200


def page_sentence(n: int) -> str:
    return f"The lighthouse keeper of page {n} counted zebra{n} ships at dawn."


def make_pdf(path: Path, pages: int = PAGES) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    for n in range(1, pages + 1):
        y = 800
        for line in (
            f"Chapter {n}.",
            page_sentence(n),
            "Waves rolled over the harbour while gulls argued about bread.",
            "Nothing else of note happened that day, or so the log says.",
        ):
            c.drawString(72, y, line)
            y -= 16
        c.showPage()
    c.save()


class FlakyEmbedder(HashEmbedder):
    """HashEmbedder that fails on a chosen call, like a backend going away mid-load."""

    name = "test/flaky"

    def __init__(self) -> None:
        self.calls = 0
        self.fail_on: int | None = None

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        if self.fail_on is not None and self.calls == self.fail_on:
            raise EmbeddingError("backend went away")
        return super().embed(texts)


@pytest.fixture
async def loader_kernel(home: Path) -> Kernel:
    from llmos.llm.replay import ScriptedCore, say

    flaky = FlakyEmbedder()
    k = Kernel.open(home, embedders={"test/hash": HashEmbedder(), "test/flaky": flaky})
    k.add_core(ScriptedCore(lambda r: say("ok")), "scripted/policy")
    await k.create_agent("reader", model="scripted/policy", embedder="test/flaky")
    yield k
    await k.close()


def _db_count(kernel: Kernel) -> int:
    image = kernel.image("reader")
    with kernel.db.connect() as conn:
        return kernel.archival.count(conn, image.id)


def test_pdf_lines_join_within_paragraphs(tmp_path: Path) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    pdf = tmp_path / "prose.pdf"
    c = canvas.Canvas(str(pdf), pagesize=A4)
    y = 800.0

    def lines(*texts: str, size: float = 12, x: float = 72) -> None:
        nonlocal y
        c.setFont("Helvetica", size)
        for i, text in enumerate(texts):
            c.drawString(x if i == 0 else 72, y, text)
            y -= size + 2

    lines("A Title", size=18)
    lines("the cat sat", "on the mat. The exam-", "ple was clear and well-", "known to all.")
    y -= 14  # a blank line's gap
    lines("Then a second para-", "graph, which a well-known", "rule keeps apart.")
    lines("An indented first line", x=90)  # the same pitch, but indented after a full stop
    lines("ends the paragraph before.")
    c.showPage()
    y = 800.0
    lines("Page two starts", "a new paragraph.")
    c.save()

    assert extract_text(pdf) == (
        "A Title\n\n"
        "the cat sat on the mat. The example was clear and well-known to all.\n\n"
        "Then a second paragraph, which a well-known rule keeps apart.\n\n"
        "An indented first line ends the paragraph before.\n\n"
        "Page two starts a new paragraph."
    )


async def test_pdf_loads_with_progress_and_is_searchable(loader_kernel: Kernel, tmp_path: Path):
    pdf = tmp_path / "log.pdf"
    make_pdf(pdf)
    assert page_sentence(150) in extract_text(pdf)

    seen: list[LoadProgress] = []
    report = await loader_kernel.load_documents("reader", [pdf], progress=seen.append)
    (f,) = report.files
    assert f.status == "loaded" and f.chunks > 30 and f.added == f.chunks
    assert _db_count(loader_kernel) == f.chunks
    # progress: one call at the start and one per committed batch, ending complete
    assert seen[0].done == 0 and seen[-1].done == seen[-1].total == f.chunks
    assert len(seen) == 1 + -(-f.chunks // 32)
    assert [p.done for p in seen] == sorted(p.done for p in seen)

    found, _ = await loader_kernel.search_archival("reader", "zebra150")
    assert page_sentence(150) in found[0].text
    assert found[0].source is not None and found[0].source.startswith(str(pdf.resolve()) + "#")

    # the same file again adds nothing
    again = await loader_kernel.load_documents("reader", [pdf])
    assert again.files[0].status == "unchanged" and again.added == 0
    assert _db_count(loader_kernel) == f.chunks


async def test_interrupted_load_resumes_with_only_missing_chunks(
    loader_kernel: Kernel, tmp_path: Path
):
    doc = tmp_path / "story.txt"
    doc.write_text("\n\n".join(f"Paragraph {i}. " + "Words flow on. " * 20 for i in range(120)))
    flaky: FlakyEmbedder = loader_kernel.embedder("test/flaky")  # type: ignore[assignment]
    flaky.calls, flaky.fail_on = 0, 3  # two batches commit, the third fails

    with pytest.raises(EmbeddingError):
        await loader_kernel.load_documents("reader", [doc], batch_size=8)
    assert _db_count(loader_kernel) == 16

    flaky.fail_on = None
    report = await loader_kernel.load_documents("reader", [doc], batch_size=8)
    (f,) = report.files
    assert f.status == "resumed" and f.added == f.chunks - 16
    assert _db_count(loader_kernel) == f.chunks
    # every chunk index exactly once
    image = loader_kernel.image("reader")
    with loader_kernel.db.connect() as conn:
        sources = [p.source for p in loader_kernel.archival.list(conn, image.id, 0, 10_000)]
    assert sorted(int(s.rsplit("#", 1)[1]) for s in sources) == list(range(f.chunks))


async def test_changed_file_replaces_its_passages(loader_kernel: Kernel, tmp_path: Path):
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nThe first version mentions apricots.\n")
    await loader_kernel.load_documents("reader", [doc])
    doc.write_text("# Notes\n\nThe second version mentions bananas.\n\nAnd cherries too.\n")
    report = await loader_kernel.load_documents("reader", [doc])
    (f,) = report.files
    assert f.status == "replaced" and f.removed == 1 and f.added == 1
    image = loader_kernel.image("reader")
    with loader_kernel.db.connect() as conn:
        texts = [p.text for p in loader_kernel.archival.list(conn, image.id)]
    assert len(texts) == 1 and "bananas" in texts[0] and "apricots" not in texts[0]
    assert image.archival_count == 1


async def test_unreadable_file_is_reported_not_fatal(loader_kernel: Kernel, tmp_path: Path):
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not really a pdf")
    good = tmp_path / "ok.txt"
    good.write_text("A small but readable file.")
    report = await loader_kernel.load_documents("reader", [bad, good])
    assert [f.status for f in report.files] == ["failed", "loaded"]
    assert report.added == 1


def test_markdown_extraction() -> None:
    md = (
        "# Title\n\nSome **bold** and *italic* text with a [link](http://x.org).\n\n"
        "```python\nprint('code')\n```\n\n![diagram](d.png)\n"
    )
    text = markdown_to_text(md)
    assert "Title" in text and "#" not in text
    assert "Some bold and italic text with a link." in text
    assert "print('code')" in text and "```" not in text and "diagram" in text


def test_markdown_lists_tables_and_entities_lose_their_markup() -> None:
    md = (
        "- item *one*\n- item [two](u)\n\n> quoted `code` &amp; more\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    assert markdown_to_text(md) == "item one\nitem two\n\nquoted code & more\n\na | b\n1 | 2"


def test_unreadable_documents_are_invalid_requests(tmp_path: Path) -> None:
    from llmos.errors import InvalidRequest

    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02")
    with pytest.raises(LoadError) as caught:
        extract_text(binary)
    assert isinstance(caught.value, InvalidRequest) and isinstance(caught.value, ValueError)


def test_html_extraction_drops_script_and_style(tmp_path: Path) -> None:
    html = (
        "<html><head><title>My Page</title><style>p{color:red}</style>"
        "<script>var secret = 1;</script></head><body><h1>Heading</h1>"
        "<p>First   paragraph &amp; more.</p><script>alert('x')</script>"
        "<div>Second<br>line</div></body></html>"
    )
    text = html_to_text(html)
    assert text.splitlines()[0] == "My Page"
    assert "Heading" in text and "First paragraph & more." in text
    assert "secret" not in text and "alert" not in text and "color" not in text
    path = tmp_path / "page.html"
    path.write_text(html)
    assert extract_text(path) == text


def test_chunks_respect_size_and_overlap() -> None:
    sentences = [f"Sentence number {i} says something." for i in range(200)]
    text = " ".join(sentences[:100]) + "\n\n" + " ".join(sentences[100:])
    chunks = chunk_text(text, size=300, overlap=60)
    assert all(len(c) <= 300 for c in chunks)
    for a, b in itertools.pairwise(chunks):
        # each chunk starts with a piece of the previous one's end
        assert b[:20] in a
    # every sentence survives somewhere, whole
    joined = "\n".join(chunks)
    assert all(s in joined for s in sentences)
    assert chunk_text("") == []
    with pytest.raises(ValueError):
        chunk_text("x", size=100, overlap=60)


def test_cli_load_reports_and_is_idempotent(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from typer.testing import CliRunner

    from llmos.cli.main import app
    from llmos.llm.replay import ScriptedCore, say
    from llmos.memory import embedders

    async def setup() -> None:
        async with Kernel.open(home, embedders={"test/hash": HashEmbedder()}) as k:
            k.add_core(ScriptedCore(lambda r: say("ok")), "scripted/policy")
            await k.create_agent("cli-reader", model="scripted/policy", embedder="test/hash")

    asyncio.run(setup())
    monkeypatch.setattr(embedders, "make_embedder", lambda spec: HashEmbedder())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nAlpha facts about otters.\n")
    (docs / "b.html").write_text("<p>Beta facts about <b>beavers</b>.</p>")
    (docs / "skip.bin").write_bytes(b"\x00\x01")  # not a loadable suffix: ignored

    runner = CliRunner()
    args = ["--home", str(home), "load", "cli-reader", str(docs), "--json"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert '"added": 2' in first.stdout
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and '"added": 0' in second.stdout
    assert second.stdout.count('"unchanged"') == 2
    missing = runner.invoke(app, ["--home", str(home), "load", "cli-reader", "/no/such"])
    assert missing.exit_code == 1
