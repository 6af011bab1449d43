"""``commine bench quality`` and ``commine bench train``: the label model measured on BANKING77 (issue 3).

* ``quality`` runs in this process, no server: train on BANKING77's training set and score its test set
  (accuracy, macro-F1, MAP) with every training message, with a few per label over several seeds, and
  along an active-learning curve in which each queue strategy chooses which messages get labelled.
* ``train`` runs on the real services (PostgreSQL and Redis): it stores labelled messages in a dataset,
  starts a real trainer process, and times an annotation until the new model version has predicted
  every message; then it times prediction on the fastText path in this process.

Both print a one-line JSON summary last, like every ``commine bench`` command: the figures, the
targets of issue 3 and whether they are met, the machine and its load (it is shared and noisy).
Accuracies are in percent.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from commine.scripts.bench import _scratch_database, bench, machine
from commine.scripts.context import Context, pass_context

if TYPE_CHECKING:
    import rq

    from commine.events import ModelTrained
    from commine.ml.active import Pool
    from commine.ml.model import Model, TrainingResult
    from commine.persistence.store import EventStore

#: BANKING77, beside the project: ``../shared/data/banking77`` from the project root.
BANKING77 = Path(__file__).resolve().parents[3] / "shared" / "data" / "banking77"
#: Issue 3's targets, in percent, labels and seconds.
QUALITY_TARGETS = {"full_accuracy": 93.0, "full_map": 96.0, "few_shot_accuracy": 85.0, "labels_to_90": 2000}
TRAIN_TARGETS = {"retrain_to_serving_s": 15.0, "fasttext_predictions_per_s": 20_000}
#: The accuracy whose labelling cost the active-learning curve reports.
CURVE_TARGET = 90.0
EMBED_BATCH = 256
DATASET, SOURCE = "bench/banking77", "bench/inbox"
ACTOR = "bench"

Vectors = dict[str, NDArray[np.float32]]


def machine_load() -> dict[str, Any]:
    """The machine, with its load average: figures from a loaded machine read low."""
    return {**machine(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def pct(value: float) -> float:
    """A fraction as a percentage with two decimals, as the figures are reported."""
    return round(100.0 * value, 2)


# --- data ------------------------------------------------------------------------------------------------------------


def read_split(folder: Path, name: str) -> tuple[list[str], list[str]]:
    """Texts and categories of ``train`` or ``test``; a clear error when the data set is absent."""
    path = folder / f"{name}.csv"
    if not path.exists():
        raise click.ClickException(f"BANKING77 is not at {folder} (no {path.name}); pass --data")
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [r["category"] for r in rows]


def sample(n: int, limit: int, seed: int) -> NDArray[np.intp]:
    """All of ``range(n)``, or a seeded random ``limit`` of it (sorted) when ``0 < limit < n``."""
    if limit <= 0 or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


@dataclass(frozen=True)
class Split:
    """Texts with their label index, and their embedding per encoder."""

    texts: list[str]
    targets: NDArray[np.intp]
    vectors: Vectors = field(default_factory=dict)

    def embeddings(self, rows: NDArray[np.intp] | None = None) -> Vectors:
        return {name: v if rows is None else v[rows] for name, v in self.vectors.items()}


@dataclass(frozen=True)
class Corpus:
    """BANKING77's labels (sorted, so label j is the same in every run) and its two splits."""

    labels: list[str]
    train: Split
    test: Split


def load_corpus(folder: Path, limit: int) -> Corpus:
    """BANKING77 train and test, each cut to ``limit`` rows (0: all) for quick runs."""
    train_texts, train_cats = read_split(folder, "train")
    test_texts, test_cats = read_split(folder, "test")
    labels = sorted(set(train_cats))
    index = {name: j for j, name in enumerate(labels)}

    def split(texts: list[str], cats: list[str], seed: int) -> Split:
        rows = sample(len(texts), limit, seed)
        return Split([texts[i] for i in rows], np.array([index[cats[i]] for i in rows], dtype=np.intp))

    return Corpus(labels, split(train_texts, train_cats, 0), split(test_texts, test_cats, 1))


