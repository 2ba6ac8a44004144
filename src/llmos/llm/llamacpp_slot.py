"""`ModelSlot`: the embedded model's one sequence, who holds it, and the saved states of the others.

A llama.cpp model here decodes one sequence at a time. Its occupant is a live
generation (`llm/llamacpp_generation.py`), or the agent (`ChatRequest.cache_key`)
whose finished request left its tokens there. Whoever needs the model next
first displaces the occupant, saving its state in the `KVStore`: a live
generation's as its snapshot, an agent's as that agent's prompt state, so
when agents alternate (A, B, A, ...) A's next request restores A's state
instead of re-evaluating A's prompt from the first token that differs from B's.

The slot also holds what every generation on the model shares: the lock that
serialises them, the generations holding llama.cpp samplers (freed before the
model is), the count of unloads (`epoch`), and `prefill`, which makes the
sequence hold a list of tokens while evaluating as few as it can.

With `persist_dir` set, agents' states outlive the process: `persist` (when
the model is unloaded) writes them there, and an agent whose state is
neither in the model nor in the store is looked for there once
(`KVStore.load_persisted`, checked against `identity`, the model file's);
it is used only if its tokens are a longer prefix of the new prompt than what
the model holds, like any saved state.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from llmos.llm.kvstore import KVStore, common_prefix, forget_agent_files

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["SHARE_MIN_TOKENS", "ModelSlot", "Occupant", "live_tokens", "set_live_tokens"]

# Restoring a saved state costs a few milliseconds (about 18 KB per token);
# evaluating 64 tokens costs about 300 ms on the embedded model.
SHARE_MIN_TOKENS = 64


class Occupant(Protocol):
    """What the slot needs of a generation: its identity, agent, tokens and snapshot."""

    id: int
    cache_key: str | None
    snapshot: str | None  # store key of its saved state while displaced
    high: int  # tokens it has evaluated at least once

    def target(self) -> list[int]: ...

    def free_sampler(self) -> None: ...


def live_tokens(llm: Llama) -> list[int]:
    """The tokens whose KV is in the model's sequence 0 (the Llama object tracks them)."""
    return llm.input_ids[: llm.n_tokens].tolist()


def set_live_tokens(llm: Llama, tokens: list[int]) -> None:
    """After a state restore: tell the Llama object which tokens its cache now holds."""
    llm.input_ids[: len(tokens)] = tokens
    llm.n_tokens = len(tokens)


