"""Preemptible generations on the embedded llama.cpp model: what `LlamaCppCore.start()` returns.

A `LlamaCppGeneration` is one request run in slices. `run(n)` evaluates the
prompt on its first call (however long) and samples up to n more tokens, in a
worker thread under the model slot's lock; `suspend()` copies the sequence's
KV state out of the model into the slot's `KVStore` (a few milliseconds) so
another generation can use the model; `resume()` copies it back. `chat()` is
`start` plus one `run` to the end. A generation sees its core only through
`ModelHost`, the few things it needs of it (the core satisfies it; this
module does not import the core).

Exactness: every slice ends with its last sampled token not yet evaluated, and
the next slice starts by evaluating it. A resumed generation therefore makes
the same decode calls, in the same order, on a byte-identical KV cache as an
uninterrupted one, and at temperature 0 produces the same tokens. What else
sampling depends on lives in the generation and nobody else touches it: the
grammar sampler (a llama.cpp object made for this generation from the core's
compiled grammar text), the random generator, the tokens sampled so far.

`ModelSlot` (`llm/llamacpp_slot.py`) records whose tokens are in the model's
one sequence. A generation displaced without an explicit `suspend()` (two
callers sharing a core outside the run queue) is saved as a suspended one is,
so the slot's lock is all that is needed for safety.

With `snapshot_switches=False` a suspended generation keeps nothing: `resume()`
re-evaluates its prompt and generated tokens (what a context switch costs
without KV snapshots; the benchmark compares both). Batched and one-by-one
evaluation may differ in the last bits, so exactness is promised only with
snapshots.

Streaming: with `request.on_delta` set, each sampled token's text is
reported as soon as it is sampled (in the event loop's thread, through
`call_soon_threadsafe`), the tool call as `Delta(raw_call=True)`. What was
reported is kept in the generation, so a preempted and resumed generation
goes on where it stopped: no piece twice, none lost. An incomplete UTF-8
character, and text that may yet turn into a stop string, wait for the next
token; the pieces add up to the finished text (before `result()` strips it).

Left out: several sequences in one batch (continuous batching), preempting a
prompt evaluation halfway (the first slice runs the whole prefill), and moving
a suspended generation to another core.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from llmos.llm.core import (
    BadRequest,
    ChatRequest,
    ChatResponse,
    ContextLengthExceeded,
    CoreUnavailable,
    Delta,
    Message,
    ToolSpec,
    Usage,
)
from llmos.llm.llamacpp_slot import ModelSlot, live_tokens
from llmos.llm.toolcalls import parse_call

if TYPE_CHECKING:
    from llama_cpp import Llama, LlamaGrammar

__all__ = ["LlamaCppGeneration", "ModelHost"]

_ids = itertools.count(1)


class ModelHost(Protocol):
    """What a generation needs of the core it runs on (`LlamaCppCore` is one)."""

    name: str
    context_window: int
    seed: int
    tool_max_tokens: int  # the most tokens a tool call may take
    ignore_eos: bool  # generate exactly max_tokens (benchmarks)
    slot: ModelSlot

    def load(self) -> Llama:
        """The model, loaded on first use."""
        ...

    def prompt_tokens(
        self, llm: Llama, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> list[int]: ...

    def grammar(self, tools: Sequence[ToolSpec]) -> LlamaGrammar:
        """The compiled grammar of a call to one of `tools`."""
        ...

    def text_tokens(self, llm: Llama, text: str) -> list[int]:
        """A plain-text prompt as tokens, BOS first."""
        ...

    def text_grammar(self, gbnf: str) -> LlamaGrammar:
        """A compiled GBNF grammar for plain-text output."""
        ...


class LlamaCppGeneration:
    """One request on a `LlamaCppCore`, run in slices. Implements `llmos.llm.core.Generation`."""

    def __init__(self, core: ModelHost, request: ChatRequest) -> None:
        self.core = core
        self.request = request
        self.id = next(_ids)
        # Tools are rendered into the prompt even with tool_choice "none" (as
        # OpenAI's API keeps them in context): the prompt then shares its
        # cached prefix with the agent's tool-calling requests. Only the
        # grammar that forces a call depends on tool_choice.
        self.use_tools = bool(request.tools) and request.tool_choice != "none"
        self.tools = request.tools
        self.max_tokens = max(1, request.max_tokens)
        if self.use_tools:
            self.max_tokens = min(self.max_tokens, core.tool_max_tokens)
        self.cache_key = request.cache_key
        self.stop = [s for s in request.stop if s] if not self.use_tools else []
        self.prompt: list[int] | None = None  # tokenized on the first run (needs the model)
        self.out: list[int] = []
        self.finish: str | None = None  # "stop" | "length" once finished
        self.text: str | None = None
        self.snapshot: str | None = None  # store key of the saved state while displaced
        self.suspended = False
        # Evaluation counters: tokens this generation evaluated at least once
        # (`high`), prompt tokens it evaluated, and tokens evaluated again.
        self.high = 0
        self.cached_prompt_tokens = 0
        self.prompt_evaluated = 0
        self.reevaluated = 0
        self.suspensions = 0
        self._sampler: Any = None  # llama.cpp grammar sampler, this generation's own
        self._picker: _Picker | None = None
        self._epoch = -1  # the core's model generation the sampler belongs to
        self._closed = False
        self._cancel = threading.Event()  # set by close(): a running slice stops early
        self.streamed = ""  # the text reported to request.on_delta so far
        self._emit: Any = None  # on_delta, called in its event loop (bind_loop)

    def target(self) -> list[int]:
        """Every token whose KV this generation needs: prompt, then what it sampled."""
        assert self.prompt is not None
        return self.prompt + self.out

    # --- the Generation protocol ---------------------------------------------------

    async def run(self, max_new_tokens: int) -> bool:
        self.bind_loop(asyncio.get_running_loop())
        # llama.cpp releases the GIL while it computes: the event loop stays free.
        return await asyncio.to_thread(self.run_sync, max_new_tokens)

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Report streamed pieces to `request.on_delta` in `loop`'s thread."""
        sink = self.request.on_delta
        if sink is not None and self._emit is None:
            self._emit = lambda delta: loop.call_soon_threadsafe(sink, delta)

    async def suspend(self) -> None:
        await asyncio.to_thread(self.suspend_sync)

    async def resume(self) -> None:
        await asyncio.to_thread(self.resume_sync)

    async def close(self) -> None:
        self._cancel.set()
        await asyncio.to_thread(self.close_sync)

    def result(self) -> ChatResponse:
        if self.finish is None or self.prompt is None or self.text is None:
            raise RuntimeError("result() before the generation finished")
        usage = Usage(
            prompt_tokens=len(self.prompt),
            completion_tokens=len(self.out),
            cached_prompt_tokens=self.cached_prompt_tokens,
        )
        if not self.use_tools:
            return ChatResponse(content=self.text.strip(), usage=usage, finish_reason=self.finish)
        call = parse_call(self.text, self.request.tools)
        return ChatResponse(
            content=None,
            tool_calls=[call],
            usage=usage,
            finish_reason="length" if self.finish == "length" else "tool_calls",
        )

    # --- the same, in the calling thread -------------------------------------------

    def run_sync(self, max_new_tokens: int) -> bool:
        core = self.core
        with core.slot.lock:
            self._check_usable()
            if self.finish is not None or max_new_tokens <= 0:
                return self.finish is not None
            llm = core.load()
            if self.prompt is None:
                self._begin(llm)
            self.suspended = False
            try:
                core.slot.enter(self, llm)
                self._evaluate(llm, len(self.target()))
                return self._sample(llm, max_new_tokens)
            except RuntimeError as exc:  # llama_decode failed: the cache is unknown
                core.slot.lost(llm)
                self.free_sampler()
                self._closed = True
                raise CoreUnavailable(f"llama.cpp failed ({core.name}): {exc}") from exc

    def suspend_sync(self) -> None:
        core = self.core
        with core.slot.lock:
            if self._closed or self.finish is not None or self.suspended:
                return
            self.suspended = True
            self.suspensions += 1
            core.slot.suspends += 1
            if core.slot.gen is self:  # then the model is loaded: load() only returns it
                core.slot.vacate(core.load())

    def resume_sync(self) -> None:
        """Put the saved state back (or, without a snapshot, re-evaluate it) now,
        so the switch's cost is paid here rather than inside the next slice."""
        core = self.core
        with core.slot.lock:
            self._check_usable()
            self.suspended = False
            if self.finish is not None or self.prompt is None or core.slot.gen is self:
                return
            llm = core.load()
            try:
                core.slot.enter(self, llm)
                # The last sampled token is evaluated by the next slice.
                self._evaluate(llm, len(self.target()) - 1)
            except RuntimeError as exc:
                core.slot.lost(llm)
                raise CoreUnavailable(f"llama.cpp failed ({core.name}): {exc}") from exc

    def close_sync(self) -> None:
        core = self.core
        with core.slot.lock:
            if self._closed and self._sampler is None and self.snapshot is None:
                return
            self._closed = True
            core.slot.leave(self)
            if self.snapshot is not None:
                core.slot.store.drop(self.snapshot)
                self.snapshot = None
            self.free_sampler()
            core.slot.live.discard(self)

    # --- inside the lock -----------------------------------------------------------

    def _check_usable(self) -> None:
        if self._closed and self.finish is None:
            raise CoreUnavailable("the generation was closed")
        if self.prompt is not None and self.finish is None and self._epoch != self.core.slot.epoch:
            raise CoreUnavailable(f"the model was unloaded ({self.core.name})")

    def _begin(self, llm: Llama) -> None:
        """First run: tokenize, check the window, make this generation's sampler."""
        core = self.core
        if self.request.prompt is not None:
            prompt = core.text_tokens(llm, self.request.prompt)
        else:
            prompt = core.prompt_tokens(llm, self.request.messages, self.tools)
        if len(prompt) + self.max_tokens > core.context_window:
            raise ContextLengthExceeded(
                f"prompt of {len(prompt)} tokens + {self.max_tokens} to generate exceeds "
                f"the context window of {core.context_window} tokens ({core.name})"
            )
        gbnf = None if self.use_tools else self.request.grammar
        if self.use_tools or gbnf:
            import llama_cpp

            grammar = core.text_grammar(gbnf) if gbnf else core.grammar(self.tools)
            # A sampler of its own: the grammar's parse state advances with
            # every accepted token and must not be shared with another request.
            self._sampler = llama_cpp.llama_sampler_init_grammar(
                llm._model.vocab, grammar._grammar.encode(), grammar._root.encode()
            )
            if not self._sampler:
                self._sampler = None
                raise BadRequest("llama.cpp could not parse the tool-call grammar")
        self._picker = _Picker(llm.n_vocab(), self._sampler, self.request.temperature, core.seed)
        self.prompt = prompt
        slot = core.slot
        self._epoch = slot.epoch
        slot.live.add(self)
        slot.requests += 1
        slot.prompt_tokens += len(prompt)

    def _evaluate(self, llm: Llama, upto: int) -> None:
        """Make the model hold the first `upto` tokens of `target()`, evaluating
        only what it lacks (at least one token when logits are needed: upto = all)."""
        target = self.target()[:upto]
        need_logits = upto == len(self.target())
        if upto <= 0 or (not need_logits and llm.n_tokens == upto and live_tokens(llm) == target):
            return
        reuse = self.core.slot.prefill(llm, target)
        assert self.prompt is not None
        slot = self.core.slot
        evaluated_prompt = max(0, len(self.prompt) - reuse)
        again = max(0, min(self.high, upto) - reuse)
        if self.high == 0:
            self.cached_prompt_tokens = reuse
            slot.prompt_tokens_reused += min(reuse, len(self.prompt))
        self.prompt_evaluated += evaluated_prompt
        slot.prompt_tokens_evaluated += evaluated_prompt
        self.reevaluated += again
        slot.reevaluated_tokens += again
        self.high = max(self.high, upto)

    def _sample(self, llm: Llama, n: int) -> bool:
        """Sample up to `n` tokens after the evaluated ones; True once finished.

        Each token is evaluated before the next is sampled, except the last of
        the slice: the next slice evaluates it (see the module docstring).

        Why not `Llama.create_completion(grammar=...)`: its sampler runs the
        grammar over all 262k vocabulary entries for every token (7.8 tokens/s
        measured on 2 cores). Here the grammar first checks only the model's
        best candidates and masks the whole vocabulary only when none of them
        fits, as llama.cpp's own common sampler does: 36 tokens/s, about the
        unconstrained speed, and for greedy decoding the same output.
        """
        import llama_cpp

        core = self.core
        vocab = llm._model.vocab
        ctx = llm.ctx
        n_vocab = llm.n_vocab()
        sot = core.slot.start_of_turn_id
        picker = self._picker
        assert picker is not None
        for i in range(n):
            if self._cancel.is_set():
                return False
            logits = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)
            )
            if self._sampler is not None and sot is not None:
                # The grammar lets a turn marker through inside a JSON string
                # (its piece is plain characters); it would vanish from the text
                # anyway. The buffer is rewritten by the next decode.
                logits[sot] = -np.inf
            token = picker(logits)
            # A base model may open a new turn instead of closing its own;
            # -1: the grammar allows nothing more.
            while token >= 0 and (token == sot or llama_cpp.llama_vocab_is_eog(vocab, token)):
                if not core.ignore_eos:
                    break
                logits[token] = -np.inf  # benchmarks: generate exactly max_tokens
                token = picker(logits)
            if token < 0 or token == sot or llama_cpp.llama_vocab_is_eog(vocab, token):
                self._finish(llm, "stop")
                return True
            if self._sampler is not None:
                llama_cpp.llama_sampler_accept(self._sampler, token)
            self.out.append(token)
            core.slot.completion_tokens += 1
            if self.stop and self._stopped(llm):
                self._finish(llm, "stop")
                return True
            if self._emit is not None:
                self._stream(llm.detokenize(self.out).decode("utf-8", errors="replace"), False)
            if len(self.out) >= self.max_tokens:
                self._finish(llm, "length")
                return True
            if i < n - 1:
                llm.eval([token])
                self.high = len(self.target())
        return False

    def _stopped(self, llm: Llama) -> bool:
        """Whether the output now holds a stop string (outputs with stops are short)."""
        text = llm.detokenize(self.out).decode("utf-8", errors="replace")
        return any(s in text for s in self.stop)

    def _finish(self, llm: Llama, reason: str) -> None:
        self.finish = reason
        text = llm.detokenize(self.out).decode("utf-8", errors="replace")
        for s in self.stop:
            text = text.split(s, 1)[0]
        self.text = text
        if self._emit is not None:
            self._stream(text, True)
        self.free_sampler()
        self.core.slot.leave(self)

    def _stream(self, text: str, final: bool) -> None:
        """Report what `text` (all the output so far) adds to what was reported."""
        if not final:
            if text.endswith("\ufffd"):  # a character cut between tokens
                text = text.rstrip("\ufffd")
            hold = max((len(s) for s in self.stop), default=1) - 1
            if hold > 0:  # the tail may yet become a stop string: wait
                text = text[:-hold]
        if len(text) <= len(self.streamed) or not text.startswith(self.streamed):
            return
        piece, self.streamed = text[len(self.streamed) :], text
        self._emit(Delta(piece, call=0, raw_call=True) if self.use_tools else Delta(piece))

    def free_sampler(self) -> None:
        if self._sampler is not None:
            import llama_cpp

            llama_cpp.llama_sampler_free(self._sampler)
            self._sampler = None
            if self._picker is not None:
                self._picker.grammar = None


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
        if len(ids) == 0:  # the grammar allows nothing (not even end of text)
            return -1
        if greedy:
            return int(ids[np.argmax(vals)])
        z = (vals - vals.max()) / self.temperature
        p = np.exp(z)
        return int(self.rng.choice(ids, p=p / p.sum()))