def embed(texts: Sequence[str], name: str) -> tuple[NDArray[np.float32], float]:
    """One encoder's embedding of every text, in batches behind a progress bar, and the seconds it took."""
    from commine.ml.encoders import encoder

    model = encoder(name)
    started = time.perf_counter()
    parts = []
    with tqdm(total=len(texts), desc=f"embed {name}", unit="text", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(texts), EMBED_BATCH):
            parts.append(model.encode(list(texts[start : start + EMBED_BATCH])))
            bar.update(len(parts[-1]))
    return np.vstack(parts), time.perf_counter() - started


def embed_corpus(corpus: Corpus, encoders: Sequence[str]) -> tuple[Corpus, dict[str, float]]:
    """The corpus with every encoder's embeddings, computed once up front; seconds per encoder."""
    texts = corpus.train.texts + corpus.test.texts
    cut = len(corpus.train.texts)
    train_vectors, test_vectors, seconds = {}, {}, {}
    for name in encoders:
        vectors, seconds[name] = embed(texts, name)
        train_vectors[name], test_vectors[name] = vectors[:cut], vectors[cut:]
    return (
        replace(
            corpus, train=replace(corpus.train, vectors=train_vectors), test=replace(corpus.test, vectors=test_vectors)
        ),
        {name: round(s, 1) for name, s in seconds.items()},
    )


def parse_strategies(value: str) -> list[str]:
    """The queues to compare: those that pick unreviewed messages without a label or a query."""
    names = [n.strip() for n in value.split(",") if n.strip()]
    allowed = ("shuffle", "low-confidence", "teach", "uncertain", "rebalance")
    if not names or not set(names) <= set(allowed):
        raise click.BadParameter(f"a comma list of {', '.join(allowed)}", param_hint="--strategies")
    return names


def parse_encoders(value: str) -> list[str]:
    """``auto`` (MiniLM when installed), or a comma list that must include wordllama, the model's base."""
    from commine.ml.encoders import MINILM, WORDLLAMA, minilm_installed

    if value == "auto":
        return [WORDLLAMA, *([MINILM] if minilm_installed() else [])]
    names = [n.strip() for n in value.split(",") if n.strip()]
    if WORDLLAMA not in names or not set(names) <= {WORDLLAMA, MINILM}:
        raise click.BadParameter("auto, wordllama, or wordllama,minilm", param_hint="--encoders")
    if MINILM in names and not minilm_installed():
        raise click.BadParameter("minilm is not installed (the transformer extra)", param_hint="--encoders")
    return names


# --- training and scoring --------------------------------------------------------------------------------------------


def one_hot(targets: NDArray[np.intp], n_labels: int) -> NDArray[np.bool_]:
    """The model's truth matrix for single-label data: row i carries label ``targets[i]`` only."""
    truth = np.zeros((targets.size, n_labels), dtype=bool)
    truth[np.arange(targets.size), targets] = True
    return truth


def fit(corpus: Corpus, rows: NDArray[np.intp]) -> TrainingResult:
    """The product's ``train`` on these training rows, with every embedding the corpus has."""
    from commine.ml.model import TrainingConfig, TrainingSet, train

    split = corpus.train
    data = TrainingSet(
        uids=[f"b77.{i}" for i in rows],
        texts=[split.texts[i] for i in rows],
        labels=corpus.labels,
        truth=one_hot(split.targets[rows], len(corpus.labels)),
        embeddings=split.embeddings(rows),
    )
    return train(data, TrainingConfig())


def macro_f1(predicted: NDArray[np.intp], targets: NDArray[np.intp], n_labels: int) -> float:
    """Mean F1 over the labels that are predicted or true (scikit-learn's ``average="macro"``)."""
    hits = np.bincount(targets[predicted == targets], minlength=n_labels)
    both = np.bincount(predicted, minlength=n_labels) + np.bincount(targets, minlength=n_labels)
    present = both > 0
    return float(np.mean(2 * hits[present] / both[present]))


def score(model: Model, corpus: Corpus) -> dict[str, float]:
    """Test accuracy (top label), macro-F1 and MAP, in percent."""
    from commine.ml.metrics import mean_average_precision

    test = corpus.test
    scores = model.predict(test.texts, test.embeddings())
    predicted = scores.argmax(axis=1)
    return {
        "accuracy": pct(float(np.mean(predicted == test.targets))),
        "macro_f1": pct(macro_f1(predicted, test.targets, len(corpus.labels))),
        "map": pct(mean_average_precision(scores, one_hot(test.targets, len(corpus.labels)))),
    }


