"""Saved KV states of a llama.cpp sequence: in RAM up to a budget, then on disk, then gone.

The embedded core keeps one sequence in the model's KV cache at a time. When
another request needs the model, the state of the sequence in place is copied
out with `llama_state_seq_get_data` (milliseconds, where re-evaluating its
tokens takes seconds) and kept here under a key — a suspended generation, or an
agent's cache key — together with the tokens it holds. Restoring it with
`llama_state_seq_set_data` lets that sequence continue without evaluating any
of those tokens again.

* RAM: entries live in ctypes buffers, up to `ram_bytes` in all (free buffers
  kept for reuse count too). Buffers are allocated with headroom and reused, so
  a generation suspended again and again, or an agent whose prompt grows by a
  few tokens per step, does not allocate (and zero) megabytes each time.
* Disk: past the RAM budget the least recently used entries are written to
  plain files of their state bytes under `directory`, up to `disk_bytes`;
  past that the least recently used files are deleted. A lost entry costs a
  re-evaluation later, never a wrong answer.
* `restore` takes an entry out: once restored, the state lives in the model
  again, and its owner saves it anew when it is displaced.

`longest_prefix` finds the entry sharing most of a new prompt (agents on one
core share their prompt's head) and `restore(keep=True)` loads it without
taking it out, so a newcomer starts from another agent's state.

Across processes: `persist` writes agents' states to files of their own (one
per key, in a directory that outlives the store: `$LLMOS_HOME/kv/agents`),
each with a header naming the model file's identity (path, size, mtime, the
context size, llama.cpp's version) and the tokens the state holds;
`load_persisted` takes one back only if the identity matches, so a state of
another model or context is a clean miss. Whether its tokens are still the
agent's prompt is the caller's check (a prefix match), as for any entry.
When an agent is deleted, `forget_agent` drops its entries (`agent:ID` and
`agent:ID:...`, e.g. its memory extraction's) and `forget_agent_files`
deletes its files, found by the key in each file's header, not by name alone.

Left out: storing one copy of a common prefix between keys (two agents with
the same system prompt each keep a whole copy), compression, and locking the
persisted files between processes (written whole under a temporary name, then
renamed: a reader sees an old file or a new one, never a torn one). The
persisted files are kept within the disk budget too, newest first.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PERSIST_MIN_TOKENS",
    "KVStore",
    "agent_keys",
    "common_prefix",
    "default_kv_dir",
    "forget_agent_files",
    "persisted_path",
]

_MiB = 1 << 20
# Shorter states are cheaper to evaluate again than to keep on disk.
PERSIST_MIN_TOKENS = 64
_FORMAT = 1
_MAX_HEADER = 4 << 20  # tokens as JSON: far more than any context holds


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:80]


def _file_name(key: str) -> str:
    """A file name for `key`: readable when it is plain, unique either way."""
    return f"{_safe(key)}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.kv"


def persisted_path(directory: Path, key: str) -> Path:
    """The file `persist` writes `key`'s state to in `directory`."""
    return directory / _file_name(key)


def agent_keys(agent_id: str) -> tuple[str, str]:
    """The key of an agent's state and the prefix of its other states' keys."""
    return f"agent:{agent_id}", f"agent:{agent_id}:"


def _is_agents(key: str, agent_id: str) -> bool:
    own, others = agent_keys(agent_id)
    return key == own or key.startswith(others)


def forget_agent_files(directory: Path, agent_id: str) -> int:
    """Delete the agent's persisted states in `directory`; returns how many went.

    A file's name is its key cut to 80 characters plus a hash, so the name only
    narrows the search: the key in the header decides (another agent whose id
    shares the first 74 characters keeps its file)."""
    stem = _safe(agent_keys(agent_id)[0])  # no glob metacharacters left in it
    removed = 0
    with contextlib.suppress(OSError):
        for path in directory.glob(f"{stem}*.kv"):
            try:
                with open(path, "rb") as f:
                    key = json.loads(f.readline(_MAX_HEADER)).get("key")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(key, str) and _is_agents(key, agent_id):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    return removed


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens `a` and `b` share from the start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def default_kv_dir() -> Path:
    """`$LLMOS_HOME/kv` (default ~/.llmos/kv): a real disk, so spilling frees RAM.

    /dev/shm would be faster but is memory too: spilling there would not bring
    the process under its RAM budget.
    """
    home = os.environ.get("LLMOS_HOME") or str(Path.home() / ".llmos")
    return Path(home).expanduser() / "kv"


