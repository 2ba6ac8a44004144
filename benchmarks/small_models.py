"""Small models through llmos: the embedded Gemma 3 270M answering and remembering.

Side by side in one run, on the embedded default (temperature 0):

* everyday: short questions with accepted answers (keyword match), each
  through llmos (`Kernel.send` on a fresh agent: the transcript protocol its
  profile chooses) and through the raw model with a plain few-shot transcript
  (the model's own ceiling). Target (issue 12): llmos scores at least the raw
  model's score minus one. `--functions N` also runs the first N questions
  with the profile overridden to MemGPT's function-calling framing (what
  every small model got before).
* memory: scripted conversations that state a fact, push it out of a
  2,048-token window with filler turns, then ask for it; llmos in each memory
  mode, and the raw model with the conversation cut to its window (its
  history lines are the user's and a fixed "OK."). Target: llmos in its
  default mode (auto) recalls at least 8 of 10.
* per turn: wall time and prompt tokens evaluated (not served from the KV
  cache), median per mode.

Timings depend on the machine's load: llama.cpp with 2 threads slows down
sharply when another process takes a core.

Memory modes: `auto` (the default for this model: paging and fact
extraction), `auto-noextract` (paging only), `hybrid` (paging, extraction and
the model's memory lines), `self` (memory lines only). Scoring is strict: a
reply counts if it names an accepted answer as a word and denies nothing (no
"no", "not", "never", "sorry", "cannot", "unsure", "unknown", "n't"): "I'm
sorry, I don't have a red Toyota." does not recall the Toyota. The loose
count (the word alone, the rule before) is reported beside it. A conversation
sends filler turns until its fact has left the window, then
`--after-eviction` more (the JSON records how many and whether it left).

    python benchmarks/small_models.py [--quick] [--functions 10] [--modes auto,hybrid]
        [--fillers 20] [--after-eviction 2] [--no-everyday]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from llmos import ChatRequest, Kernel, Message  # noqa: E402

MODEL = "local/gemma-3-270m"
WINDOW = 2048

EVERYDAY: list[tuple[str, list[str]]] = [
    ("What is the capital of France?", ["paris"]),
    ("What is 2 + 2?", ["4", "four"]),
    ("How many legs does a spider have?", ["8", "eight"]),
    ("What color is grass?", ["green"]),
    ("What is the largest planet in our solar system?", ["jupiter"]),
    ("What is the capital of Japan?", ["tokyo"]),
    ("How many days are in a week?", ["7", "seven"]),
    ("What is the opposite of hot?", ["cold"]),
    ("What animal says moo?", ["cow"]),
    ("At what temperature in Celsius does water boil?", ["100"]),
    ("What is the capital of Italy?", ["rome"]),
    ("How many hours are in a day?", ["24", "twenty-four"]),
    ("What color is a banana?", ["yellow"]),
    ("What is 10 minus 3?", ["7", "seven"]),
    ("Which animal is known as the king of the jungle?", ["lion"]),
    ("What do bees make?", ["honey"]),
    ("What is frozen water called?", ["ice"]),
    ("What is the capital of Germany?", ["berlin"]),
    ("How many months are in a year?", ["12", "twelve"]),
    ("What planet do we live on?", ["earth"]),
    ("What is 3 times 3?", ["9", "nine"]),
    ("Who wrote Romeo and Juliet?", ["shakespeare"]),
    ("What is the capital of Spain?", ["madrid"]),
    ("What gas do humans need to breathe?", ["oxygen"]),
    ("What is the fastest land animal?", ["cheetah"]),
    ("How many continents are there?", ["7", "seven"]),
    ("What is the capital of the United Kingdom?", ["london"]),
    ("What do you call a baby cat?", ["kitten"]),
    ("What is the largest ocean on Earth?", ["pacific"]),
    ("Which season comes after winter?", ["spring"]),
    ("What is the chemical formula of water?", ["h2o"]),
    ("How many sides does a triangle have?", ["3", "three"]),
    ("What is the tallest animal?", ["giraffe"]),
    ("What color do you get when you mix red and white?", ["pink"]),
]

# (fact stated, question asked later, accepted answers)
MEMORY: list[tuple[str, str, list[str]]] = [
    ("Hi! My name is Ana.", "What is my name?", ["ana"]),
    ("My favorite color is teal.", "What is my favorite color?", ["teal"]),
    ("I live in Lisbon.", "Where do I live?", ["lisbon"]),
    ("My dog is called Rex.", "What is my dog called?", ["rex"]),
    ("I work as a nurse.", "What work do I do?", ["nurse"]),
    ("My favorite food is sushi.", "What is my favorite food?", ["sushi"]),
    ("My sister's name is Maria.", "What is my sister's name?", ["maria"]),
    ("I was born in 1990.", "What year was I born?", ["1990"]),
    ("My favorite sport is tennis.", "What is my favorite sport?", ["tennis"]),
    ("I drive a red Toyota.", "What car do I drive?", ["toyota"]),
]

# Filler turns share no word with the facts' questions, so only the fact can answer them.
FILLERS = [
    "Today I took a long walk along the river. The water was calm, the trees were turning "
    "orange, and a few boats drifted past the old bridge. I stopped at a bench, watched the "
    "ducks, and listened to a man playing the violin near the market. Later the clouds came "
    "in, a light rain started, and I went home slowly through the park, thinking about the "
    "books I want to read this winter and the trip I might take in the spring.",
    "This morning the bakery on the corner had fresh bread again. The smell filled the whole "
    "street. I bought two loaves and a small cake, then sat outside for a while with a cup of "
    "tea. A group of students passed by, laughing about an exam, and a delivery van blocked "
    "the road for ten minutes. The baker told me the oven is older than the building itself, "
    "and that the recipe came from a village in the mountains far away.",
    "I spent the afternoon cleaning the attic. There were boxes of old letters, a broken "
    "lamp, photographs of people nobody remembers, and a stack of maps from long journeys. "
    "Dust everywhere. I opened the small window to let some air in and found a bird's nest "
    "on the ledge outside, empty now. By the evening I had sorted most of it into three "
    "piles: keep, give away, and throw out. The keep pile was still the biggest one.",
]

# The raw model's ceiling: a plain few-shot transcript, as issue 12 measured it.
RAW_HEAD = (
    "User: Hi!\nAssistant: Hello! How can I help you?\n"
    "User: What color is the sky?\nAssistant: It is blue.\n"
    "User: How many wheels does a bicycle have?\nAssistant: A bicycle has two wheels.\n"
)
RAW_STOP = ["\n", "User:"]


# A reply that names the answer but denies or doubts it ("I'm sorry, I don't
# have a red Toyota.") did not answer: scored wrong.
DENIAL = re.compile(r"\b(no|not|never|sorry|cannot|unsure|unknown)\b|n't\b|\bdont\b")


def mentions(reply: str, accepted: list[str]) -> bool:
    """The old, loose rule: an accepted answer appears as a word."""
    text = reply.lower()
    return any(re.search(rf"(?<![\w-]){re.escape(a)}(?![\w-])", text) for a in accepted)


def correct(reply: str, accepted: list[str]) -> bool:
    """The scoring rule: an accepted answer appears as a word, and nothing denies it."""
    return mentions(reply, accepted) and DENIAL.search(reply.lower()) is None


def med(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return round(ordered[max(0, -(-9 * len(ordered) // 10) - 1)], 3) if ordered else 0.0


class Run:
    """One kernel on a temporary home, and the turns it ran per mode."""

    def __init__(self, home: Path, window: int = WINDOW) -> None:
        self.window = window
        self.kernel = Kernel.open(home)
        self.core = self.kernel.core(MODEL)
        self.turns: dict[str, list[dict[str, Any]]] = {}
        self._n = 0

    async def agent(self, settings: dict[str, Any] | None = None) -> str:
        self._n += 1
        name = f"a{self._n}"
        await self.kernel.create_agent(
            name, model=MODEL, context_window=self.window, settings=settings
        )
        return name

    async def send(self, mode: str, name: str, text: str) -> str:
        t = time.perf_counter()
        turn = await self.kernel.send(name, text)
        u = turn.usage
        self.turns.setdefault(mode, []).append(
            {
                "seconds": time.perf_counter() - t,
                "prompt_tokens": u.prompt_tokens,
                "evaluated": u.prompt_tokens - u.cached_prompt_tokens,
                "flushes": turn.flushes,
                "memory_calls": sum(c.name != "send_message" for c in turn.function_calls),
            }
        )
        return turn.reply

    async def raw(self, mode: str, prompt: str) -> str:
        request = ChatRequest(
            [Message("user", prompt)],
            max_tokens=96,
            tool_choice="none",
            prompt=prompt,
            stop=list(RAW_STOP),
        )
        t = time.perf_counter()
        response = await self.core.chat(request)
        u = response.usage
        self.turns.setdefault(mode, []).append(
            {
                "seconds": time.perf_counter() - t,
                "prompt_tokens": u.prompt_tokens,
                "evaluated": u.prompt_tokens - u.cached_prompt_tokens,
                "flushes": 0,
                "memory_calls": 0,
            }
        )
        return (response.content or "").strip()


async def everyday(run: Run, questions: list[tuple[str, list[str]]]) -> dict[str, Any]:
    rows = []
    for q, accepted in questions:
        name = await run.agent()
        via = await run.send("llmos (everyday)", name, q)
        raw = await run.raw("raw (everyday)", f"{RAW_HEAD}User: {q}\nAssistant:")
        rows.append(
            {
                "question": q,
                "llmos": via,
                "llmos_ok": correct(via, accepted),
                "llmos_mentions": mentions(via, accepted),
                "raw": raw,
                "raw_ok": correct(raw, accepted),
                "raw_mentions": mentions(raw, accepted),
            }
        )
        print(f"  {q!r}: llmos {via!r} | raw {raw!r}", flush=True)
    return {
        "n": len(rows),
        "llmos": sum(r["llmos_ok"] for r in rows),
        "raw": sum(r["raw_ok"] for r in rows),
        "llmos_mentions": sum(r["llmos_mentions"] for r in rows),
        "raw_mentions": sum(r["raw_mentions"] for r in rows),
        "rows": rows,
    }


async def functions_framing(run: Run, questions: list[tuple[str, list[str]]]) -> dict[str, Any]:
    """The same questions with MemGPT's function-calling framing forced by an override."""
    path = Path(tempfile.mkdtemp()) / "models.json"
    path.write_text(json.dumps({MODEL: {"size_class": "capable", "chat_template": True}}))
    before = os.environ.get("LLMOS_MODELS")
    os.environ["LLMOS_MODELS"] = str(path)
    rows = []
    try:
        for q, accepted in questions:
            name = await run.agent({"max_steps": 3})
            reply = await run.send("llmos, functions framing", name, q)
            rows.append({"question": q, "reply": reply, "ok": correct(reply, accepted)})
            print(f"  functions framing {q!r}: {reply!r}", flush=True)
    finally:
        if before is None:
            os.environ.pop("LLMOS_MODELS", None)
        else:
            os.environ["LLMOS_MODELS"] = before
    return {"n": len(rows), "correct": sum(r["ok"] for r in rows), "rows": rows}