def per_label(targets: NDArray[np.intp], n_labels: int, k: int, seed: int) -> NDArray[np.intp]:
    """A seeded random ``k`` rows of each label (all of a label's rows when it has fewer)."""
    rng = np.random.default_rng(seed)
    picks = []
    for label in range(n_labels):
        rows = np.flatnonzero(targets == label)
        picks.append(rng.choice(rows, min(k, rows.size), replace=False))
    return np.sort(np.concatenate(picks))


def full_set(corpus: Corpus) -> dict[str, float]:
    """Every training message: test figures and training seconds."""
    result = fit(corpus, np.arange(len(corpus.train.texts)))
    return {**score(result.model, corpus), "train_seconds": round(result.seconds, 2)}


def few_shot(corpus: Corpus, shots: int, seeds: int) -> dict[str, Any]:
    """``shots`` per label over seeds 0..seeds-1: each figure's mean and sample standard deviation."""
    runs = []
    for seed in tqdm(range(seeds), desc=f"{shots}-shot", unit="seed", file=sys.stderr, disable=None):
        result = fit(corpus, per_label(corpus.train.targets, len(corpus.labels), shots, seed))
        runs.append({**score(result.model, corpus), "train_seconds": round(result.seconds, 2)})
    out: dict[str, Any] = {"shots": shots, "seeds": seeds, "runs": runs}
    for key in ("accuracy", "macro_f1", "map"):
        values = [run[key] for run in runs]
        out[key] = round(statistics.fmean(values), 2)
        out[f"{key}_sd"] = round(statistics.stdev(values), 2) if len(values) > 1 else 0.0
    return out


# --- active learning -------------------------------------------------------------------------------------------------


def thresholds(result: TrainingResult, labels: list[str]) -> NDArray[np.float64]:
    """Per label, the threshold the product's queues use: validation's balanced preset, else 0.5."""
    from commine.ml import validation

    held = result.held_out
    if held is None:
        return np.full(len(labels), 0.5)
    return validation.preset_thresholds(validation.validate(labels, held.scores, held.truth), "balanced")


def teach_round_robin(pool: Pool, limits: NDArray[np.float64], n: int, seed: int) -> list[int]:
    """The teach queue of every label in turn (labels in a seeded order), near-duplicates dropped:
    a trainer teaching one label after another, a few messages each."""
    from commine.ml import active
    from commine.ml.cluster import distinct

    order = np.random.default_rng(seed).permutation(limits.size)
    depth = min(int((~pool.reviewed).sum()), 4 * math.ceil(n / limits.size))
    ranked = [active.rank("teach", pool, seed=seed, label=int(j), thresholds=limits)[:depth] for j in order]
    return distinct(np.stack(ranked, axis=1).ravel(), n, texts=pool.texts, embeddings=pool.embeddings)


def choose(
    strategy: str, corpus: Corpus, reviewed: NDArray[np.bool_], result: TrainingResult, n: int, seed: int
) -> tuple[list[int], int]:
    """``n`` unreviewed training rows picked by a queue, and how many of them had to come from shuffle
    because the queue ran dry (low-confidence only lists messages no label covers)."""
    from commine.ml.active import Pool, select
    from commine.ml.encoders import WORDLLAMA

    split = corpus.train
    base = split.vectors[WORDLLAMA]
    scores = None if strategy == "shuffle" else result.model.predict(split.texts, split.embeddings())
    pool = Pool(texts=split.texts, reviewed=reviewed, scores=scores, embeddings=base)
    limits = thresholds(result, corpus.labels)
    if strategy == "teach":
        picks = teach_round_robin(pool, limits, n, seed)
    else:
        picks = select(strategy, pool, n=n, seed=seed, thresholds=limits)
    short = n - len(picks)
    if short > 0:
        taken = reviewed.copy()
        taken[picks] = True
        picks += select("shuffle", Pool(texts=split.texts, reviewed=taken, embeddings=base), n=short, seed=seed)
    return picks, max(short, 0)