@dataclass(slots=True)
class _Entry:
    tokens: list[int]  # the tokens whose KV the state holds, from position 0
    nbytes: int  # size of the state
    buf: Any = None  # ctypes c_uint8 array while in RAM
    path: Path | None = None  # file while on disk


class KVStore:
    """Sequence states by key, least recently used spilled to disk, then dropped.

    Not thread-safe, except `stats()`: the core calls it under its model lock.
    """

    def __init__(self, ram_bytes: int, disk_bytes: int, directory: Path | None = None) -> None:
        self.ram_budget = max(0, ram_bytes)
        self.disk_budget = max(0, disk_bytes)
        self._base = directory
        self._dir: Path | None = None  # created on first spill
        self._entries: OrderedDict[str, _Entry] = OrderedDict()  # oldest first
        self._free: list[Any] = []  # buffers for reuse
        self._names = itertools.count()
        self.ram_used = 0  # capacity of buffers held (entries + free)
        self.disk_used = 0
        self.on_disk = 0  # entries spilled (kept as a count so stats() never iterates)
        # counters for stats()
        self.saves = 0
        self.restores = 0
        self.failed = 0
        self.spilled = 0
        self.loaded_from_disk = 0
        self.dropped = 0
        self.save_seconds = 0.0
        self.restore_seconds = 0.0
        self.persisted = 0
        self.loaded_persisted = 0
        self.persist_misses = 0  # files found but not taken (another model, unreadable)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        """Keys from least to most recently saved (a copy: safe to drop while iterating)."""
        return iter(list(self._entries))

    def tokens(self, key: str) -> list[int] | None:
        """The tokens an entry holds (without making it recently used), or None."""
        e = self._entries.get(key)
        return e.tokens if e is not None else None

    # --- the two verbs ---------------------------------------------------------------

    def save(self, key: str, ctx: Any, tokens: Sequence[int]) -> bool:
        """Copy sequence 0's state of `ctx` under `key` (replacing an older one)."""
        import llama_cpp

        t0 = time.perf_counter()
        size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))
        old = self._entries.pop(key, None)
        if old is not None and old.buf is not None and len(old.buf) >= size:
            buf, old.buf = old.buf, None  # the common case: same key, a few tokens more
        else:
            buf = self._buffer(size)
        if old is not None:
            self._discard(old)
        n = int(llama_cpp.llama_state_seq_get_data(ctx, buf, len(buf), 0))
        if n <= 0 or n > len(buf):
            self.failed += 1
            self._release(buf)
            return False
        self._entries[key] = _Entry(tokens=list(tokens), nbytes=n, buf=buf)
        self.saves += 1
        self._enforce_budgets()
        self.save_seconds += time.perf_counter() - t0
        return True

    def longest_prefix(self, tokens: Sequence[int]) -> tuple[str | None, int]:
        """The entry in RAM sharing the longest prefix with `tokens`, and its length.

        Agents on one core share their prompt's head (tools, system prompt), so
        another agent's saved state is often most of a newcomer's prompt.
        """
        best, best_n = None, 0
        for key, e in self._entries.items():
            if e.buf is None or not e.tokens or e.tokens[0] != tokens[0]:
                continue
            n = common_prefix(e.tokens, tokens)
            if n > best_n:
                best, best_n = key, n
        return best, best_n

    def restore(self, key: str, ctx: Any, *, keep: bool = False) -> list[int] | None:
        """Load `key`'s state into sequence 0 of `ctx` and remove the entry
        (`keep`: leave it in place, for a state in RAM that others may share).

        Returns the tokens it holds, or None when there is no such entry or the
        load failed (then sequence 0 is empty).
        """
        import llama_cpp

        if keep:
            e = self._entries.get(key)
            if e is None or e.buf is None:
                return None
            self._entries.move_to_end(key)
        else:
            e = self._entries.pop(key, None)
        if e is None:
            return None
        t0 = time.perf_counter()
        mem = llama_cpp.llama_get_memory(ctx)
        # One sequence at a time: whatever is in the cache now has been saved
        # by its owner (or given up) before this call.
        llama_cpp.llama_memory_clear(mem, True)
        buf = e.buf
        if buf is None and e.path is not None:
            buf = self._buffer(e.nbytes)
            try:
                with open(e.path, "rb") as f:
                    ok = f.readinto(memoryview(buf)[: e.nbytes]) == e.nbytes
            except OSError:
                ok = False
            self.loaded_from_disk += 1
            if not ok:
                self.failed += 1
                self._release(buf)
                self._discard(e)
                return None
            e.buf = buf
        n = int(llama_cpp.llama_state_seq_set_data(ctx, buf, e.nbytes, 0))
        if not keep:
            self._discard(e)
        if n == 0:
            self.failed += 1
            llama_cpp.llama_memory_clear(mem, True)
            return None
        self.restores += 1
        self._enforce_budgets()  # a buffer read from disk joined the free list
        self.restore_seconds += time.perf_counter() - t0
        return e.tokens

    def drop(self, key: str) -> None:
        e = self._entries.pop(key, None)
        if e is not None:
            self._discard(e)

    def forget_agent(self, agent_id: str) -> int:
        """Drop the agent's entries (its prompt state and its other states)."""
        keys = [k for k in self._entries if _is_agents(k, agent_id)]
        for key in keys:
            self.drop(key)
        return len(keys)

    def clear(self) -> None:
        for key in list(self._entries):
            self.drop(key)
        self._free.clear()
        self.ram_used = 0

    def close(self) -> None:
        self.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # --- across processes -------------------------------------------------------------

    def persist(self, directory: Path, identity: dict[str, Any], prefix: str = "agent:") -> int:
        """Write every entry whose key starts with `prefix` to its file in
        `directory` (replacing the older file); returns how many were written."""
        written = 0
        for key, e in list(self._entries.items()):
            if not key.startswith(prefix) or len(e.tokens) < PERSIST_MIN_TOKENS:
                continue
            header = {"format": _FORMAT, "key": key, "identity": identity,
                      "tokens": e.tokens, "nbytes": e.nbytes}  # fmt: skip
            path = directory / _file_name(key)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            try:
                directory.mkdir(parents=True, exist_ok=True)
                data = (
                    memoryview(e.buf)[: e.nbytes]
                    if e.buf is not None
                    else (e.path.read_bytes() if e.path is not None else None)
                )
                if data is None or len(data) != e.nbytes:
                    continue
                with open(tmp, "wb") as f:
                    f.write(json.dumps(header).encode() + b"\n")
                    f.write(data)
                os.replace(tmp, path)
            except OSError:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                continue
            written += 1
        self.persisted += written
        self._prune(directory)
        return written

    def _prune(self, directory: Path) -> None:
        """Keep the persisted files within the disk budget (the oldest go first)."""
        try:
            files = sorted(
                ((p.stat().st_mtime_ns, p.stat().st_size, p) for p in directory.glob("*.kv")),
                reverse=True,
            )
        except OSError:
            return
        total = 0
        for _, size, path in files:
            total += size
            if total > self.disk_budget:
                with contextlib.suppress(OSError):
                    path.unlink()

    def load_persisted(self, key: str, directory: Path, identity: dict[str, Any]) -> bool:
        """Take `key`'s persisted state into the store if its file was written for
        the same model (`identity`); False (nothing changed) otherwise."""
        path = directory / _file_name(key)
        try:
            with open(path, "rb") as f:
                header = json.loads(f.readline(_MAX_HEADER))
                if (
                    header.get("format") != _FORMAT
                    or header.get("key") != key
                    or header.get("identity") != identity
                ):
                    self.persist_misses += 1
                    return False
                nbytes = int(header["nbytes"])
                tokens = [int(t) for t in header["tokens"]]
                buf = self._buffer(nbytes)
                if f.readinto(memoryview(buf)[:nbytes]) != nbytes:
                    self._release(buf)
                    self.persist_misses += 1
                    return False
        except FileNotFoundError:
            return False
        except (OSError, ValueError, KeyError, TypeError):
            self.persist_misses += 1
            return False
        self.drop(key)
        self._entries[key] = _Entry(tokens=tokens, nbytes=nbytes, buf=buf)
        self.loaded_persisted += 1
        self._enforce_budgets()
        return True

    @staticmethod
    def forget_persisted(key: str, directory: Path) -> None:
        with contextlib.suppress(OSError):
            (directory / _file_name(key)).unlink()

    # --- buffers and budgets ---------------------------------------------------------

    def _buffer(self, size: int) -> Any:
        """A buffer of at least `size` bytes: the smallest free one that fits, or a new one."""
        fits = [b for b in self._free if len(b) >= size]
        if fits:
            buf = min(fits, key=len)
            self._free.remove(buf)
            return buf
        # Headroom, so the same sequence a few hundred tokens longer still fits.
        cap = -(-int(size * 1.25) // _MiB) * _MiB
        self.ram_used += cap
        return (ctypes.c_uint8 * cap)()

    def _release(self, buf: Any) -> None:
        """Return a buffer to the free list (trimmed by `_enforce_budgets`)."""
        self._free.append(buf)

    def _discard(self, e: _Entry) -> None:
        if e.buf is not None:
            self._release(e.buf)
            e.buf = None
        if e.path is not None:
            with contextlib.suppress(OSError):
                e.path.unlink()
            self.disk_used -= e.nbytes
            self.on_disk -= 1
            e.path = None

    def _enforce_budgets(self) -> None:
        # Free buffers go first: they hold nothing.
        while self.ram_used > self.ram_budget and self._free:
            self.ram_used -= len(self._free.pop())
        if self.ram_used > self.ram_budget:
            for key in list(self._entries):
                if self.ram_used <= self.ram_budget:
                    break
                e = self._entries[key]
                if e.buf is not None:
                    self._spill(key, e)
        if self.disk_used > self.disk_budget:
            for key in list(self._entries):
                if self.disk_used <= self.disk_budget:
                    break
                if self._entries[key].path is not None:
                    self.drop(key)
                    self.dropped += 1

    def _spill(self, key: str, e: _Entry) -> None:
        """Move an entry's bytes to a file (or drop it when disk is off or full)."""
        buf, e.buf = e.buf, None
        self.ram_used -= len(buf)
        path = self._file() if e.nbytes <= self.disk_budget else None
        if path is not None:
            try:
                with open(path, "wb") as f:
                    f.write(memoryview(buf)[: e.nbytes])
            except OSError:
                path = None
        if path is None:
            del self._entries[key]
            self.dropped += 1
            return
        e.path = path
        self.disk_used += e.nbytes
        self.on_disk += 1
        self.spilled += 1

    def _file(self) -> Path | None:
        if self._dir is None:
            base = self._base or default_kv_dir()
            try:
                base.mkdir(parents=True, exist_ok=True)
                self._dir = Path(tempfile.mkdtemp(prefix=f"kv-{os.getpid()}-", dir=base))
            except OSError:
                return None
        return self._dir / f"{next(self._names)}.kv"

    def stats(self) -> dict[str, Any]:
        """Counters only: safe to call from another thread while the store is in use."""
        return {
            "entries_ram": len(self._entries) - self.on_disk,
            "entries_disk": self.on_disk,
            "ram_bytes": self.ram_used,
            "ram_budget": self.ram_budget,
            "disk_bytes": self.disk_used,
            "disk_budget": self.disk_budget,
            "saves": self.saves,
            "restores": self.restores,
            "spilled": self.spilled,
            "loaded_from_disk": self.loaded_from_disk,
            "dropped": self.dropped,
            "failed": self.failed,
            "save_seconds": round(self.save_seconds, 4),
            "restore_seconds": round(self.restore_seconds, 4),
            "persisted": self.persisted,
            "loaded_persisted": self.loaded_persisted,
            "persist_misses": self.persist_misses,
        }