def mode_settings(mode: str) -> dict[str, Any]:
    """`auto`, `self`, `hybrid`; a `-noextract` suffix turns fact extraction off."""
    base, _, variant = mode.partition("-")
    settings: dict[str, Any] = {"memory_mode": base}
    if variant == "noextract":
        settings["extract_facts"] = False
    elif variant:
        raise SystemExit(f"unknown mode variant {variant!r} in {mode!r}")
    return settings


async def memory_llmos(
    run: Run, mode: str, fillers: int, cases: list, after: int
) -> dict[str, Any]:
    """Each conversation: the fact, filler turns until the fact has left the
    window and `after` more (at most `fillers`; all of them if `after` < 0),
    then the question."""
    rows = []
    label = f"llmos memory ({mode})"
    for fact, question, accepted in cases:
        name = await run.agent(mode_settings(mode))
        await run.send(label, name, fact)
        out_at = None
        sent = 0
        for i in range(fillers):
            await run.send(label, name, FILLERS[i % len(FILLERS)])
            sent += 1
            window = run.kernel.image(name).window
            if out_at is None and not any(fact in (m.content or "") for m in window):
                out_at = i
            if after >= 0 and out_at is not None and i - out_at >= after:
                break
        image = run.kernel.image(name)
        evicted = not any(fact in (m.content or "") for m in image.window)
        reply = await run.send(label, name, question)
        human = image.memory.blocks["human"].value if "human" in image.memory.blocks else ""
        rows.append(
            {
                "fact": fact,
                "reply": reply,
                "ok": correct(reply, accepted),
                "mentions": mentions(reply, accepted),
                "evicted": evicted,
                "fillers_sent": sent,
                "human_block": human,
                "archival": image.archival_count,
            }
        )
        print(f"  {mode}: {question!r} -> {reply!r} (fact evicted: {evicted})", flush=True)
    return {
        "n": len(rows),
        "correct": sum(r["ok"] for r in rows),
        "mentions": sum(r["mentions"] for r in rows),
        "evicted": sum(r["evicted"] for r in rows),
        "rows": rows,
    }


