"""fastText, trained in a fresh process and scored in float64.

Two pitfalls shape this module (``shared/reference/ml-notes.md``):

* The numpy-2 build of fastText leaves part of its input matrix uninitialised, so the second
  training in one process can produce NaN or a silently corrupted model. Every training runs in
  a fresh ``spawn`` child process, which also keeps a crash there from taking the worker down.
* ``predict`` returns float32 probabilities floored at 1e-5, and confident labels tie at 1.0,
  which ruins rankings (and so average precision). Scores here are the raw one-vs-all logits,
  ``sentence_vector @ output_matrix.T`` in float64, with no floor and no ties.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from commine.ml.text import tokens

#: Logit given to a label the fastText model never saw a positive example of.
ABSENT_LOGIT = -10.0
#: From this many training messages on, the full-data settings are used; below, few-shot ones.
FEW_SHOT_LIMIT = 2000


@dataclass(frozen=True)
class FastTextParams:
    """fastText hyper-parameters; ``thread=1`` because more threads are not bit-reproducible."""

    epoch: int
    lr: float
    dim: int = 50
    word_ngrams: int = 2
    minn: int = 3
    maxn: int = 5
    bucket: int = 50_000
    loss: str = "ova"
    thread: int = 1

    @classmethod
    def for_size(cls, n: int) -> FastTextParams:
        """Settings measured on BANKING77: few-shot data needs many epochs and character n-grams
        up to 6, while full data does best with word bigrams (ml-notes.md, pitfall 8 and sweep)."""
        if n < FEW_SHOT_LIMIT:
            return cls(epoch=200, lr=1.0, word_ngrams=1, maxn=6)
        return cls(epoch=25, lr=0.5)


def training_lines(texts: list[str], truth: NDArray[np.bool_], order: NDArray[np.intp]) -> list[str]:
    """fastText's input format, in ``order``: fastText does not shuffle (pitfall 2), the caller does."""
    lines = []
    for i in order:
        names = " ".join(f"__label__{j}" for j in np.flatnonzero(truth[i]))
        if names:  # a line without a label teaches fastText nothing
            lines.append(f"{names} {tokens(texts[i])}\n")
    return lines


def _train_in_child(lines: list[str], params: dict[str, Any]) -> bytes:
    import fasttext

    with tempfile.TemporaryDirectory() as folder:
        data, model = os.path.join(folder, "train.txt"), os.path.join(folder, "model.bin")
        with open(data, "w", encoding="utf-8") as f:
            f.writelines(lines)
        trained = fasttext.train_supervised(
            data,
            epoch=params["epoch"],
            lr=params["lr"],
            dim=params["dim"],
            wordNgrams=params["word_ngrams"],
            minn=params["minn"],
            maxn=params["maxn"],
            bucket=params["bucket"],
            loss=params["loss"],
            thread=params["thread"],
            verbose=0,
        )
        trained.save_model(model)
        with open(model, "rb") as f:
            return f.read()


def start_training(lines: list[str], params: FastTextParams) -> Future[bytes]:
    """Train in a fresh child process; the future holds the model file's bytes."""
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    future = pool.submit(_train_in_child, lines, asdict(params))
    pool.shutdown(wait=False)
    return future


class FastTextScorer:
    """A trained model, loaded from its bytes, giving float64 logits in the caller's label order."""

    def __init__(self, model: bytes, n_labels: int) -> None:
        import fasttext

        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            f.write(model)
            f.flush()
            self._model = fasttext.load_model(f.name)
        self.n_labels = n_labels
        self._columns = np.array([int(name.removeprefix("__label__")) for name in self._model.get_labels()])
        self._output = self._model.get_output_matrix().astype(np.float64)

    def logits(self, texts: list[str]) -> NDArray[np.float64]:
        vectors = np.array([self._model.get_sentence_vector(tokens(t)) for t in texts], dtype=np.float64)
        out = np.full((len(texts), self.n_labels), ABSENT_LOGIT)
        if len(texts) and self._columns.size:
            out[:, self._columns] = vectors.reshape(len(texts), -1) @ self._output.T
        return out
