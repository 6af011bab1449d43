"""The label model: fastText and pretrained embeddings, stacked and calibrated, multi-label.

A model answers, for every label independently, "how likely does this message carry it?".
It has two kinds of evidence:

* **fastText**, trained on the reviewed messages' text (one-vs-all loss: one sigmoid per label);
* **logistic regression on pretrained sentence embeddings** (``encoders``), which carries the
  few-shot quality fastText lacks. There is one such *head* per set of encoders: a fast head on
  the static ``wordllama`` embedding that every message has at once, and, when the optional
  transformer is installed, a full head that adds ``minilm`` for messages whose (slower)
  embedding is ready. A message is scored by the richest head its embeddings allow.

Each head's logit and fastText's logit are stacked by a three-parameter logistic regression,
``p = sigmoid(a * head + c * fasttext + b)``, fitted on the held-out part of the reviewed messages
(a deterministic split by id). That one fit both weighs the two kinds of evidence and calibrates
the result, so that 0.8 means right about 80 % of the time. The held-out scores are what
validation reports; the served model is then retrained on every reviewed message with the same
stacking. Probabilities respect the taxonomy: a parent label scores at least as high as each of
its children, since a child implies its parent.

Pure: the caller passes texts, labels and embeddings in; the artifact comes out as bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import threadpoolctl
from numpy.typing import NDArray
from scipy.special import expit

from commine.ml.encoders import MINILM, WORDLLAMA
from commine.ml.fasttext_model import FastTextParams, FastTextScorer, start_training, training_lines
from commine.ml.linear import Logistic, fit_logistic
from commine.ml.validation import test_mask

FORMAT = 1
SEPARATOR = " > "
#: Encoder sets, from the richest to the fastest: a head exists for each whose embeddings the
#: training set has.
HEAD_ENCODERS: tuple[tuple[str, ...], ...] = ((WORDLLAMA, MINILM), (WORDLLAMA,))
#: Below this many held-out messages, stacking weights are not fitted: the defaults serve.
MIN_HELD_OUT = 20
#: Stacking weights (head, fastText, bias) when there is too little to fit them: measured on
#: BANKING77, where fastText's logits spread about three times as wide as the heads'.
DEFAULT_STACK = (1.0, 0.15, 0.0)
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)

Scores = NDArray[np.float64]
Truth = NDArray[np.bool_]
Embeddings = Mapping[str, NDArray[np.float32]]


@dataclass(frozen=True)
class TrainingConfig:
    """Everything that decides a model besides its data; recorded in ``ModelTrained``."""

    seed: int = 0
    c: float = 0.1
    max_iter: int = 40
    test_share: float = 0.2
    fasttext: FastTextParams | None = None

    def to_dict(self, n: int) -> dict[str, Any]:
        params = self.fasttext or FastTextParams.for_size(n)
        return {**asdict(self), "fasttext": asdict(params)}


@dataclass(frozen=True)
class TrainingSet:
    """Reviewed messages: ``truth[i, j]`` says message i carries label j (ancestors included).

    ``embeddings`` maps an encoder name to one row per message; a row of NaN means "not computed
    yet". A head is trained only for encoders every training message has.
    """

    uids: Sequence[str]
    texts: Sequence[str]
    labels: Sequence[str]
    truth: Truth
    embeddings: Embeddings


@dataclass
class Head:
    encoders: tuple[str, ...]
    linear: Logistic
    stack: tuple[float, float, float] = DEFAULT_STACK

    def features(self, embeddings: Embeddings, rows: NDArray[np.intp]) -> NDArray[np.float32]:
        return np.hstack([embeddings[name][rows] for name in self.encoders])


@dataclass
class Model:
    """A trained model: its labels, heads, stacking and fastText weights."""

    labels: list[str]
    heads: list[Head]
    fasttext: bytes
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    _scorer: FastTextScorer | None = field(default=None, repr=False)

    @property
    def scorer(self) -> FastTextScorer:
        if self._scorer is None:
            self._scorer = FastTextScorer(self.fasttext, len(self.labels))
        return self._scorer

    @property
    def encoders(self) -> list[str]:
        """Every encoder some head reads, fastest first."""
        return sorted({name for head in self.heads for name in head.encoders}, key=[WORDLLAMA, MINILM].index)

    def predict(self, texts: Sequence[str], embeddings: Embeddings) -> Scores:
        """Calibrated probabilities, one row per text and one column per label."""
        fast = self.scorer.logits(list(texts))
        out = np.zeros_like(fast)
        done = np.zeros(len(texts), dtype=bool)
        for head in self.heads:  # richest first
            ready = ~done & _has_all(embeddings, head.encoders, len(texts))
            rows = np.flatnonzero(ready)
            if rows.size:
                out[rows] = _stacked(head, head.linear.logits(head.features(embeddings, rows)), fast[rows])
                done |= ready
        if not done.all():
            missing = sorted({n for h in self.heads for n in h.encoders} - set(embeddings))
            raise ValueError(f"some messages lack every head's embeddings (missing encoders: {missing})")
        return respect_hierarchy(out, self.labels)

    def to_bytes(self) -> bytes:
        """The artifact: a zip with fixed timestamps, so equal models give equal bytes and hashes."""
        meta = {
            "format": FORMAT,
            "labels": self.labels,
            "hyperparameters": self.hyperparameters,
            "heads": [{"encoders": list(h.encoders), "stack": list(h.stack)} for h in self.heads],
        }
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            _write(archive, "meta.json", json.dumps(meta, sort_keys=True).encode())
            _write(archive, "fasttext.bin", self.fasttext)
            for i, head in enumerate(self.heads):
                _write(archive, f"head{i}.npz", _npz(weights=head.linear.weights, bias=head.linear.bias))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Model:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            meta = json.loads(archive.read("meta.json"))
            if meta["format"] != FORMAT:
                raise ValueError(f"model artifact format {meta['format']} is not {FORMAT}")
            heads = []
            for i, spec in enumerate(meta["heads"]):
                arrays = np.load(io.BytesIO(archive.read(f"head{i}.npz")))
                linear = Logistic(weights=arrays["weights"], bias=arrays["bias"])
                heads.append(Head(tuple(spec["encoders"]), linear, tuple(spec["stack"])))
            return cls(meta["labels"], heads, archive.read("fasttext.bin"), meta["hyperparameters"])


def artifact_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class HeldOut:
    """The validation model's scores on the held-out messages, with their truth."""

    uids: list[str]
    scores: Scores
    truth: Truth