class ModelSlot:
    """The model's one sequence: who occupies it, and the saved states of the others.

    Every method is called with `lock` held; it guards all fields here and the
    model's KV cache (the Llama object and its token history are not safe to
    share between threads).
    """

    def __init__(self, store: KVStore, *, snapshots: bool) -> None:
        self.lock = threading.Lock()
        self.store = store
        self.snapshots = snapshots
        # Set when the model is loaded: Gemma 3's sliding window (0: none) and
        # the id of its turn marker, which a generation must never emit.
        self.n_swa = 0
        self.start_of_turn_id: int | None = None
        # Generations holding llama.cpp samplers, freed before the model is;
        # `epoch` counts unloads, so a generation outliving one fails cleanly.
        self.live: weakref.WeakSet[Occupant] = weakref.WeakSet()
        self.epoch = 0
        # At most one of these is set: a live (unfinished) generation whose
        # state is in the model, or the agent whose finished request left it.
        self.gen: Occupant | None = None
        self.agent: str | None = None
        # counters for stats()
        self.requests = 0
        self.prompt_tokens = 0
        self.prompt_tokens_evaluated = 0
        self.prompt_tokens_reused = 0
        self.reevaluated_tokens = 0  # evaluated again after a switch without a snapshot
        self.completion_tokens = 0
        self.hits = 0  # first prefill started from the agent's saved state
        self.live_hits = 0  # ... from the agent's state still in the model
        self.misses = 0  # ... from neither (the agent had a cache key)
        self.shared_hits = 0  # ... from another agent's saved state (a shared head)
        self.disk_hits = 0  # ... from a state an earlier process persisted
        # Where agents' states are persisted across processes (None: nowhere),
        # the model's identity they must match, and the agents looked for there.
        self.persist_dir: Path | None = None
        self.identity: dict[str, Any] | None = None
        self._looked: set[str] = set()
        self.suspends = 0
        self.snapshot_restores = 0
        self.resumes_without_snapshot = 0

    def enter(self, gen: Occupant, llm: Llama) -> None:
        """Put `gen`'s saved state (if any) in the model, displacing the occupant.

        Afterwards the model holds some prefix of `gen`'s tokens (possibly
        empty); the caller evaluates the rest.
        """
        if self.gen is gen:
            return
        own_agent_in_place = gen.cache_key is not None and self.agent == gen.cache_key
        self.vacate(llm, incoming=gen)
        self.gen = gen
        if gen.snapshot is not None:
            snap, gen.snapshot = gen.snapshot, None
            tokens = self.store.restore(snap, llm.ctx)
            if tokens is not None:
                set_live_tokens(llm, tokens)
                self.snapshot_restores += 1
                return
            set_live_tokens(llm, [])  # lost or failed: the sequence is empty now
        if gen.high > 0:  # displaced before, and nothing saved: re-evaluated
            self.resumes_without_snapshot += 1
        first = gen.high == 0
        key = _agent_key(gen.cache_key)
        saved = self.store.tokens(key) if key is not None else None
        from_disk = False
        if saved is None and key is not None and first and self._load_persisted(key):
            saved, from_disk = self.store.tokens(key), True
        if saved is not None:
            target = gen.target()
            if common_prefix(saved, target) > common_prefix(live_tokens(llm), target):
                tokens = self.store.restore(key, llm.ctx)
                set_live_tokens(llm, tokens or [])
                if first and tokens is not None:
                    self.hits += 1
                    self.disk_hits += from_disk
                    return
        if first and gen.cache_key is not None:
            if own_agent_in_place:
                self.live_hits += 1
            else:
                self.misses += 1
        if first and not own_agent_in_place:
            self._share_prefix(gen, llm)

    def _share_prefix(self, gen: Occupant, llm: Llama) -> None:
        """Start a newcomer from whichever saved state shares most of its prompt
        (another agent's, with the same tools and system prompt), when that
        beats what the model holds by enough to pay for the restore."""
        target = gen.target()
        live = common_prefix(live_tokens(llm), target)
        key, shared = self.store.longest_prefix(target)
        if key is None or shared < live + SHARE_MIN_TOKENS:
            return
        tokens = self.store.restore(key, llm.ctx, keep=True)
        set_live_tokens(llm, tokens or [])
        if tokens is not None:
            self.shared_hits += 1

    def _load_persisted(self, key: str) -> bool:
        """Take `key`'s persisted state into the store (looked for once per process)."""
        if self.persist_dir is None or self.identity is None or key in self._looked:
            return False
        self._looked.add(key)
        return self.store.load_persisted(key, self.persist_dir, self.identity)

    def persist(self, llm: Llama | None) -> int:
        """Write the agents' states (the one in the model too) to `persist_dir`."""
        if self.persist_dir is None or self.identity is None:
            return 0
        if llm is not None:
            self.vacate(llm)
        return self.store.persist(self.persist_dir, self.identity)

    def vacate(self, llm: Llama, incoming: Occupant | None = None) -> None:
        """Save the occupant's state so the model can be used by someone else.

        The KV cache itself is left as it is: the next prompt may share a
        prefix with it (`prefill` reuses it).
        """
        gen, self.gen = self.gen, None
        agent, self.agent = self.agent, None
        if gen is not None:
            if self.snapshots and llm.n_tokens > 0:
                key = f"gen:{gen.id}"
                if self.store.save(key, llm.ctx, live_tokens(llm)):
                    gen.snapshot = key
            return
        # An agent's next request extends its own state: nothing to keep then.
        keep = agent is not None and (incoming is None or incoming.cache_key != agent)
        if keep and llm.n_tokens > 0:
            self.store.save(f"agent:{agent}", llm.ctx, live_tokens(llm))

    def leave(self, gen: Occupant) -> None:
        """`gen` finished or was closed: its tokens stay as its agent's state."""
        if self.gen is gen:
            self.gen = None
            self.agent = gen.cache_key

    def lost(self, llm: Llama) -> None:
        """A decode failed: the cache's content is unknown, so forget it."""
        import llama_cpp

        self.gen = None
        self.agent = None
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(llm.ctx), True)
        llm.n_tokens = 0

    def prefill(self, llm: Llama, tokens: list[int]) -> int:
        """Evaluate `tokens`, reusing the KV cache of the longest common prefix.

        Returns how many prompt tokens were reused. An agent's prompt is
        append-only, so a step usually evaluates only what was added since the
        previous one. Gemma 3's sliding-window layers need the 512 positions
        before the reuse point: the full-size cache the core loads the model
        with keeps them, and should a cache have dropped them, the prompt is
        evaluated from the start rather than attending to a partial window
        (the llama.cpp server checks the same).
        """
        import llama_cpp

        prefix = common_prefix(live_tokens(llm), tokens)
        # At least one token must be evaluated to have logits to sample from.
        reuse = min(prefix, len(tokens) - 1)
        memory = llama_cpp.llama_get_memory(llm.ctx)
        if reuse > 0 and self.n_swa > 0:
            pos_min = llama_cpp.llama_memory_seq_pos_min(memory, 0)
            if pos_min > max(0, reuse - self.n_swa):
                reuse = 0
        if reuse > 0 and not llama_cpp.llama_memory_seq_rm(memory, 0, reuse, -1):
            reuse = 0
        if reuse == 0:
            llama_cpp.llama_memory_clear(memory, True)
        llm.n_tokens = reuse
        llm.eval(tokens[reuse:])
        return reuse

    def unload(self) -> None:
        """The model is being freed: free the generations' samplers first, and
        make every generation still holding one fail cleanly (`epoch`)."""
        for gen in list(self.live):
            gen.free_sampler()
        self.live = weakref.WeakSet()
        self.gen = self.agent = None
        self.store.close()
        self.epoch += 1

    def clear(self, llm: Llama | None) -> None:
        """Forget every agent's saved state and the model's content (suspended
        generations keep their snapshots)."""
        if llm is not None:
            self.vacate(llm)
            self.lost(llm)
        for key in [k for k in self.store if k.startswith("agent:")]:
            self.store.drop(key)
            if self.persist_dir is not None:
                self.store.forget_persisted(key, self.persist_dir)
        # and none is to be taken back from disk: forgotten means forgotten
        self._looked = _Everything()

    def forget_agent(self, agent_id: str) -> None:
        """The agent was deleted: drop its saved states, here and on disk, and never
        save the model's content as its state again (`persist` at close would)."""
        # cache keys are the agent's id, or its id and a suffix (`ID:extract`)
        if self.agent is not None and self.agent.split(":", 1)[0] == agent_id:
            self.agent = None  # the tokens stay in the model, owned by no one
        self.store.forget_agent(agent_id)
        if self.persist_dir is not None:
            forget_agent_files(self.persist_dir, agent_id)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "prompt_tokens_evaluated": self.prompt_tokens_evaluated,
            "prompt_tokens_reused": self.prompt_tokens_reused,
            "reevaluated_tokens": self.reevaluated_tokens,
            "completion_tokens": self.completion_tokens,
            "hits": self.hits,
            "live_hits": self.live_hits,
            "misses": self.misses,
            "shared_hits": self.shared_hits,
            "disk_hits": self.disk_hits,
            "suspends": self.suspends,
            "snapshot_restores": self.snapshot_restores,
            "resumes_without_snapshot": self.resumes_without_snapshot,
            "store": self.store.stats(),
        }


class _Everything(set[str]):
    """A set that holds every key (after a clear: no agent is looked for on disk)."""

    def __contains__(self, _key: object) -> bool:
        return True


def _agent_key(cache_key: str | None) -> str | None:
    return f"agent:{cache_key}" if cache_key is not None else None
