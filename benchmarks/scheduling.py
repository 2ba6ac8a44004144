"""Scheduling on the embedded model: FIFO vs round robin, with and without KV snapshots.

What it measures. Eight agents send one request each at the same instant to
one embedded Gemma 3 270M core (`LlamaCppCore`, llama.cpp on the CPU) through
the kernel's run queue (`RunQueue` from `llmos.kernel.scheduler`, the code
`Kernel` uses): two want 256-token answers, six want 16-token answers. Each
agent has its own prompt of a few hundred tokens (persona, notes, task: no
two share more than the turn header). The long requests are queued first —
the order in which FIFO hurts short jobs most (a convoy); the run queue keeps
arrival order for both policies.

Four scenarios:

* cold — each agent's first request with a prompt of its own (about 275
  tokens, no two sharing more than the turn header), evaluated from an empty
  KV cache: the worst case for round robin (see below);
* warm — each agent's second request (the first one, its 8-token reply and a
  follow-up message): the agent's KV state from its first request is restored
  from the core's per-agent store, so only the ~40 new tokens are evaluated.
  This is how agents run on llmos turn after turn;
* agents — each agent's first request as llmos sends it: eight agents created
  in a `Kernel` on this core (persona and human blocks of their own), each
  request the agent's compiled window (the tool listing, the base system
  prompt, core memory) plus the user's task, from an empty KV cache. Every
  llmos agent's prompt starts with the same ~720 tokens (tools, then the
  system prompt, which names the agent only at its end), so after the first
  request only each agent's own ~120 tokens are evaluated: the model's cache
  still holds the shared head whoever ran last. tool_choice is "none" (the
  tools stay in the prompt) so that each answer has its fixed length;
* agents-served — the same, on a core that has served another agent just
  before (untimed): the shared head is in the model's cache, as on any core
  that has run before, so every request evaluates only its own part.

Modes, on one loaded model, each starting from an empty KV cache (warm: after
the first requests have been run again, untimed):

* fifo — each request runs to the end in arrival order;
* rr — round robin with a quantum of generated tokens (default 16): when a
  quantum ends and others wait, the generation is suspended (its KV state
  copied out with `llama_state_seq_get_data`), goes to the back of the
  queue, and is restored later (`llama_state_seq_set_data`);
* rr-reprefill — the same, but a suspended generation keeps nothing and
  re-evaluates its prompt and generated tokens on resume
  (`snapshot_switches=False`).

Every request generates exactly its `max_tokens`: the core is built with
`ignore_eos=True`, which masks end-of-turn tokens so the model keeps going (a
base model stops at unpredictable points; job lengths must be fixed for the
comparison). Plain text, `tool_choice="none"`, temperature 0.

Reported per mode: mean and max turnaround (arrival to finish) of the short
jobs and of all jobs, generated tokens per second over the whole run, context
switches and the time spent in them (suspend + resume, as the run queue
counts it), prompt tokens evaluated, and how many outputs equal FIFO's, text
by text per agent, in the same round (with snapshots they must: a resumed
generation continues on byte-identical state; a round-robin mismatch is
printed as "!!! MISMATCH", recorded in the JSON as
`rr_output_equals_fifo: false` with the texts, and ends the run with exit
status 1). Separately, the cost of one snapshot save + restore against
re-evaluating the same tokens, for an agent's prompt and for prompt + 256.

Left out: agents that arrive over time, the priority policy, tool-calling
requests (grammar-constrained decoding runs at about the same speed here, see
`llm/llamacpp.py`), and several cores.

Why the cold scenario cannot reach a large speedup: round robin lets a short
job finish in its first slice, but every first slice starts with that
request's whole prompt evaluation, which cannot be preempted. With prompt time
p and time per generated token t, arrival order L L S S S S S S and quantum
16, the short jobs' mean turnaround is 2(p + 256t) + 3.5(p + 16t) under FIFO
and 5.5(p + 16t) under round robin: the ratio is (5.5p + 568t) / (5.5p + 88t),
about 2.5x at this model's p/t of about 40 for 275 tokens, and only above 3x
when p/t < 28 (prompts under about 190 tokens here, or cached ones: warm).

Run: python benchmarks/scheduling.py [--quick] [--scenario all] [--quantum 16]
[--rounds 1] [--threads 2]   (--quick: 64- and 8-token jobs, quantum 8).
Writes benchmarks/results/scheduling.json.

On a shared machine: the modes of a round run back to back in an order that
rotates from round to round, the table shows medians over rounds, and the
load average and the process's CPU seconds are recorded with each run. When
other processes keep the cores busy, use `--threads 1`: with 2 llama.cpp
threads on 2 busy cores, a thread descheduled at a barrier stalls the other
(measured under a load average of 4: 31-37 ms per token at best but up to
2 s per token, against a steady 47-50 ms with one thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from llmos.kernel.scheduler import RunQueue  # noqa: E402
from llmos.kernel.syscalls import LLMSyscall  # noqa: E402
from llmos.llm.core import ChatRequest, ChatResponse, Message  # noqa: E402
from llmos.llm.llamacpp import LlamaCppCore  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "scheduling.json"
MODES = ("fifo", "rr", "rr-reprefill")
SCENARIOS = ("cold", "warm", "agents", "agents-served")

# name, who the agent is, what it keeps notes about, what it is asked to write
AGENTS = [
    (
        "Marlowe",
        "a harbour pilot in a foggy northern port",
        "tides, buoys and ship names",
        "a long account of guiding a cargo ship through a winter storm",
    ),
    (
        "Quill",
        "a librarian who restores medieval manuscripts",
        "inks, vellum and bindings",
        "a detailed guide to repairing a water-damaged book of hours",
    ),
    (
        "Tansy",
        "a beekeeper on a hillside farm",
        "hives, queens and honey yields",
        "why the bees swarmed twice this spring",
    ),
    (
        "Orbit",
        "a flight controller for a small weather satellite",
        "orbits, sensors and uplinks",
        "the morning a solar storm reset the satellite",
    ),
    (
        "Brindle",
        "a veterinarian in a mountain village",
        "goats, dogs and one old horse",
        "a week of house calls after the first snow",
    ),
    (
        "Cinder",
        "a glassblower who sells lamps at a market",
        "furnaces, colours and orders",
        "how to blow a blue lamp shade without cracks",
    ),
    (
        "Ledger",
        "a bookkeeper for a bicycle repair cooperative",
        "invoices, parts and members",
        "the cooperative's finances over the last year",
    ),
    (
        "Fern",
        "a botanist cataloguing ferns in a rain forest",
        "species, spores and rainfall",
        "a new fern found beside a waterfall",
    ),
]


@dataclass
class Job:
    agent: str
    request: ChatRequest
    long: bool


def prompt_for(i: int, name: str, who: str, notes: str, task: str) -> list[Message]:
    """A few hundred tokens of an agent's own context (no two share a sentence)."""
    system = (
        f"You are {name}, {who}. You keep careful notes about {notes}, and you answer "
        f"in full paragraphs, never in lists. Your notes so far:\n"
        + "\n".join(
            f"- Day {d + 1}: {name} recorded observation {d + 1} about {notes}; "
            f"entry {7 * i + d} in the log, filed under {who.split()[-1]}."
            for d in range(6)
        )
    )
    user = (
        f"Good morning, {name}. Please write {task}. Use what your notes say, keep "
        f"going for as long as you can, and describe every step in detail."
    )
    return [Message("system", system), Message("user", user)]


