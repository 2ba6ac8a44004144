"""Kernel routes: who am I, and the kernel's status as far as it concerns my agents.

`GET /v1/kernel` is `Kernel.kernel_stats()` filtered to the caller: the
process-table entries of their own agents, the run queues of the cores those
agents are on (a core's queue length and totals are shared by every user of
it, like a machine's load average), and per-agent syscall usage.

It also lists the nodes: every kernel on this database (`kernel/nodes.py`:
the `llmos serve` nodes behind a load balancer, a local kernel service), live
or stale (no beat for three intervals: stopped without closing), with host,
pid, version, start and last beat. Of the agents a node holds, a caller sees
the names of their own only, and how many it holds in all (a load figure,
like a core's queue length).

Left out: the kernel-wide syscall totals and other users' processes (an
operator's view, for a later admin role), and changing scheduling policies.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from llmos.server.deps import CurrentUser, KernelDep

router = APIRouter(tags=["kernel"])


@router.get("/me", summary="The user this key belongs to")
async def me(user: CurrentUser) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "created_at": user.created_at}


@router.get("/kernel", summary="Kernel status for your agents: processes, cores, usage, nodes")
async def status(user: CurrentUser, kernel: KernelDep) -> dict[str, Any]:
    mine = {a["id"]: a for a in kernel.list_agents(user.owner)}
    stats = kernel.kernel_stats()
    processes = [p for p in stats.get("processes", []) if p.get("agent_id") in mine]
    models = {a["model"] for a in mine.values()}
    used = {p.get("core") for p in processes} | models
    cores = [c for c in stats.get("cores", []) if c.get("core") in used]
    usage = {}
    for agent_id, agent in mine.items():
        s = kernel.usage_of(agent_id)
        usage[agent["name"]] = {
            "syscalls": s.count,
            "seconds": round(s.seconds, 4),
            "tokens": s.tokens,
        }
    nodes = []
    for node in kernel.nodes():
        held = node.pop("agents")
        node["agents"] = sorted(mine[a]["name"] for a in held if a in mine)
        node["agents_held"] = len(held)
        nodes.append(node)
    return {
        "agents": len(mine),
        "processes": processes,
        "cores": cores,
        "usage": usage,
        "nodes": nodes,
    }
