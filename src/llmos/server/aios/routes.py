"""AIOS's kernel routes: `/query`, the `/core` setup and status routes, `/agents/submit`.

`build_router(user_dependency)` makes them for one way of knowing the user:
the keyless loopback listener (`listener.py`) serves them as its one user;
the main API serves them under `/v1/aios` as the key's user.

| route | what llmos does |
|---|---|
| `POST /query` | an llm, memory, storage or tool query (`service.py`) |
| `GET /core/status`, `GET /status` | every component active (the kernel runs them) |
| `GET /core/llms/list` | the model new AIOS agents get, and the user's agents' models |
| `POST /core/llm/setup` | records the model (`llm_name`, `llm_backend`) and max tokens |
|   | for agents created after |
| `POST /core/{storage,memory,tool,scheduler,factory}/setup` | recorded; llmos serves them |
| `POST /core/cleanup` | forgets the recorded setup; the kernel keeps running |
| `POST /agents/submit` | `agent_config.task` to the llmos agent `agent_id`, as a turn |
| `GET /agents/{execution_id}/status` | running, completed (with the agent's reply) or error |

Setup and executions are kept in memory, per user, while the server runs.
"""

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request

from llmos.access.policy import User
from llmos.errors import InvalidRequest
from llmos.llm.registry import DEFAULT_MODEL
from llmos.server.aios import shapes
from llmos.server.aios.service import AiosService, AiosSettings
from llmos.server.deps import MAX_INT, APIError, KernelDep, State, check_choices, scrub

#: AIOS backends whose models llmos reaches with a provider prefix
BACKENDS = {
    "openai": "openai",
    "vllm": "openai",
    "sglang": "openai",
    "ollama": "ollama",
    "anthropic": "anthropic",
    "claude": "anthropic",
    "bedrock": "bedrock",
}
_KEEP_EXECUTIONS = 1000


@dataclass(slots=True)
class AiosState:
    """The AIOS API's memory while the server runs: setup and executions, per user."""

    settings: dict[str, AiosSettings] = field(default_factory=dict)
    executions: dict[str, dict[int, asyncio.Task[Any]]] = field(default_factory=dict)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def of(self, owner: str) -> AiosSettings:
        return self.settings.setdefault(owner, AiosSettings())


def aios_state(request: Request) -> AiosState:
    return request.app.state.aios


def model_string(llm_name: str, backend: Any) -> str:
    """The llmos model string of AIOS's `llm_name` + `llm_backend`."""
    name = llm_name.strip()
    if not name:
        raise InvalidRequest("llm_name is empty")
    prefix = BACKENDS.get(str(backend or "").lower())
    if prefix and not name.startswith(prefix + "/"):
        return f"{prefix}/{name}"
    if "/" in name or name.startswith("local"):
        return name  # already an llmos model string
    raise InvalidRequest(
        f"llm_backend {backend!r} is not one llmos reaches ({', '.join(BACKENDS)}); or give "
        "llm_name as an llmos model string, e.g. openai/gpt-4o-mini"
    )


