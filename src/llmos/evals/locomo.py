"""LoCoMo (Maharana et al., ACL 2024): question answering over very long multi-session chats.

The data file is the published `locomo10.json` (or any file in its format): a
list of samples, each with `conversation` (`speaker_a`, `speaker_b`, and
`session_N` lists of `{speaker, dia_id, text}` turns with `session_N_date_time`)
and `qa` (`{question, answer, evidence: ["D1:3", ...], category}`). Each
question is one item: an agent that has lived through the whole conversation
(speaker A as the user, speaker B as the assistant; only the end of the last
session still in its window) is asked it. Scored as LoCoMo's QA is: token F1
against the answer, by category (exact match and containment beside it).
Category 5 (adversarial: no answer exists) is skipped, as most published
LoCoMo figures do, since its items carry no `answer`.
"""

from __future__ import annotations

import re
from typing import Any

from llmos.evals import datafile
from llmos.evals.harness import QAItem, Turn
from llmos.evals.qa import FileQATask

FMT = "LoCoMo"
_SESSION = re.compile(r"^session_(\d+)$")
TIME_FORMATS = ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y")
KEEP = 10  # messages of the last session left in the agent's window
ASK = "{q} Answer with a short phrase, using exact words from our conversations where possible."


class LoCoMo(FileQATask):
    name = "locomo"
    metrics = ("f1", "exact", "contains")

    fmt = FMT
    nothing = "LoCoMo questions with answers"

    def _parse(self, data: Any) -> list[QAItem]:
        p = self.path
        if not isinstance(data, list):
            raise datafile.EvalDataError(f"{p}: not {FMT} data (expected a list of samples)")
        out: list[QAItem] = []
        for si, sample in enumerate(data):
            where = f"sample {si}"
            conv = datafile.need(sample, "conversation", dict, where, p, FMT)
            qa = datafile.need(sample, "qa", list, where, p, FMT)
            sid = str(sample.get("sample_id", si))
            a = datafile.need(conv, "speaker_a", str, f"{where}.conversation", p, FMT)
            history, index = self._history(conv, a, where)
            last = [k for k, m in ((k, _SESSION.match(k)) for k in conv) if m]
            last_len = len(conv[max(last, key=lambda k: int(k.split("_")[1]))]) if last else 0
            for qi, q in enumerate(qa):
                question = datafile.need(q, "question", str, f"{where}.qa[{qi}]", p, FMT)
                if "answer" not in q or q.get("category") == 5:
                    continue  # adversarial: no answer to score against
                evidence = [index[e] for e in q.get("evidence") or [] if e in index]
                out.append(
                    QAItem(
                        id=f"{sid}:{qi}",
                        question=ASK.format(q=question),
                        answer=str(q["answer"]),
                        history=history,
                        keep_in_window=min(KEEP, last_len),
                        evidence=evidence,
                        category=f"category {q.get('category', '?')}",
                    )
                )
        return out

    def _history(self, conv: dict[str, Any], a: str, where: str) -> tuple[list[Turn], dict]:
        sessions = sorted((int(m.group(1)), k) for k in conv if (m := _SESSION.match(k)))
        if not sessions:
            raise datafile.EvalDataError(f"{self.path}: not {FMT} data ({where} has no session_N)")
        history: list[Turn] = []
        index: dict[str, int] = {}
        for _, key in sessions:
            turns = datafile.need(conv, key, list, f"{where}.conversation", self.path, FMT)
            at = datafile.parse_time(str(conv.get(f"{key}_date_time", "")), TIME_FORMATS)
            for ti, t in enumerate(turns):
                w = f"{where}.{key}[{ti}]"
                speaker = datafile.need(t, "speaker", str, w, self.path, FMT)
                text = datafile.need(t, "text", str, w, self.path, FMT)
                if t.get("blip_caption"):
                    text += f" [shares a photo: {t['blip_caption']}]"
                if isinstance(t.get("dia_id"), str):
                    index[t["dia_id"]] = len(history)
                role = "user" if speaker == a else "assistant"
                history.append(Turn(role, f"{speaker}: {text}", at + 30 * ti if at else 0.0))
        return history, index