@dataclass(frozen=True)
class TrainingResult:
    model: Model
    held_out: HeldOut | None
    seconds: float


def train(data: TrainingSet, config: TrainingConfig = TrainingConfig()) -> TrainingResult:
    """Validate on a held-out split, fit the stacking there, then train the served model on everything.

    BLAS runs on one thread meanwhile: the two fastText children already take the cores, and a
    multi-threaded BLAS beside them made the logistic fits twice as slow (measured: 7.5 s against
    4.5 s on BANKING77); one thread also keeps the floating-point sums the same on every machine.
    """
    with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
        return _train(data, config)


def _train(data: TrainingSet, config: TrainingConfig) -> TrainingResult:
    started = time.perf_counter()
    n = len(data.uids)
    if n == 0 or not data.truth.any():
        raise ValueError("nothing to learn from: no reviewed message carries a label")
    encoder_sets = [s for s in HEAD_ENCODERS if _has_all(data.embeddings, s, n).all()]
    if not encoder_sets:
        raise ValueError(f"every training message needs the {WORDLLAMA} embedding")
    params = config.fasttext or FastTextParams.for_size(n)
    test = test_mask(list(data.uids), config.test_share, salt="")
    validating = int(test.sum()) >= MIN_HELD_OUT and data.truth[~test].any()
    order = np.random.default_rng(config.seed).permutation(n)
    train_rows = order[~test[order]] if validating else order

    # Both fastText runs go to child processes at once; the parent fits the heads meanwhile.
    full_ft = start_training(training_lines(list(data.texts), data.truth, order), params)
    part_ft = start_training(training_lines(list(data.texts), data.truth, train_rows), params) if validating else None
    part_heads = [Head(s, _fit_head(data, s, train_rows, config)) for s in encoder_sets] if validating else []
    # Warm-started from the held-out split's fit, the full fit converges in a few dozen steps.
    heads = [
        Head(s, _fit_head(data, s, order, config, start=part.linear if part_heads else None))
        for s, part in zip(encoder_sets, part_heads or encoder_sets, strict=True)
    ]
    held_out = None
    if part_ft is not None:
        held_out = _validate(data, np.flatnonzero(test), part_ft, part_heads, heads)
    model = Model(list(data.labels), heads, full_ft.result(), config.to_dict(n))
    return TrainingResult(model, held_out, time.perf_counter() - started)