# The agent that used the core before the eight arrive (agents-served).
EARLIER = (
    "Warden",
    "a lighthouse keeper on a rocky island",
    "storms, lamps and passing ships",
    "a report on last night's storm",
)

WARM_REPLY_TOKENS = 8


def make_jobs(long_tokens: int, short_tokens: int) -> list[Job]:
    """Each agent's first request."""
    jobs = []
    for i, (name, who, notes, task) in enumerate(AGENTS):
        long = i < 2  # the two long requests arrive first
        req = ChatRequest(
            messages=prompt_for(i, name, who, notes, task),
            tool_choice="none",
            max_tokens=long_tokens if long else short_tokens,
            cache_key=name,
        )
        jobs.append(Job(name, req, long))
    return jobs


async def make_agent_jobs(core: LlamaCppCore, long_tokens: int, short_tokens: int) -> list[Job]:
    """Each agent's first request as llmos builds it: eight agents created in a
    kernel on this core (their own persona and human blocks), each asked its task.

    The request is the agent's compiled window (tools, the base system prompt,
    core memory) plus the user's message, as `Kernel.send` would send it, but
    with tool_choice "none" so that the answer's length is fixed. All agents'
    prompts start with the same tool listing and system text.
    """
    import tempfile

    from llmos import Kernel

    with tempfile.TemporaryDirectory() as home:
        kernel = Kernel.open(home)
        try:
            # A core of the kernel's own (closed with it) to count tokens with.
            kernel.add_core(LlamaCppCore(context_window=core.context_window), model=core.name)
            jobs = []
            # The eight agents, then one more that the core served before
            # them (the `agents-served` scenario).
            for i, (name, who, notes, task) in enumerate([*AGENTS, EARLIER]):
                await kernel.create_agent(
                    name,
                    model=core.name,
                    context_window=core.context_window,
                    persona=f"I am {name}, {who}. I keep careful notes about {notes}.",
                    human=f"The user works with {name} and reads everything {name} writes.",
                )
                request = kernel.context(name).request
                ask = Message("user", f"Good morning, {name}. Please write {task}.")
                long = i < 2
                request = replace(
                    request,
                    messages=[*request.messages, ask],
                    tool_choice="none",
                    max_tokens=long_tokens if long else short_tokens,
                    # A small model's request is a transcript ending in one
                    # reply line; these jobs are the agents' windows rendered
                    # by the core, with the ask, and run their full length.
                    prompt=None,
                    stop=[],
                    grammar=None,
                )
                jobs.append(Job(name, request, long))
        finally:
            await kernel.close()
    return jobs


