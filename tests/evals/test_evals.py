"""`llmos eval` on a scripted oracle: every task scores 100% through the agent's memory,
the no-memory baseline scores nothing on evicted facts, runs resume, bad files are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmos import Kernel
from llmos.evals import make_task
from llmos.evals.datafile import EvalDataError
from llmos.evals.harness import Settings
from llmos.evals.runner import EvalStateMismatch, run_eval, state_path
from llmos.llm.replay import ScriptedCore
from tests.evals.oracle import oracle

DATA = Path(__file__).parent / "data"
MODEL = "scripted/oracle"


@pytest.fixture
def settings(kernel: Kernel) -> Settings:
    kernel.add_core(ScriptedCore(oracle, name=MODEL, context_window=2048), model=MODEL)
    return Settings(model=MODEL, context_window=2048, embedder="test/hash")


@pytest.mark.parametrize(
    ("task", "file", "metric"),
    [
        ("nested-kv", None, "accuracy"),
        ("dmr", None, "accuracy"),
        ("locomo", DATA / "locomo_small.json", "f1"),
        ("longmemeval", DATA / "longmemeval_small.json", "accuracy"),
    ],
)
async def test_the_oracle_scores_full_marks_through_memory(
    kernel: Kernel, settings: Settings, tmp_path: Path, task: str, file: Path | None, metric: str
) -> None:
    t = make_task(task, file, size=5)
    report = await run_eval(kernel, t, settings, json_path=tmp_path / "r.json", baseline=True)
    memory = report["summary"]["memory"]
    assert memory["metrics"][metric] == 1.0, [
        (r["reply"], r["answer"], r["calls"]) for r in report["items"] if r["mode"] == "memory"
    ]
    # the facts came back through the memory functions, not from the window
    calls = {c for r in report["items"] if r["mode"] == "memory" for c in r["calls"]}
    assert calls & {"archival_memory_search", "conversation_search"}
    evicted = report["summary"]["baseline"].get("evicted")
    if task in ("nested-kv", "dmr"):
        assert evicted and evicted["n"] >= 3 and evicted[metric] == 0.0, evicted
    assert json.loads((tmp_path / "r.json").read_text())["summary"] == report["summary"]
    assert not kernel.list_agents()  # every agent made for an item was deleted


async def test_dmr_facts_have_left_the_agents_window(kernel: Kernel, settings: Settings) -> None:
    from llmos.evals.harness import ask_agent

    item = make_task("dmr", size=1).items()[0]
    core = kernel.core(MODEL)
    seen: list[str] = []
    core.policy = lambda req: (
        seen.append(json.dumps([m.content for m in req.messages])),  # type: ignore[attr-defined]
        oracle(req),
    )[1]
    got = await ask_agent(kernel, settings, item)
    assert got["reply"] == item.answer
    # the first request (before any search) did not hold the fact
    assert f"is {item.answer}" not in seen[0]


async def test_the_judge_scores_dmr(kernel: Kernel, settings: Settings, tmp_path: Path) -> None:
    judge = ScriptedCore(oracle, name="scripted/judge")
    report = await run_eval(
        kernel, make_task("dmr", size=2), settings, json_path=tmp_path / "j.json", judge=judge
    )
    assert report["summary"]["memory"]["metrics"]["accuracy"] == 1.0
    assert len(judge.requests) == 2 and "Reference answer" in judge.requests[0].messages[0].content


async def test_a_rerun_skips_done_items(kernel: Kernel, settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    core = kernel.core(MODEL)
    await run_eval(kernel, make_task("nested-kv", size=3), settings, json_path=path)
    asked = len(core.requests)  # type: ignore[attr-defined]
    lines = state_path(path).read_text().splitlines()
    assert len(lines) == 1 + 3  # the header and one line per item
    # an interrupted run: drop the last item (and a torn line) from the state file
    state_path(path).write_text("\n".join(lines[:-1]) + '\n{"mode": "mem')
    report = await run_eval(kernel, make_task("nested-kv", size=3), settings, json_path=path)
    assert report["summary"]["memory"]["n"] == 3
    redone = len(core.requests) - asked  # type: ignore[attr-defined]
    assert 0 < redone <= asked // 2  # only the one missing item ran again
    before = len(core.requests)  # type: ignore[attr-defined]
    await run_eval(kernel, make_task("nested-kv", size=3), settings, json_path=path)
    assert len(core.requests) == before  # type: ignore[attr-defined]


async def test_a_rerun_with_other_settings_is_refused(
    kernel: Kernel, settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "r.json"
    await run_eval(kernel, make_task("nested-kv", size=1), settings, json_path=path)
    with pytest.raises(EvalStateMismatch, match="another run"):
        await run_eval(kernel, make_task("nested-kv", size=1, seed=7), settings, json_path=path)


async def test_archival_reports_recall_and_mrr(
    kernel: Kernel, settings: Settings, tmp_path: Path
) -> None:
    report = await run_eval(kernel, make_task("archival"), settings, json_path=tmp_path / "a.json")
    s = report["summary"]["retrieval"]
    assert s["n"] == 20
    assert 0.0 < s["metrics"]["recall@5"] <= 1.0 and 0.0 < s["metrics"]["mrr"] <= 1.0
    pets = next(r for r in report["items"] if r["query"] == "household pets and animals")
    assert pets["relevant"] == [0, 1, 2, 3, 4] and len(pets["top5"]) == 5


@pytest.mark.parametrize(
    ("task", "content", "message"),
    [
        ("locomo", "{not json", "not a LoCoMo file (not valid JSON"),
        ("locomo", '{"a": 1}', "expected a list of samples"),
        ("locomo", '[{"qa": []}]', "sample 0 has no 'conversation'"),
        ("locomo", '[{"conversation": {"speaker_a": "A"}, "qa": []}]', "has no session_N"),
        ("longmemeval", '[{"question_id": "x"}]', "instance 0 has no 'question'"),
        ("longmemeval", DATA.joinpath("locomo_small.json").read_text(), "has no 'question_id'"),
        ("longmemeval", "[]", "no LongMemEval instances"),
    ],
)
def test_bad_data_files_get_a_clear_error(
    tmp_path: Path, task: str, content: str, message: str
) -> None:
    path = tmp_path / "data.json"
    path.write_text(content)
    with pytest.raises(EvalDataError, match=message.replace("(", r"\(")):
        make_task(task, path)


def test_the_cli_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from llmos.cli.main import app

    runner = CliRunner()
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    for args, message in [
        (["eval", "locomo", str(bad)], "not LoCoMo data"),
        (["eval", "locomo", str(tmp_path / "missing.json")], "no such file"),
        (["eval", "locomo"], "reads a data file"),
        (["eval", "nope"], "unknown task 'nope'"),
        (["eval", "archival", "--baseline"], "has no baseline"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "error: " in result.output and message in result.output, result.output
        assert "Traceback" not in result.output
    help_text = runner.invoke(app, ["eval", "--help"]).output
    assert "nested-kv" in help_text and "--baseline" in help_text and "resume" in help_text


async def test_auto_memory_mode_pages_the_fact_in(
    kernel: Kernel, settings: Settings, tmp_path: Path
) -> None:
    settings.memory_mode = "auto"
    task = make_task("dmr", size=3)
    report = await run_eval(kernel, task, settings, json_path=tmp_path / "a.json")
    assert report["run"]["memory_mode"] == "auto"
    memory = [r for r in report["items"] if r["mode"] == "memory"]
    assert all(r["calls"] == ["send_message"] for r in memory)  # no search functions offered
    assert report["summary"]["memory"]["metrics"]["accuracy"] == 1.0, [r["reply"] for r in memory]


def test_only_the_cli_imports_the_evals() -> None:
    """evals/ sits above the kernel, beside the faces: nothing below may import it."""
    from tests.test_layers import imports

    bad = [
        f"{i.where}: {i.source} imports {i.target}"
        for i in imports()
        if i.target.startswith("llmos.evals")
        and not i.source.startswith(("llmos.evals", "llmos.cli"))
    ]
    assert not bad, bad


async def test_the_table_shows_each_mode_category_and_evicted_facts(
    kernel: Kernel, settings: Settings, tmp_path: Path
) -> None:
    from rich.console import Console

    from llmos.evals.runner import table

    t = make_task("nested-kv", size=5)
    report = await run_eval(kernel, t, settings, json_path=tmp_path / "t.json", baseline=True)
    console = Console(record=True, width=100)
    console.print(table(report, t.metrics))
    text = console.export_text()
    rows = [line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│")]
    assert rows[0] == "memory" and rows[6] == "baseline" and rows[-1] == "evicted facts", rows
    assert "level 4" in rows and "1.000" in text
