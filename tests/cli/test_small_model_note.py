"""`llmos chat`'s first-run note about the tiny embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_the_small_model_note_is_shown_once(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from llmos.cli.chat import small_model_note

    small_model_note("openai/gpt-4o", tmp_path)
    assert not list(tmp_path.iterdir())
    small_model_note("local/gemma-3-270m", tmp_path)
    first = capsys.readouterr().err
    assert "tiny model" in first and "--model openai/MODEL" in first
    small_model_note("local/gemma-3-270m", tmp_path)
    assert "tiny model" not in capsys.readouterr().err