async def prepare(
    core: LlamaCppCore, scenario: str, jobs: list[Job], earlier: Job | None = None
) -> list[Job]:
    """Empty the KV cache; for `agents-served`, run another agent's request first
    (untimed); for `warm`, run each agent's first request (untimed, leaving its
    state in the core's per-agent store) and return the second ones."""
    core.clear_kv_cache()
    if scenario == "agents-served":
        assert earlier is not None
        await core.chat(replace(earlier.request, max_tokens=1))
    if scenario in ("cold", "agents", "agents-served"):
        return jobs
    second = []
    for job in jobs:
        first = replace(job.request, max_tokens=WARM_REPLY_TOKENS)
        reply = await core.chat(first)
        messages = [
            *job.request.messages,
            Message("assistant", reply.content),
            Message("user", f"Thank you, {job.agent}. Go on, in even more detail."),
        ]
        second.append(Job(job.agent, replace(job.request, messages=messages), job.long))
    return second


async def run_mode(
    core: LlamaCppCore,
    scenario: str,
    mode: str,
    first_jobs: list[Job],
    quantum: int,
    earlier: Job | None = None,
) -> dict[str, Any]:
    core.snapshot_switches = mode != "rr-reprefill"
    jobs = await prepare(core, scenario, first_jobs, earlier)
    s0 = core.stats()
    queue = RunQueue(core, policy="fifo" if mode == "fifo" else "rr", quantum=quantum)
    t0, cpu0 = time.perf_counter(), time.process_time()

    async def one(job: Job) -> tuple[float, ChatResponse]:
        resp = await queue.run(LLMSyscall(agent_id=job.agent, core=core, request=job.request))
        return time.perf_counter() - t0, resp

    done = await asyncio.gather(*(one(j) for j in jobs))
    cpu = time.process_time() - cpu0
    s1 = core.stats()
    turnaround = [t for t, _ in done]
    short = [t for (t, _), j in zip(done, jobs, strict=True) if not j.long]
    generated = sum(r.usage.completion_tokens for _, r in done)
    assert all(
        r.usage.completion_tokens == j.request.max_tokens
        for (_, r), j in zip(done, jobs, strict=True)
    ), "a job did not generate exactly its max_tokens"
    makespan = max(turnaround)
    return {
        "mode": mode,
        "short_mean_s": statistics.mean(short),
        "short_max_s": max(short),
        "all_mean_s": statistics.mean(turnaround),
        "all_max_s": makespan,
        "tokens_per_s": generated / makespan,
        # CPU seconds of this process: the work done, less sensitive than wall
        # time to other processes on the machine (spinning threads still count).
        "cpu_s": cpu,
        "loadavg_1min": (loadavg() or [0.0])[0],
        "generated_tokens": generated,
        "context_switches": queue.context_switches,
        "switch_seconds": queue.switch_seconds,
        "switch_ms_each": 1000 * queue.switch_seconds / max(1, queue.context_switches),
        "prompt_tokens": sum(r.usage.prompt_tokens for _, r in done),
        "prompt_tokens_evaluated": s1["prompt_tokens_evaluated"] - s0["prompt_tokens_evaluated"],
        "agent_state_hits": s1["hits"] - s0["hits"],
        "reevaluated_tokens": s1["reevaluated_tokens"] - s0["reevaluated_tokens"],
        "finish_order": [
            j.agent for _, j in sorted(zip(turnaround, jobs, strict=True), key=lambda x: x[0])
        ],
        "outputs": {j.agent: r.content for (_, r), j in zip(done, jobs, strict=True)},
    }