@dataclass
class Curve:
    """Test figures after each round of one strategy; round 0 is the shared start."""

    strategy: str
    labelled: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    macro_f1: list[float] = field(default_factory=list)
    map: list[float] = field(default_factory=list)
    from_shuffle: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def add(self, labelled: int, figures: dict[str, float], from_shuffle: int, seconds: float) -> None:
        self.labelled.append(labelled)
        self.accuracy.append(figures["accuracy"])
        self.macro_f1.append(figures["macro_f1"])
        self.map.append(figures["map"])
        self.from_shuffle.append(from_shuffle)
        self.seconds.append(round(seconds, 1))

    def labels_to(self, accuracy: float) -> int | None:
        """The fewest labels at which the test accuracy reached ``accuracy``, or None."""
        return next((n for n, a in zip(self.labelled, self.accuracy, strict=True) if a >= accuracy), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labelled": self.labelled,
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "map": self.map,
            "from_shuffle": self.from_shuffle,
            "round_seconds": self.seconds,
            f"labels_to_{CURVE_TARGET:g}": self.labels_to(CURVE_TARGET),
        }


@dataclass(frozen=True)
class CurvePlan:
    """The active-learning protocol: labelled per label at the start, then rounds of a fixed size."""

    start_per_label: int
    rounds: int
    round_size: int


def run_curve(
    corpus: Corpus, strategy: str, plan: CurvePlan, start: TrainingResult, figures: dict[str, float]
) -> Curve:
    """Rounds of: the queue picks, their labels are revealed, the model retrains and is scored."""
    reviewed = np.zeros(len(corpus.train.texts), dtype=bool)
    reviewed[per_label(corpus.train.targets, len(corpus.labels), plan.start_per_label, seed=0)] = True
    curve = Curve(strategy)
    curve.add(int(reviewed.sum()), figures, 0, 0.0)
    result = start
    for round_ in tqdm(range(1, plan.rounds + 1), desc=strategy, unit="round", file=sys.stderr, disable=None):
        started = time.perf_counter()
        picks, from_shuffle = choose(strategy, corpus, reviewed, result, plan.round_size, seed=round_)
        reviewed[picks] = True
        result = fit(corpus, np.flatnonzero(reviewed))
        curve.add(int(reviewed.sum()), score(result.model, corpus), from_shuffle, time.perf_counter() - started)
    return curve


def active_learning(corpus: Corpus, strategies: Sequence[str], plan: CurvePlan) -> dict[str, Curve]:
    """One curve per strategy from the same start (its model trained once)."""
    rows = per_label(corpus.train.targets, len(corpus.labels), plan.start_per_label, seed=0)
    start = fit(corpus, rows)
    figures = score(start.model, corpus)
    return {s: run_curve(corpus, s, plan, start, figures) for s in strategies}


# --- bench quality ---------------------------------------------------------------------------------------------------


def reached_in_budget(curve: Curve | None) -> bool | None:
    """Whether the curve reached 90 % within the labels issue 3 allows (None: strategy not run)."""
    if curve is None:
        return None
    reached = curve.labels_to(CURVE_TARGET)
    return reached is not None and reached <= QUALITY_TARGETS["labels_to_90"]


def quality_verdict(full: dict[str, float], shots: dict[str, Any], curves: dict[str, Curve]) -> dict[str, bool | None]:
    """Each target of issue 3, met or not (None when the run did not measure it); the labelling target
    for both uncertainty queues, low-confidence and uncertain (lowest top probability)."""
    ten_shot = shots["shots"] == 10
    return {
        "full_accuracy": full["accuracy"] >= QUALITY_TARGETS["full_accuracy"],
        "full_map": full["map"] >= QUALITY_TARGETS["full_map"],
        "few_shot_accuracy": shots["accuracy"] >= QUALITY_TARGETS["few_shot_accuracy"] if ten_shot else None,
        "labels_to_90_low_confidence": reached_in_budget(curves.get("low-confidence")),
        "labels_to_90_uncertain": reached_in_budget(curves.get("uncertain")),
    }


