"""Token counting for cores without a tokenizer available offline.

`CalibratedEstimate` starts from a characters-per-token ratio typical of BPE
vocabularies on English and JSON (about 3.6 for cl100k/o200k), and corrects it
from the prompt token counts the backend reports: every `observe(chars,
tokens)` pulls the ratio toward what the backend really counted. A safety
margin keeps llmos's count above the true one, so a request llmos thinks fits
does fit.

Left out: exact BPE (a core that ships its tokenizer, like the embedded
model, counts exactly and does not use this).
"""

from __future__ import annotations

import threading

DEFAULT_CHARS_PER_TOKEN = 3.6
#: per chat message framing (role markers, separators) in most chat formats.
MESSAGE_OVERHEAD_TOKENS = 4


class CalibratedEstimate:
    """A chars-per-token estimate that learns from the backend's usage reports."""

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN, margin: float = 1.1):
        self.chars_per_token = chars_per_token
        self.margin = margin
        self._lock = threading.Lock()
        self.samples = 0

    def count(self, text: str) -> int:
        if not text:
            return 0
        return int(len(text) / self.chars_per_token * self.margin) + 1

    def observe(self, chars: int, tokens: int) -> None:
        """The backend counted `tokens` for a prompt of `chars` characters."""
        if chars < 200 or tokens <= 0:
            return  # too small to say anything about the ratio
        measured = chars / tokens
        with self._lock:
            self.samples += 1
            # Fast at first, then an exponential moving average.
            weight = max(0.1, 1.0 / self.samples)
            self.chars_per_token += weight * (measured - self.chars_per_token)