def build_router(user_dependency: Callable[..., Any]) -> APIRouter:
    """The AIOS routes, for the user `user_dependency` resolves."""
    router = APIRouter(tags=["aios"])
    UserDep = Annotated[User, Depends(user_dependency)]
    Aios = Annotated[AiosState, Depends(aios_state)]

    def service(kernel: Any, state: Any, aios: AiosState, user: User) -> AiosService:
        return AiosService(kernel, state.config, aios.of(user.owner), user.owner)

    @router.post("/query", summary="An AIOS agent's llm, memory, storage or tool query")
    async def query(
        body: shapes.QueryRequest, user: UserDep, kernel: KernelDep, state: State, aios: Aios
    ) -> dict[str, Any]:
        timer = shapes.Timer()
        svc = service(kernel, state, aios, user)
        image = await svc.agent(body.agent_name)
        data = body.query_data
        try:
            if body.query_type == "llm":
                answer = await svc.llm(image, shapes.LLMQueryData(**data), timer)
            elif body.query_type == "memory":
                answer = await svc.memory(image, shapes.OpsQueryData(**data))
            elif body.query_type == "storage":
                answer = await svc.storage(image, shapes.OpsQueryData(**data))
            else:
                answer = await svc.tool(image, shapes.ToolQueryData(**data))
        except ValueError as e:  # pydantic's ValidationError is one
            if isinstance(e, InvalidRequest):
                raise
            raise InvalidRequest(f"query_data: {_first_error(e)}") from None
        return shapes.envelope(scrub(answer), timer)

    @router.get("/core/status", summary="AIOS components: all served by llmos's kernel")
    async def core_status(_user: UserDep, _kernel: KernelDep) -> dict[str, str]:
        return {c: "active" for c in ("llms", "storage", "memory", "tool", "scheduler", "factory")}

    @router.get("/status", summary="Is the kernel up (AIOS's server check)")
    async def status(_user: UserDep, _kernel: KernelDep) -> dict[str, str]:
        return {"status": "ok", "message": "All core components are active (llmos)."}

    @router.get("/core/llms/list", summary="The models AIOS agents use")
    async def llms(user: UserDep, kernel: KernelDep, state: State, aios: Aios) -> dict[str, Any]:
        default = aios.of(user.owner).model or state.config.default_model or DEFAULT_MODEL
        models = dict.fromkeys([default, *(a["model"] for a in kernel.list_agents(user.owner))])
        return {"status": "success", "llms": [{"name": m, "default": m == default} for m in models]}

    @router.post("/core/llm/setup", summary="Choose the model of AIOS agents created after")
    async def llm_setup(
        body: Annotated[dict[str, Any], Body()],
        user: UserDep,
        kernel: KernelDep,
        state: State,
        aios: Aios,
    ) -> dict[str, Any]:
        name = body.get("llm_name")
        if not isinstance(name, str):
            raise InvalidRequest("llm_name is required")
        model = model_string(name, body.get("llm_backend"))
        check_choices(state.config, model=model)
        kernel.core(model)  # an unknown form is a 400 now, not at the agent's first query
        max_new = body.get("max_new_tokens")
        if max_new is not None and (not isinstance(max_new, int) or max_new < 1):
            raise InvalidRequest("max_new_tokens must be a positive integer")
        settings = aios.of(user.owner)
        settings.model, settings.max_new_tokens = model, max_new
        settings.layers["llm"] = body
        return {"status": "success", "message": f"AIOS agents created from now on use {model}"}

    for layer in ("storage", "memory", "tool", "scheduler", "factory"):
        _add_setup(router, layer, UserDep, Aios)

    @router.post("/core/cleanup", summary="Forget the recorded setup (the kernel keeps running)")
    async def cleanup(user: UserDep, aios: Aios) -> dict[str, str]:
        aios.settings.pop(user.owner, None)
        return {"status": "success", "message": "setup forgotten; the llmos kernel keeps running"}

    @router.post("/agents/submit", summary="Give an agent a task: a message, run as a turn")
    async def submit(
        body: Annotated[dict[str, Any], Body()],
        user: UserDep,
        kernel: KernelDep,
        state: State,
        aios: Aios,
    ) -> dict[str, Any]:
        agent_id, config = body.get("agent_id"), body.get("agent_config")
        task = config.get("task") if isinstance(config, dict) else None
        if not isinstance(agent_id, str) or not isinstance(task, str) or not task.strip():
            raise InvalidRequest("send {agent_id, agent_config: {task}}")
        image = await service(kernel, state, aios, user).agent(agent_id)
        mine = aios.executions.setdefault(user.owner, {})
        execution_id = next(aios.ids)
        mine[execution_id] = state.spawn(kernel.send(image.id, task, owner=user.owner))
        while len(mine) > _KEEP_EXECUTIONS:
            mine.pop(next(iter(mine)))
        return {
            "status": "success",
            "execution_id": execution_id,
            "message": f"Agent {agent_id} submitted for execution",
        }

    @router.get("/agents/{execution_id}/status", summary="A submitted task's status")
    async def execution_status(
        execution_id: Annotated[int, Path(ge=0, le=MAX_INT)], user: UserDep, aios: Aios
    ) -> dict[str, Any]:
        task = aios.executions.get(user.owner, {}).get(execution_id)
        if task is None:
            raise APIError(404, f"no execution {execution_id}", "not_found_error")
        if not task.done():
            return {
                "status": "running",
                "message": "Execution in progress",
                "execution_id": execution_id,
            }
        if task.cancelled() or task.exception() is not None:
            error = "cancelled" if task.cancelled() else str(task.exception())
            return {
                "status": "error",
                "error": {"message": scrub(error)},
                "execution_id": execution_id,
            }
        turn = task.result()
        if turn.stop_reason == "error":
            return {
                "status": "error",
                "error": {"message": scrub(str(turn.error))},
                "execution_id": execution_id,
            }
        return {"status": "completed", "result": scrub(turn.reply), "execution_id": execution_id}

    return router


def _add_setup(router: APIRouter, layer: str, user_dep: Any, aios_dep: Any) -> None:
    @router.post(f"/core/{layer}/setup", summary=f"Record AIOS's {layer} setup (llmos serves it)")
    async def setup(
        body: Annotated[dict[str, Any], Body()], user: user_dep, aios: aios_dep
    ) -> dict[str, str]:
        aios.of(user.owner).layers[layer] = body
        return {"status": "success", "message": f"{layer}: served by llmos's kernel"}


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return f"{where}: {first.get('msg')}" if where else str(first.get("msg"))
    return str(e)