def echo_curves(curves: dict[str, Curve]) -> None:
    """One human-readable line per strategy: accuracy after each round, and where it reached 90 %."""
    for name, curve in curves.items():
        points = ", ".join(f"{n}: {a:.1f}" for n, a in zip(curve.labelled, curve.accuracy, strict=True))
        click.echo(f"active learning, {name}: labels: accuracy % = {points}; 90 % at {curve.labels_to(CURVE_TARGET)}")


@bench.command("quality")
@click.option("--encoders", "encoders_", default="auto", show_default=True, help="auto, wordllama or wordllama,minilm.")
@click.option("--seeds", default=5, show_default=True, help="Sampling seeds of the few-shot runs.")
@click.option("--shots", default=10, show_default=True, help="Labelled examples per label of the few-shot runs.")
@click.option("--start-per-label", default=5, show_default=True, help="Labelled per label before active learning.")
@click.option("--rounds", default=5, show_default=True, help="Active-learning rounds.")
@click.option("--round-size", default=500, show_default=True, help="Messages labelled per round.")
@click.option(
    "--strategies",
    default="shuffle,low-confidence,teach,uncertain",
    show_default=True,
    help="Queues to compare, a comma list: shuffle, low-confidence, teach, uncertain, rebalance.",
)
@click.option("--limit", default=0, show_default=True, help="Use a random LIMIT of train and of test (0: all).")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=BANKING77,
    show_default=True,
    envvar="COMMINE_BANKING77",
    help="The BANKING77 folder (train.csv, test.csv).",
)
def bench_quality(
    encoders_: str,
    seeds: int,
    shots: int,
    start_per_label: int,
    rounds: int,
    round_size: int,
    strategies: str,
    limit: int,
    data: Path,
) -> None:
    """Model quality on BANKING77 (train -> test): full data, few-shot, and active-learning curves."""
    started, load_before = time.perf_counter(), machine_load()
    encoders, chosen = parse_encoders(encoders_), parse_strategies(strategies)
    corpus, embed_seconds = embed_corpus(load_corpus(data, limit), encoders)
    click.echo(f"{len(corpus.train.texts)} train, {len(corpus.test.texts)} test, encoders {'+'.join(encoders)}")
    full = full_set(corpus)
    click.echo(f"full training set: {json.dumps(full)}")
    shot = few_shot(corpus, shots, seeds)
    click.echo(
        f"{shots}-shot: accuracy {shot['accuracy']} ± {shot['accuracy_sd']}, MAP {shot['map']} ± {shot['map_sd']}"
    )
    plan = CurvePlan(start_per_label, rounds, round_size)
    curves = active_learning(corpus, chosen, plan)
    echo_curves(curves)
    summary = {
        "benchmark": "quality",
        "units": "percent",
        "encoders": encoders,
        "train": len(corpus.train.texts),
        "test": len(corpus.test.texts),
        "embed_seconds": embed_seconds,
        "full": full,
        "few_shot": shot,
        "active": {"plan": vars(plan), "curves": {name: c.to_dict() for name, c in curves.items()}},
        "targets": QUALITY_TARGETS,
        "met": quality_verdict(full, shot, curves),
        "seconds": round(time.perf_counter() - started),
        "machine": load_before,
        "load_avg_1m_end": machine_load()["load_avg_1m"],
    }
    click.echo(json.dumps(summary))


# --- bench train: the real services ----------------------------------------------------------------------------------