def switch_costs(core: LlamaCppCore, job: Job, extra: int, repeats: int) -> dict[str, float]:
    """Median seconds to save + restore one sequence's KV state vs evaluate its tokens.

    Uses the core's internals directly (its lock, tokenizer and KV store), so
    only the three operations are timed.
    """
    import llama_cpp

    with core.slot.lock:
        llm = core.load()
        prompt = core._tokenize_prompt(llm, core._segments(job.request.messages, []))
        # Stand-ins for `extra` generated tokens: only their number matters here.
        tokens = prompt + (prompt[1:] * (extra // len(prompt) + 1))[:extra]
        store = core.slot.store
        memory = llama_cpp.llama_get_memory(llm.ctx)
        evals, saves, restores = [], [], []
        for _ in range(repeats):
            llama_cpp.llama_memory_clear(memory, True)
            llm.n_tokens = 0
            t = time.perf_counter()
            llm.eval(tokens)
            evals.append(time.perf_counter() - t)
            size = int(llama_cpp.llama_state_seq_get_size(llm.ctx, 0))
            t = time.perf_counter()
            assert store.save("bench", llm.ctx, tokens)
            saves.append(time.perf_counter() - t)
            llama_cpp.llama_memory_clear(memory, True)  # someone else used the model
            t = time.perf_counter()
            assert store.restore("bench", llm.ctx) == tokens
            restores.append(time.perf_counter() - t)
        llama_cpp.llama_memory_clear(memory, True)
        llm.n_tokens = 0
        core.slot.agent = core.slot.gen = None
    ev, sv, rs = (statistics.median(x) for x in (evals, saves, restores))
    return {
        "tokens": len(tokens),
        "state_bytes": size,
        "evaluate_s": ev,
        "save_s": sv,
        "restore_s": rs,
        "save_plus_restore_s": sv + rs,
        "restore_over_evaluate": rs / ev,
        "save_plus_restore_over_evaluate": (sv + rs) / ev,
    }


def shared_prefix(core: LlamaCppCore, jobs: list[Job]) -> int:
    """Characters every job's prompt starts with, in tokens."""
    prompts = [core.render_prompt(j.request.messages, j.request.tools) for j in jobs]
    n = min(len(p) for p in prompts)
    common = next((i for i in range(n) if len({p[i] for p in prompts}) > 1), n)
    return core.count_tokens(prompts[0][:common])


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def summarize(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Median over rounds of each numeric metric, per mode."""
    out: dict[str, dict[str, float]] = {}
    for mode in MODES:
        rows = [r[mode] for r in rounds]
        out[mode] = {
            k: statistics.median(row[k] for row in rows)
            for k, v in rows[0].items()
            if isinstance(v, (int, float))
        }
    return out


def paired_ratios(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, float]:
    """rr against fifo within each round (run back to back), then the median.

    On a shared machine load comes in stretches; a round's two runs share
    their stretch, so their ratio is steadier than a ratio of medians taken
    over different rounds.
    """
    return {
        "short_mean_speedup": statistics.median(
            r["fifo"]["short_mean_s"] / r["rr"]["short_mean_s"] for r in rounds
        ),
        "throughput_change": statistics.median(
            r["rr"]["tokens_per_s"] / r["fifo"]["tokens_per_s"] - 1 for r in rounds
        ),
    }


def compare_outputs(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Each mode's text per agent against FIFO's in the same round.

    Round robin with snapshots must equal FIFO exactly (a resumed generation
    continues on byte-identical state); re-prefill usually does (temperature
    0) but recomputes the state, so it is reported and not required.
    """
    equal: dict[str, int] = {}
    mismatches: list[dict[str, Any]] = []
    for mode in MODES:
        equal[mode] = 0
        for r, row in enumerate(rounds, start=1):
            fifo = row["fifo"]["outputs"]
            for agent, text in row[mode]["outputs"].items():
                if text == fifo[agent]:
                    equal[mode] += 1
                else:
                    mismatches.append(
                        {"round": r, "mode": mode, "agent": agent, "fifo": fifo[agent], "got": text}
                    )
    compared = sum(len(row["fifo"]["outputs"]) for row in rounds)
    return {
        "compared_per_mode": compared,
        "equal": equal,
        "rr_equals_fifo": equal["rr"] == compared,
        "mismatches": mismatches,
    }


def print_table(summary: dict[str, dict[str, float]], outputs: dict[str, Any]) -> None:
    head = (
        f"{'mode':<13}{'short mean':>11}{'short max':>10}{'all mean':>10}{'all max':>9}"
        f"{'tok/s':>7}{'cpu s':>7}{'switches':>9}{'switch s':>9}{'ms each':>8}{'prompt ev':>10}"
        f"{'= fifo':>8}"
    )
    print(head)
    print("-" * len(head))
    for mode in MODES:
        m = summary[mode]
        print(
            f"{mode:<13}{m['short_mean_s']:>10.2f}s{m['short_max_s']:>9.2f}s"
            f"{m['all_mean_s']:>9.2f}s{m['all_max_s']:>8.2f}s{m['tokens_per_s']:>7.1f}"
            f"{m['cpu_s']:>7.0f}"
            f"{m['context_switches']:>9.0f}{m['switch_seconds']:>8.2f}s"
            f"{m['switch_ms_each']:>8.1f}{m['prompt_tokens_evaluated']:>10.0f}"
            f"{outputs['equal'][mode]:>4}/{outputs['compared_per_mode']:<3}"
        )
    fifo, rr = summary["fifo"], summary["rr"]
    print(
        f"rr vs fifo: short-job mean turnaround {fifo['short_mean_s'] / rr['short_mean_s']:.2f}x "
        f"shorter; throughput {100 * (rr['tokens_per_s'] / fifo['tokens_per_s'] - 1):+.1f}%"
    )
    if not outputs["rr_equals_fifo"]:
        bad = sorted({(m["round"], m["agent"]) for m in outputs["mismatches"] if m["mode"] == "rr"})
        print(
            "!!! MISMATCH: round robin's output differs from FIFO's "
            f"(round, agent): {bad}; the snapshot/restore path changed what was generated"
        )
    for m in outputs["mismatches"]:
        if m["mode"] == "rr-reprefill":
            print(f"note: rr-reprefill differs from fifo for {m['agent']} in round {m['round']}")


def print_costs(costs: list[dict[str, float]]) -> None:
    print("\none context switch of a sequence (median):")
    for c in costs:
        print(
            f"  {c['tokens']:>4} tokens: evaluate {1000 * c['evaluate_s']:7.1f} ms, "
            f"save {1000 * c['save_s']:5.1f} ms + restore {1000 * c['restore_s']:5.1f} ms "
            f"= {100 * c['save_plus_restore_over_evaluate']:.1f}% of evaluating "
            f"(restore alone {100 * c['restore_over_evaluate']:.1f}%)"
        )


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    long_tokens, short_tokens = (64, 8) if args.quick else (256, 16)
    quantum = args.quantum or (8 if args.quick else 16)
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    jobs = make_jobs(long_tokens, short_tokens)
    core = LlamaCppCore(context_window=2048, n_threads=args.threads, ignore_eos=True)
    load_before = loadavg()
    results: dict[str, Any] = {}
    try:
        *agent_jobs, earlier = await make_agent_jobs(core, long_tokens, short_tokens)
        prompt_lengths = {
            name: [
                core.count_tokens(core.render_prompt(j.request.messages, j.request.tools)) + 1
                for j in js
            ]
            for name, js in (("distinct", jobs), ("agents", agent_jobs))
        }
        # Warm up: the first prompt evaluation and decodes after loading are
        # slow (allocations, page faults); then forget it.
        await core.chat(replace(jobs[-1].request, max_tokens=short_tokens))
        for scenario in scenarios:
            rounds: list[dict[str, dict[str, Any]]] = []
            for r in range(args.rounds):
                row = {}
                # Rotate the order each round, so no mode is always first.
                for mode in MODES[r % 3 :] + MODES[: r % 3]:
                    todo = agent_jobs if scenario.startswith("agents") else jobs
                    row[mode] = await run_mode(core, scenario, mode, todo, quantum, earlier)
                    print(
                        f"{scenario} round {r + 1} {mode}: short mean "
                        f"{row[mode]['short_mean_s']:.2f}s, {row[mode]['tokens_per_s']:.1f} tok/s,"
                        f" load {loadavg()}",
                        flush=True,
                    )
                rounds.append(row)
            results[scenario] = rounds
        costs = [
            switch_costs(core, jobs[0], 0, args.repeats),
            switch_costs(core, jobs[0], long_tokens, args.repeats),
        ]
    finally:
        await core.aclose()

    out: dict[str, Any] = {
        "benchmark": "scheduling",
        "command": " ".join(["python benchmarks/scheduling.py", *sys.argv[1:]]),
        "machine": {
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
        "setup": {
            "model": core.name,
            "agents": len(jobs),
            "long_jobs": sum(j.long for j in jobs),
            "long_tokens": long_tokens,
            "short_tokens": short_tokens,
            "quantum": quantum,
            "arrival_order": [j.agent for j in jobs],
            "first_prompt_tokens": prompt_lengths,
            "agents_shared_prefix_tokens": shared_prefix(core, agent_jobs),
            "warm_reply_tokens": WARM_REPLY_TOKENS,
            "forced_length": "ignore_eos=True: end-of-turn tokens masked, exactly max_tokens",
        },
        "switch_cost": costs,
    }
    for scenario, rounds in results.items():
        summary = summarize(rounds)
        outputs = compare_outputs(rounds)
        print(f"\n== {scenario} ==")
        print_table(summary, outputs)
        paired = paired_ratios(rounds)
        print(
            f"paired (median over rounds of each round's ratio): short-job mean turnaround "
            f"{paired['short_mean_speedup']:.2f}x shorter; throughput "
            f"{100 * paired['throughput_change']:+.1f}%"
        )
        fifo, rr = summary["fifo"], summary["rr"]
        out[scenario] = {
            "paired": paired,
            "summary": summary,
            "rounds": [
                {m: {k: v for k, v in row[m].items() if k != "outputs"} for m in MODES}
                for row in rounds
            ],
            "outputs_equal_to_fifo": outputs["equal"],
            "outputs_compared_per_mode": outputs["compared_per_mode"],
            "rr_output_equals_fifo": outputs["rr_equals_fifo"],
            "output_mismatches": outputs["mismatches"],
            "short_mean_speedup_rr_vs_fifo": fifo["short_mean_s"] / rr["short_mean_s"],
            "throughput_change_rr_vs_fifo": rr["tokens_per_s"] / fifo["tokens_per_s"] - 1,
        }
    print_costs(costs)
    out["restore_over_evaluate_prompt"] = costs[0]["restore_over_evaluate"]
    out["rr_output_equals_fifo"] = all(out[s]["rr_output_equals_fifo"] for s in results)
    if not out["rr_output_equals_fifo"]:
        print("\n!!! MISMATCH: round robin's output differs from FIFO's (see above)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="64/8-token jobs, quantum 8")
    parser.add_argument("--quantum", type=int, default=0, help="tokens per round-robin slice")
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the three modes")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--repeats", type=int, default=5, help="switch-cost measurements")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    if not result["rr_output_equals_fifo"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