async def memory_raw(run: Run, fillers: int, cases: list) -> dict[str, Any]:
    """The raw model with the conversation cut to the window, oldest lines first out."""
    rows = []
    count = run.core.count_tokens
    for fact, question, accepted in cases:
        lines = [fact] + [FILLERS[i % len(FILLERS)] for i in range(fillers)]
        history = [f"User: {u}\nAssistant: OK.\n" for u in lines]
        tail = f"User: {question}\nAssistant:"
        while history and count(RAW_HEAD + "".join(history) + tail) > run.window - 96:
            history.pop(0)
        in_window = any(fact in h for h in history)
        reply = await run.raw("raw memory", RAW_HEAD + "".join(history) + tail)
        rows.append(
            {
                "fact": fact,
                "reply": reply,
                "ok": correct(reply, accepted),
                "mentions": mentions(reply, accepted),
                "evicted": not in_window,
            }
        )
        print(f"  raw: {question!r} -> {reply!r} (fact cut: {not in_window})", flush=True)
    return {
        "n": len(rows),
        "correct": sum(r["ok"] for r in rows),
        "mentions": sum(r["mentions"] for r in rows),
        "evicted": sum(r["evicted"] for r in rows),
        "rows": rows,
    }


QUICK_WINDOW, QUICK_FILLERS, QUICK_QUESTIONS = 1024, 8, 12