def comments_of(texts: Sequence[str]) -> list[dict[str, Any]]:
    """One comment per text, as an integration would send them."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        {
            "id": f"b77-{i:06d}",
            "timestamp": (start + timedelta(seconds=i)).isoformat(),
            "messages": [{"body": {"text": t}}],
        }
        for i, t in enumerate(texts)
    ]


def ingest_labelled(store: EventStore, comments: list[dict[str, Any]], categories: list[str], batch: int = 500) -> str:
    """A project, source and dataset, then every comment ingested with its label except the last one's.

    Returns the dataset id. The last comment is labelled later, by the annotation that is timed.
    """
    from commine.handlers.commands import create_dataset, create_project, create_source
    from commine.handlers.ingest import handle_ingest
    from commine.integrations.ingest_client import make_body
    from commine.persistence.projections import catch_up

    create_project(store, "bench", actor=ACTOR)
    create_source(store, SOURCE, actor=ACTOR)
    dataset_id = create_dataset(store, DATASET, sources=[SOURCE], actor=ACTOR).dataset_id
    with tqdm(total=len(comments), desc="ingest", unit="msg", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(comments), batch):
            chunk = comments[start : start + batch]
            labels = {c["id"]: [categories[start + k]] for k, c in enumerate(chunk) if start + k < len(comments) - 1}
            handle_ingest(store, make_body(SOURCE, chunk, actor=ACTOR, dataset=DATASET, annotations=labels))
            bar.update(len(chunk))
    catch_up(store)
    return dataset_id


@dataclass
class Trainer:
    """A real trainer process (``commine trainer``'s ``run_trainer``) on a queue prefix of its own,
    and the training requests sent to it, so that the bench can watch and clean up after them."""

    redis_url: str
    database_url: str
    prefix: str
    jobs: list[rq.job.Job] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        import redis
        import rq

        from commine.workers.training import queue_name

        code = f"from commine.workers.training import run_trainer; run_trainer({self.redis_url!r}, {self.prefix!r})"
        self.process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL)
        queue = rq.Queue(queue_name(self.prefix), connection=redis.Redis.from_url(self.redis_url))
        deadline = time.monotonic() + timeout
        while not self.workers:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise click.ClickException(f"the trainer did not start within {timeout:.0f} s")
            time.sleep(0.1)
            self.workers = [worker.name for worker in rq.Worker.all(queue=queue)]

    def request(self, store: EventStore) -> None:
        """What a worker does after an annotation: read the log and ask for retraining."""
        from commine.handlers.retrain import request_retraining
        from commine.persistence.projections import catch_up
        from commine.workers.training import TrainingRequests

        requests = TrainingRequests(self.redis_url, self.database_url, self.prefix)

        def ask(dataset_id: str) -> None:
            job = requests.request(dataset_id)
            if job is not None:
                self.jobs.append(job)

        catch_up(store)
        request_retraining(store, ask, wait=True)

    def check(self) -> None:
        """Fail at once when a training job failed or the trainer died, rather than at the timeout."""
        if self.process is not None and self.process.poll() is not None:
            raise click.ClickException(f"the trainer exited with {self.process.returncode}")
        for job in self.jobs:
            if job.get_status(refresh=True) == "failed":
                result = job.latest_result()
                raise click.ClickException(f"training job {job.id} failed: {result.exc_string if result else ''}")

    def stop(self) -> None:
        import redis

        from commine.workers.training import queue_name

        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=60)
        connection = redis.Redis.from_url(self.redis_url)
        keys = [*connection.scan_iter(f"{self.prefix}*"), *connection.scan_iter(f"rq:*{queue_name(self.prefix)}*")]
        keys += [key for job in self.jobs for key in connection.scan_iter(f"rq:*{job.id}*")]
        keys += [key for name in self.workers for key in connection.scan_iter(f"rq:worker:{name}*")]
        if self.workers:  # a worker stopped by SIGTERM unregisters itself; one that was killed does not
            connection.srem("rq:workers", *[f"rq:worker:{name}" for name in self.workers])
        if keys:
            connection.delete(*keys)


def wait_for_model(store: EventStore, dataset_id: str, version: int, trainer: Trainer, timeout: float) -> ModelTrained:
    """Poll the log until ``ModelTrained`` of ``version`` is in it."""
    from commine.domain.model import models_aggregate_id
    from commine.events import ModelTrained

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in store.read_aggregate(models_aggregate_id(dataset_id)):
            if isinstance(event, ModelTrained) and event.version == version:
                return event
        trainer.check()
        time.sleep(0.05)
    raise click.ClickException(f"no model version {version} after {timeout:.0f} s")


def wait_for_predictions(
    store: EventStore, trained: ModelTrained, total: int, trainer: Trainer, timeout: float
) -> None:
    """Poll the log until ``PredictionsRecorded`` under the version cover ``total`` messages."""
    import sqlalchemy as sa

    from commine.events import PredictionsRecorded
    from commine.persistence.schema import events

    seen: set[str] = set()
    cursor, deadline = trained.trained_on_position, time.monotonic() + timeout
    query = sa.select(events.c.position, events.c.payload).where(events.c.type == PredictionsRecorded.type_name())
    with tqdm(total=total, desc=f"predicted by v{trained.version}", unit="msg", file=sys.stderr, disable=None) as bar:
        while len(seen) < total:
            if time.monotonic() > deadline:
                raise click.ClickException(f"only {len(seen)} of {total} predicted after {timeout:.0f} s")
            with store.engine.connect() as conn:
                rows = conn.execute(query.where(events.c.position > cursor).order_by(events.c.position)).all()
            for position, payload in rows:
                cursor = position
                if payload["dataset_id"] == trained.dataset_id and payload["model_version"] == trained.version:
                    seen.update(p["uid"] for p in payload["predictions"])
            bar.update(len(seen) - bar.n)
            trainer.check()
            time.sleep(0.05 if len(seen) < total else 0)


def time_version(
    store: EventStore, trainer: Trainer, trained_before: int, total: int, dataset_id: str
) -> dict[str, Any]:
    """From now (just after the annotation commits): request, then wait for the version and its predictions."""
    started = time.perf_counter()
    trainer.request(store)
    requested = time.perf_counter()
    trained = wait_for_model(store, dataset_id, trained_before + 1, trainer, timeout=1800)
    registered = time.perf_counter()
    wait_for_predictions(store, trained, total, trainer, timeout=1800)
    done = time.perf_counter()
    return {
        "version": trained.version,
        "training_size": trained.training_size,
        "train_seconds": trained.metrics.get("train_seconds"),
        "request_s": round(requested - started, 3),
        "to_registered_s": round(registered - started, 2),
        "to_serving_s": round(done - started, 2),
    }


def annotate_last(store: EventStore, comment_id: str, category: str) -> None:
    """The timed annotation: a trainer labels one more message."""
    from commine.handlers.labels import AnnotationRequest, annotate

    results = annotate(
        store, DATASET, [AnnotationRequest(source=SOURCE, comment_id=comment_id, labels=(category,))], actor=ACTOR
    )
    if results[0].outcome == "error":
        raise click.ClickException(f"the annotation failed: {results[0].reason}")


def best_rate(run: Callable[[], object], count: int, repeat: int) -> float:
    """Items per second of the fastest of ``repeat`` runs (the least disturbed by other work)."""
    best = math.inf
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return count / best


def prediction_rates(model: Model, texts: list[str], repeat: int) -> dict[str, int]:
    """Predictions per second in this one process on the fastText path (the wordllama head, as for a
    message whose MiniLM embedding is not ready): without and with computing the embedding, and the
    fastText logits alone as the ceiling."""
    from commine.ml.encoders import WORDLLAMA, encoder

    wordllama = encoder(WORDLLAMA)
    vectors = wordllama.encode(texts)
    model.predict(texts[:10], {WORDLLAMA: vectors[:10]})  # loads the fastText scorer
    return {
        "fasttext_logits_per_s": round(best_rate(lambda: model.scorer.logits(texts), len(texts), repeat)),
        "predict_per_s": round(best_rate(lambda: model.predict(texts, {WORDLLAMA: vectors}), len(texts), repeat)),
        "embed_and_predict_per_s": round(
            best_rate(lambda: model.predict(texts, {WORDLLAMA: wordllama.encode(texts)}), len(texts), repeat)
        ),
    }


@dataclass(frozen=True)
class Labelled:
    """What ``bench train`` stores: messages with their categories, and the encoders the model gets."""

    texts: list[str]
    categories: list[str]
    encoders: list[str]


def embed_stored(store: EventStore, dataset_id: str, encoders: Sequence[str]) -> dict[str, float]:
    """Every message's embeddings stored, as the workers do before training reads them: wordllama on
    ingestion (the prediction follower), MiniLM by workers of its own. Seconds per encoder."""
    from commine.handlers.prediction import predict_new
    from commine.handlers.training import embeddings, snapshot
    from commine.ml.encoders import MINILM, WORDLLAMA

    started = time.perf_counter()
    predict_new(store, wait=True)
    seconds = {WORDLLAMA: round(time.perf_counter() - started, 2)}
    if MINILM in encoders:
        click.echo(f"embedding every message with {MINILM}, as its workers would (a minute or more)")
        data = snapshot(store, dataset_id)
        started = time.perf_counter()
        with store.transaction() as conn:
            embeddings(conn, data.messages, data.texts, compute=(MINILM,), whole_dataset=True)
        seconds[MINILM] = round(time.perf_counter() - started, 1)
    return seconds


def run_train_bench(settings: Any, url: str, labelled: Labelled, trainer: Trainer) -> dict[str, Any]:
    """Ingest, embed, a first model, then the timed annotation and retrain; the served model comes back too."""
    from commine.bootstrap import open_store
    from commine.handlers.training import load_model

    store = open_store(replace(settings, database_url=url))
    try:
        comments = comments_of(labelled.texts)
        dataset_id = ingest_labelled(store, comments, labelled.categories)
        embedded = embed_stored(store, dataset_id, labelled.encoders)
        trainer.start()
        first = time_version(store, trainer, 0, len(comments), dataset_id)
        click.echo(f"first model: {json.dumps(first)}")
        annotate_last(store, comments[-1]["id"], labelled.categories[-1])
        retrain = time_version(store, trainer, first["version"], len(comments), dataset_id)
        click.echo(f"after one more annotation: {json.dumps(retrain)}")
        _, model = load_model(store, dataset_id)
        return {"embed_seconds": embedded, "first": first, "retrain": retrain, "model": model}
    finally:
        store.engine.dispose()


def train_verdict(retrain: dict[str, Any], rates: dict[str, int]) -> dict[str, bool]:
    return {
        "retrain_to_serving_s": retrain["to_serving_s"] < TRAIN_TARGETS["retrain_to_serving_s"],
        "fasttext_predictions_per_s": rates["predict_per_s"] >= TRAIN_TARGETS["fasttext_predictions_per_s"],
    }


@bench.command("train")
@click.option("--messages", default=10_000, show_default=True, help="Labelled BANKING77 training messages to store.")
@click.option("--encoders", "encoders_", default="auto", show_default=True, help="auto, wordllama or wordllama,minilm.")
@click.option("--repeat", default=3, show_default=True, help="Timed prediction runs; the fastest counts.")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=BANKING77,
    show_default=True,
    envvar="COMMINE_BANKING77",
    help="The BANKING77 folder (train.csv, test.csv).",
)
@pass_context
def bench_train(ctx: Context, messages: int, encoders_: str, repeat: int, data: Path) -> None:
    """Retraining on the real services (PostgreSQL, Redis + RQ) and prediction speed on the fastText path.

    With minilm among the encoders, every message's MiniLM embedding is stored before training, so the
    model has both heads, as it does once MiniLM's workers have caught up.
    """
    from commine.persistence.engine import drop_database

    settings = ctx.settings
    if settings.embedded:
        raise click.ClickException("bench train measures the real services; run it without --embedded")
    load_before, encoders = machine_load(), parse_encoders(encoders_)
    train_texts, train_cats = read_split(data, "train")
    if not 2 <= messages <= len(train_texts):
        raise click.BadParameter(f"between 2 and {len(train_texts)}", param_hint="--messages")
    rows = sample(len(train_texts), messages, seed=0)
    labelled = Labelled([train_texts[i] for i in rows], [train_cats[i] for i in rows], encoders)
    url = _scratch_database(settings.database_url, "train")
    trainer = Trainer(settings.redis_url, url, f"bench{uuid.uuid4().hex[:8]}")
    try:
        measured = run_train_bench(settings, url, labelled, trainer)
    finally:
        trainer.stop()
        drop_database(url)
    test_texts, _ = read_split(data, "test")
    all_texts = train_texts + test_texts
    model = measured.pop("model")
    rates = prediction_rates(model, all_texts, repeat)
    click.echo(f"predictions per second, one process, {len(all_texts)} texts: {json.dumps(rates)}")
    summary = {
        "benchmark": "train",
        "messages": messages,
        "encoders": encoders,
        "model_heads": [list(head.encoders) for head in model.heads],
        **measured,
        "retrain_to_serving_s": measured["retrain"]["to_serving_s"],
        "predictions": rates,
        "targets": TRAIN_TARGETS,
        "met": train_verdict(measured["retrain"], rates),
        "machine": load_before,
        "load_avg_1m_end": machine_load()["load_avg_1m"],
    }
    click.echo(json.dumps(summary))