def _fit_head(
    data: TrainingSet,
    encoders: tuple[str, ...],
    rows: NDArray[np.intp],
    config: TrainingConfig,
    start: Logistic | None = None,
) -> Logistic:
    features = np.hstack([data.embeddings[name][rows] for name in encoders])
    max_iter = config.max_iter if start is None else config.max_iter // 2
    return fit_logistic(features, data.truth[rows], c=config.c, max_iter=max_iter, start=start)


def _validate(
    data: TrainingSet, test_rows: NDArray[np.intp], part_ft: Future[bytes], part_heads: list[Head], heads: list[Head]
) -> HeldOut:
    """Score the held-out part with the models trained without it, and fit each head's stacking there.

    The held-out scores reported are the richest head's, as most messages are scored by it once
    their embeddings are ready. They are cross-fitted: each half of the held-out part is scored with a
    stacking fitted on the other half, so validation never judges a message the stacking learnt from
    (the served stacking is fitted on the whole part).
    """
    fast = FastTextScorer(part_ft.result(), len(data.labels)).logits([data.texts[i] for i in test_rows])
    truth = data.truth[test_rows]
    halves = test_mask([data.uids[i] for i in test_rows], 0.5, salt="stack")
    scores = None
    for part, head in zip(part_heads, heads, strict=True):
        logits = part.linear.logits(part.features(data.embeddings, test_rows))
        head.stack = part.stack = fit_stack(logits, fast, truth)
        if scores is None:
            fallback = _stacked(part, logits, fast)
            scores = respect_hierarchy(_cross_fitted(logits, fast, truth, halves, fallback), list(data.labels))
    assert scores is not None
    return HeldOut([data.uids[i] for i in test_rows], scores, truth)


def _cross_fitted(
    head_logits: Scores, fast_logits: Scores, truth: Truth, halves: NDArray[np.bool_], whole: Scores
) -> Scores:
    """Each half's probabilities from the stacking fitted on the other half (``whole`` if a half is empty)."""
    if halves.all() or not halves.any():
        return whole
    out = np.empty_like(whole)
    for fit_on in (halves, ~halves):
        a, c, b = fit_stack(head_logits[fit_on], fast_logits[fit_on], truth[fit_on])
        out[~fit_on] = expit(a * head_logits[~fit_on] + c * fast_logits[~fit_on] + b)
    return out


def fit_stack(head_logits: Scores, fast_logits: Scores, truth: Truth) -> tuple[float, float, float]:
    """Platt scaling on two inputs, pooled over every (message, label) pair of the held-out part."""
    features = np.column_stack([head_logits.ravel(), fast_logits.ravel()])
    fitted = fit_logistic(features, truth.reshape(-1, 1), c=1000.0, max_iter=200)
    a, c = (float(w) for w in fitted.weights[:, 0])
    return a, c, float(fitted.bias[0])


def _stacked(head: Head, head_logits: Scores, fast_logits: Scores) -> Scores:
    a, c, b = head.stack
    return expit(a * head_logits + c * fast_logits + b)


def _has_all(embeddings: Embeddings, encoders: Sequence[str], n: int) -> NDArray[np.bool_]:
    """Rows whose embedding is present for every encoder of ``encoders``."""
    ready = np.ones(n, dtype=bool)
    for name in encoders:
        vectors = embeddings.get(name)
        if vectors is None:
            return np.zeros(n, dtype=bool)
        ready &= ~np.isnan(vectors).any(axis=1)
    return ready


def respect_hierarchy(scores: Scores, labels: Sequence[str]) -> Scores:
    """Raise every parent to at least its children's probability, deepest labels first."""
    index = {name: j for j, name in enumerate(labels)}
    out = scores.copy()
    for name in sorted(labels, key=lambda s: -s.count(SEPARATOR)):
        parent = name.rpartition(SEPARATOR)[0]
        if parent in index:
            np.maximum(out[:, index[parent]], out[:, index[name]], out=out[:, index[parent]])
    return out


def _write(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_TIME), data)


def _npz(**arrays: NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