def save(
    out: Path,
    run: Run,
    args: argparse.Namespace,
    every: dict[str, Any],
    framing: dict[str, Any] | None,
    memory: dict[str, Any],
    window: int,
    fillers: int,
    t0: float,
) -> dict[str, Any]:
    """Write the results so far (after each mode: a slow run leaves its part)."""
    per_turn = {
        mode: {
            "turns": len(ts),
            "median_s": med([t["seconds"] for t in ts]),
            "p90_s": p90([t["seconds"] for t in ts]),
            "median_prompt_tokens": med([t["prompt_tokens"] for t in ts]),
            "median_evaluated_tokens": med([t["evaluated"] for t in ts]),
            "flushes": sum(t["flushes"] for t in ts),
            "memory_calls": sum(t["memory_calls"] for t in ts),
        }
        for mode, ts in run.turns.items()
    }
    auto = memory.get("auto")
    result = {
        "model": MODEL,
        "window": window,
        "fillers_max": fillers,
        "after_eviction": args.after_eviction,
        "quick": args.quick,
        "complete": "raw" in memory,
        "scoring": "correct: an accepted answer appears as a word and the reply has no "
        "denial (no/not/never/sorry/cannot/unsure/unknown/n't); mentions: the word alone",
        "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "everyday": every,
        "functions_framing": framing,
        "memory": memory,
        "per_turn": per_turn,
        "targets": {
            "everyday_llmos_ge_raw_minus_1": every["llmos"] >= every["raw"] - 1
            if every["n"]
            else None,
            "memory_auto_ge_8_of_10": auto["correct"] >= 8 if auto and not args.quick else None,
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"for iterating: the first {QUICK_QUESTIONS} everyday questions, all memory "
        f"conversations in a {QUICK_WINDOW}-token window with {QUICK_FILLERS} fillers, no "
        "old framing; writes small_models_quick.json unless --out",
    )
    ap.add_argument("--functions", type=int, default=10, help="questions in the old framing")
    ap.add_argument(
        "--modes",
        default="auto,auto-noextract,self,hybrid",
        help="memory modes to run; a -noextract suffix turns fact extraction off",
    )
    ap.add_argument(
        "--fillers", type=int, default=20, help="filler turns per conversation, at most"
    )
    ap.add_argument(
        "--after-eviction",
        type=int,
        default=2,
        help="filler turns after the fact has left the window, then the question "
        "(-1: all --fillers)",
    )
    ap.add_argument("--window", type=int, default=WINDOW, help="the agents' context window")
    ap.add_argument("--no-everyday", action="store_true", help="memory conversations only")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/...)")
    args = ap.parse_args()
    window, fillers, questions = args.window, args.fillers, EVERYDAY
    if args.quick:
        window, fillers, questions = QUICK_WINDOW, QUICK_FILLERS, EVERYDAY[:QUICK_QUESTIONS]
        args.functions = 0
    if args.no_everyday:
        questions, args.functions = [], 0
    cases = MEMORY
    name = "small_models_quick.json" if args.quick else "small_models.json"
    out = Path(args.out or ROOT / "benchmarks" / "results" / name)

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LLMOS_HOME"] = tmp
        os.environ.pop("LLMOS_MODELS", None)
        run = Run(Path(tmp), window)
        t0 = time.perf_counter()
        print("everyday questions", flush=True)
        every = await everyday(run, questions)
        framing = None
        if args.functions:
            framing = await functions_framing(run, questions[: args.functions])
        print("memory conversations", flush=True)
        memory: dict[str, Any] = {}
        for m in args.modes.split(","):
            memory[m] = await memory_llmos(run, m, fillers, cases, args.after_eviction)
            save(out, run, args, every, framing, memory, window, fillers, t0)  # partial
        memory["raw"] = await memory_raw(run, fillers, cases)
        result = save(out, run, args, every, framing, memory, window, fillers, t0)
        wall = result["wall_s"]
        per_turn = result["per_turn"]
        await run.kernel.close()

    print()
    print(
        f"everyday ({every['n']} questions): llmos {every['llmos']}, raw model {every['raw']} "
        f"(keyword alone: {every['llmos_mentions']}, {every['raw_mentions']})"
    )
    if framing:
        print(
            f"  old function-calling framing: {framing['correct']} of {framing['n']} "
            f"(e.g. {framing['rows'][0]['reply']!r})"
        )
    print(f"memory ({len(cases)} conversations, {fillers} filler turns, {window}-token window):")
    for mode, res in memory.items():
        print(
            f"  {mode:<15} recalled {res['correct']:>2} of {res['n']}  (keyword alone "
            f"{res['mentions']:>2}; fact evicted in {res['evicted']})"
        )
    print()
    print(
        f"{'per turn':<28} {'turns':>5} {'median s':>9} {'p90 s':>7} {'prompt':>7} "
        f"{'evaluated':>9} {'flushes':>7} {'mem calls':>9}"
    )
    for mode, p in per_turn.items():
        print(
            f"{mode:<28} {p['turns']:>5} {p['median_s']:>9.2f} {p['p90_s']:>7.2f} "
            f"{p['median_prompt_tokens']:>7.0f} {p['median_evaluated_tokens']:>9.0f} "
            f"{p['flushes']:>7} {p['memory_calls']:>9}"
        )
    print(f"\nwall {wall:.0f} s; results in {out}")


if __name__ == "__main__":
    asyncio.run(main())
