"""LongMemEval (Wu et al., ICLR 2025): long-term memory of a chat assistant.

The data file is one of the published files (`longmemeval_s.json`,
`longmemeval_oracle.json`, ...) or any file in their format: a list of
instances, each with `question_id`, `question_type`, `question`, `answer`,
`question_date`, `haystack_dates`, `haystack_sessions` (lists of `{role,
content, has_answer?}` turns). Each instance is one item: an agent that has
lived through its haystack (only the end of the last session still in its
window) is asked the question on the question's date. Scored as the paper
does, by a judge model (`--judge SPEC`; abstention questions, whose id ends in
`_abs`, are right when the reply declines); without a judge, the answer present
in the reply, which undercounts paraphrased answers. Token F1 beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmos.evals import datafile, scoring
from llmos.evals.harness import QAItem, Turn
from llmos.evals.qa import FileQATask

if TYPE_CHECKING:
    from llmos.llm.core import Core

FMT = "LongMemEval"
TIME_FORMATS = ("%Y/%m/%d (%a) %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d")
KEEP = 10


class LongMemEval(FileQATask):
    name = "longmemeval"
    metrics = ("accuracy", "f1")

    fmt = FMT
    nothing = "LongMemEval instances"

    def _parse(self, data: Any) -> list[QAItem]:
        p = self.path
        if not isinstance(data, list):
            raise datafile.EvalDataError(f"{p}: not {FMT} data (expected a list of instances)")
        out: list[QAItem] = []
        for n, inst in enumerate(data):
            w = f"instance {n}"
            qid = datafile.need(inst, "question_id", str, w, p, FMT)
            question = datafile.need(inst, "question", str, w, p, FMT)
            answer = datafile.need(inst, "answer", (str, int, float), w, p, FMT)
            sessions = datafile.need(inst, "haystack_sessions", list, w, p, FMT)
            dates = inst.get("haystack_dates") or []
            history: list[Turn] = []
            evidence: list[int] = []
            for si, session in enumerate(sessions):
                if not isinstance(session, list):
                    raise datafile.EvalDataError(
                        f"{p}: not {FMT} data ({w}.haystack_sessions[{si}] should be a list)"
                    )
                day = str(dates[si]) if si < len(dates) else ""
                at = datafile.parse_time(day, TIME_FORMATS)
                for ti, turn in enumerate(session):
                    tw = f"{w}.haystack_sessions[{si}][{ti}]"
                    role = datafile.need(turn, "role", str, tw, p, FMT)
                    content = datafile.need(turn, "content", str, tw, p, FMT)
                    if role not in ("user", "assistant"):
                        raise datafile.EvalDataError(f"{p}: not {FMT} data ({tw}.role is {role!r})")
                    if turn.get("has_answer"):
                        evidence.append(len(history))
                    history.append(Turn(role, content, at + 30 * ti if at else 0.0))
            last = sessions[-1] if sessions else []
            when = inst.get("question_date")
            qtype = str(inst.get("question_type", "?"))
            abstention = qid.endswith("_abs")
            out.append(
                QAItem(
                    id=qid,
                    question=(f"(Today is {when}.) " if when else "") + question,
                    answer=str(answer),
                    history=history,
                    keep_in_window=min(KEEP, len(last)),
                    evidence=evidence,
                    category=qtype + (" (abstention)" if abstention else ""),
                    meta={"abstention": abstention, "question": question},
                )
            )
        return out

    async def score(self, item: QAItem, reply: str, judge: Core | None) -> dict[str, float | None]:
        abstention = bool(item.meta.get("abstention"))
        if judge is not None:
            accuracy = await scoring.judge(
                judge, item.question, item.answer, reply, abstention=abstention
            )
        else:
            accuracy = scoring.contains(reply, item.answer)
        return {"accuracy": accuracy, "f1": scoring.token_f1(reply, item.answer)}
