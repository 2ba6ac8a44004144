"""The HTTP server under load: many users, each talking to their own agent at once.

What it measures. `llmos serve`'s app runs in a subprocess (uvicorn, one
event loop, the kernel inside it) with an instant scripted core, so what is
timed is llmos's own HTTP + kernel + SQLite work per request, not a model's.
N clients — each a separate user with their own API key, `httpx.AsyncClient`
and agent — run at once in this process. Each holds a conversation of M
turns: three of every four through `POST /v1/agents/{agent}/messages`, the
fourth through the OpenAI-compatible `POST /v1/chat/completions`, and after
every turn a `GET .../messages?limit=10` as a chat UI would. Every reply is
checked ("echo: <what was sent>").

Reported: requests per second over the whole run, latency p50/p90/p99 per
kind of request and overall, and errors (a non-2xx status, a transport
error, or a wrong reply; target: zero). The server runs with its default
limits (1 MiB bodies, 50 requests/s per user with bursts of 200), so a 429
here counts as an error too: the defaults must not get in a real user's way.

Left out: model time (the core answers at once), TLS, several server
processes, and the memory pressure path (8 KiB windows never flush here).
The machine has 2 cores: the clients take one, the server the other, and
other work on the machine skews every number (the load average is recorded).

Run: python benchmarks/server_load.py [--quick] [--clients N] [--turns M]
Writes benchmarks/results/server_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "server_load.json"
sys.path.insert(0, str(ROOT))  # tests/fakes: the stand-in embedder

from tests.fakes.embedders import HashEmbedder  # noqa: E402

# --- the server process ---------------------------------------------------------------


def serve(port: int, home: str) -> None:
    """Run the app on 127.0.0.1:port with an instant echo core (the subprocess's job)."""
    import uvicorn

    from llmos import Kernel
    from llmos.llm.core import ChatRequest, ChatResponse
    from llmos.llm.replay import ScriptedCore, call
    from llmos.server.app import create_app
    from llmos.server.deps import ServerConfig

    def echo(request: ChatRequest) -> ChatResponse:
        text = next((m.content or "" for m in reversed(request.messages) if m.role == "user"), "")
        return call("send_message", message=f"echo: {text}")

    kernel = Kernel.open(home, embedders={"test/hash": HashEmbedder()})
    kernel.add_core(ScriptedCore(echo, name="scripted/echo", capacity=64), model="scripted/echo")
    config = ServerConfig(
        models=("scripted/*",), default_model="scripted/echo", default_embedder="test/hash"
    )
    uvicorn.run(
        create_app(kernel, config),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
    )


# --- the clients ----------------------------------------------------------------------


async def client(url: str, key: str, index: int, turns: int) -> dict[str, Any]:
    import httpx

    samples: dict[str, list[float]] = {"message": [], "chat_completion": [], "history": []}
    errors: list[str] = []
    name = f"agent-{index}"
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:
        r = await http.post("/v1/agents", json={"name": name})
        if r.status_code != 201:
            return {"samples": samples, "errors": [f"create: {r.status_code} {r.text[:200]}"]}
        for turn in range(turns):
            text = f"client {index} says {turn}"
            t0 = time.perf_counter()
            try:
                if turn % 4 == 3:
                    kind = "chat_completion"
                    r = await http.post(
                        "/v1/chat/completions",
                        json={"model": name, "messages": [{"role": "user", "content": text}]},
                    )
                    reply = r.json()["choices"][0]["message"]["content"] if r.is_success else None
                else:
                    kind = "message"
                    r = await http.post(f"/v1/agents/{name}/messages", json={"text": text})
                    reply = r.json()["reply"] if r.is_success else None
                samples[kind].append(time.perf_counter() - t0)
                if reply != f"echo: {text}":
                    errors.append(f"{kind}: {r.status_code} {r.text[:200]}")
                t0 = time.perf_counter()
                r = await http.get(f"/v1/agents/{name}/messages", params={"limit": 10})
                samples["history"].append(time.perf_counter() - t0)
                # three messages a turn: the user's, the agent's call, its result
                if r.status_code != 200 or len(r.json()["messages"]) != min(10, 3 * (turn + 1)):
                    errors.append(f"history: {r.status_code} {r.text[:200]}")
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    return {"samples": samples, "errors": errors}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, keys: list[str], turns: int) -> tuple[list[dict[str, Any]], float]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(client(url, k, i, turns) for i, k in enumerate(keys)))
    return results, time.perf_counter() - t0


def run(clients: int, turns: int) -> dict[str, Any]:
    import httpx

    from llmos.access.policy import AccessManager
    from llmos.storage.db import Database

    with tempfile.TemporaryDirectory() as home:
        db = Database.open(Path(home) / "llmos.db")
        access = AccessManager(db)
        keys = [access.create_user(f"user{i}")[1] for i in range(clients)]
        db.close()
        port = _free_port()
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), home],
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.1)
            results, wall = asyncio.run(load(url, keys, turns))
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    by_kind: dict[str, list[float]] = {}
    errors: list[str] = []
    for r in results:
        errors += r["errors"]
        for kind, values in r["samples"].items():
            by_kind.setdefault(kind, []).extend(values)
    everything = [v for values in by_kind.values() for v in values]
    rows = {
        kind: {
            "requests": len(values),
            "p50_ms": round(_pct(values, 0.50), 2),
            "p90_ms": round(_pct(values, 0.90), 2),
            "p99_ms": round(_pct(values, 0.99), 2),
            "mean_ms": round(statistics.fmean(values) * 1000, 2) if values else None,
        }
        for kind, values in [*by_kind.items(), ("all", everything)]
    }
    return {
        "clients": clients,
        "turns_per_client": turns,
        "requests": len(everything) + clients,  # + one agent creation per client
        "seconds": round(wall, 3),
        "requests_per_second": round((len(everything) + clients) / wall, 1),
        "turns_per_second": round(
            (len(by_kind.get("message", [])) + len(by_kind.get("chat_completion", []))) / wall, 1
        ),
        "errors": len(errors),
        "error_samples": errors[:5],
        "latency": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="8 clients x 12 turns")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 32)")
    parser.add_argument("--turns", type=int, help="turns per client (default 40)")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "HOME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1])
        return
    clients = args.clients or (8 if args.quick else 32)
    turns = args.turns or (12 if args.quick else 40)
    result = {"command": " ".join(["python", "benchmarks/server_load.py", *sys.argv[1:]])}
    result |= run(clients, turns)
    result["quick"] = bool(args.quick)
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    result["python"] = sys.version.split()[0]

    print(
        f"{clients} clients x {turns} turns: {result['requests']} requests in "
        f"{result['seconds']} s = {result['requests_per_second']} req/s "
        f"({result['turns_per_second']} turns/s), errors: {result['errors']}"
    )
    print(f"{'request':<18}{'n':>7}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'mean ms':>10}")
    for kind, row in result["latency"].items():
        print(
            f"{kind:<18}{row['requests']:>7}{row['p50_ms']:>10.2f}{row['p90_ms']:>10.2f}"
            f"{row['p99_ms']:>10.2f}{row['mean_ms'] or float('nan'):>10.2f}"
        )
    for sample in result["error_samples"]:
        print("error:", sample)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
