"""Read helpers of the pages: one message with its labelling and predictions, a cached dataset view.

The active-learning queues, clusters, drift and reports work on a whole dataset's arrays
(``handlers.insight.load_view``). Loading them takes seconds at 100,000 messages, so the UI keeps
one view per dataset in memory and answers every page from it (with what is derived from it:
ranked queues, clusters, drift); a new model version builds a new view in the background. Reviews
made since are checked against the annotations table when a queue is read, so a stale view never
offers a message that was just labelled. Model versions never change once recorded, so their rows
(with validation curves of every label) are kept too.

Work too long for a request (a dataset's first view, its clusters, its state at a past moment) is
prepared in the background (``_prepared``; the view and the past state in a child process under
``commine serve``, see ``offload``): a page that needs it waits ``FIRST_WAIT_S`` at most, then
answers ``Pending``, which renders as "being prepared" and reloads itself. ``warm`` prepares every
dataset when the server starts.
"""

from __future__ import annotations

import gc
import itertools
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from commine.api.ui import offload
from commine.handlers import history
from commine.handlers.insight import DatasetView, discover, load_view, queue
from commine.persistence import mldata
from commine.persistence import schema as t
from commine.persistence.store import EventStore, as_utc

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Rebuild a dataset's view in the background when it is older than this (new messages, new reviews).
REFRESH_S = 600
#: Derived results (ranked queues, clusters, drift, dates) kept per view, least recently used dropped.
MEMO_SIZE = 256

_lock = threading.Lock()
#: (database, dataset id) -> (model version, built at, view)
_views: dict[tuple[str, str], tuple[int | None, float, DatasetView]] = {}
_generations = itertools.count(1)
_MISSING = object()


class _Lru:
    """At most ``size`` entries, the least recently used dropped first; safe across threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Any:
        """The value, or ``_MISSING``."""
        with self._lock:
            if key not in self._items:
                return _MISSING
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


#: What is derived from a view (ranked queues, clusters, dates, drift), by view generation.
_memo = _Lru(MEMO_SIZE)
#: Model version rows (with every label's validation curves): a recorded version never changes.
_models = _Lru(MEMO_SIZE)

#: How long a page waits for something prepared in the background (a dataset's first view, its
#: clusters, a past state) before it answers "being prepared" and refreshes itself.
FIRST_WAIT_S = 0.1
#: ``wait`` of the functions below meaning "as a page does": ``FIRST_WAIT_S``, read when called.
PAGE = -1.0
#: A failed preparation is reported to every page asking for it this long, before one tries again
#: (a page reloads every 2 s: without this, each reload would start the same failing work again).
FAILED_S = 30.0
#: The state of a dataset at a moment later than the log's newest event can still change; a page
#: asking for it again gets the one computed at most this long ago, when the log has grown since.
LIVE_S = 30.0
#: States at a moment kept, least recently used dropped (each holds a dataset's annotations).
STATES_SIZE = 16
#: Datasets ``warm`` prepares at a server's start, most recently active first.
WARM_DATASETS = 20


class Pending(Exception):
    """What a page needs is being prepared on a thread: the page says what, and reloads itself."""

    def __init__(self, what: str, started: float) -> None:
        super().__init__(what)
        self.what = what
        self.started = started

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started


class PreparationFailed(Exception):
    """The background work a page needs failed: said on the page (503) until ``FAILED_S`` has passed."""

    def __init__(self, what: str, error: BaseException) -> None:
        super().__init__(f"{what} failed: {error}")
        self.what = what
        self.error = error


@dataclass
class _Job:
    what: str
    started: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


#: Work running in the background, by what it prepares; a second request for it joins the first.
_jobs: dict[tuple[Any, ...], _Job] = {}
#: Jobs that failed in the last ``FAILED_S``, by what they prepared.
_failed: dict[tuple[Any, ...], _Job] = {}


def _start(key: tuple[Any, ...], what: str, compute: Callable[[], object]) -> _Job:
    """The job preparing ``key``: the running one, one that failed lately, or a new one on a thread."""
    with _lock:
        job = _jobs.get(key) or _failed.get(key)
        if job is not None and not (job.error is not None and time.monotonic() - job.started > FAILED_S):
            return job
        _failed.pop(key, None)
        job = _jobs[key] = _Job(what)
    threading.Thread(target=_run, args=(key, job, compute), name=f"commine-ui: {what}", daemon=True).start()
    return job


def _run(key: tuple[Any, ...], job: _Job, compute: Callable[[], object]) -> None:
    try:
        compute()
    except BaseException as exc:  # handed to every request for it until FAILED_S has passed
        job.error = exc
        log.exception("preparing %s failed", job.what)
    finally:
        with _lock:
            _jobs.pop(key, None)
            if job.error is not None:
                _failed[key] = job
        job.done.set()


def _prepared(
    key: tuple[Any, ...], what: str, lookup: Callable[[], Any], compute: Callable[[], object], wait: float | None
) -> Any:
    """``lookup()`` once ``compute()`` (run on a thread) has stored it; ``Pending`` if that takes over ``wait``
    seconds (None waits for it, ``PAGE`` waits ``FIRST_WAIT_S``). A failure is raised to the requests for it
    in the next ``FAILED_S``; the first one after that tries again."""
    found = lookup()
    if found is not _MISSING:
        return found
    job = _start(key, what, compute)
    job.done.wait(FIRST_WAIT_S if wait == PAGE else wait)
    found = lookup()
    if found is not _MISSING:
        return found
    if job.done.is_set() and job.error is not None:
        raise PreparationFailed(job.what, job.error) from job.error
    raise Pending(job.what, job.started)


def latest_version(conn: Connection, dataset_id: str) -> int | None:
    return conn.execute(sa.select(sa.func.max(t.models.c.version)).where(t.models.c.dataset_id == dataset_id)).scalar()


def view_of(store: EventStore, dataset_id: str, *, wait: float | None = PAGE) -> DatasetView:
    """The dataset's arrays with its newest model.

    Built once on a thread (a page that cannot wait for it answers ``Pending``), then answered from
    memory; when a new model version lands (or the view is older than ``REFRESH_S``) the old view
    keeps answering while a thread builds the new one.
    """
    with store.engine.connect() as conn:
        version = latest_version(conn, dataset_id)
    base = (str(store.engine.url), dataset_id)
    key = ("view", *base)
    what = "loading the dataset's messages, embeddings and predictions"
    with _lock:
        current = _views.get(base)
    if current is None:
        return _prepared(key, what, lambda: _views.get(base, (None, None, _MISSING))[2], _builder(store, base), wait)
    built_version, built_at, view = current
    if built_version != version or time.monotonic() - built_at > REFRESH_S:
        _start(key, what, _builder(store, base, derive=True))
    return view


def _builder(store: EventStore, base: tuple[str, str], *, derive: bool = False) -> Callable[[], None]:
    """Build the dataset's view; with ``derive``, its clusters and dates too before it replaces the old
    one, so that Discover and Reports go on answering at once across a new model version."""

    def build() -> None:
        view = offload.run(load_view, store, base[1])
        view.ui_generation = next(_generations)  # type: ignore[attr-defined]  # memo keys; never reused
        if derive:
            _clusters(view, None)
            weeks_of(store, base[1], view, wait=None)
        with _lock:
            _views[base] = (view.version, time.monotonic(), view)
        # A view is hundreds of thousands of long-lived objects: keep them out of the cyclic collector's
        # passes, which would otherwise slow every later request (they are still freed when replaced).
        gc.collect()
        gc.freeze()

    return build


def _memo_key(view: DatasetView, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (generation_of(view), name, *args)


def memo(view: DatasetView, name: str, args: tuple[Any, ...], compute: Callable[[], T]) -> T:
    """``compute()``, remembered for this view (its results change only when the view does)."""
    key = _memo_key(view, name, args)
    found = _memo.get(key)
    if found is not _MISSING:
        return found  # type: ignore[no-any-return]
    value = compute()
    _memo.put(key, value)
    return value


def prepared_memo(view: DatasetView, name: str, compute: Callable[[], T], what: str, wait: float | None = PAGE) -> T:
    """``memo`` for work too long for a request (seconds at 100,000 messages): computed on a thread."""
    key = _memo_key(view, name, ())
    return _prepared(("memo", *key), what, lambda: _memo.get(key), lambda: _memo.put(key, compute()), wait)  # type: ignore[no-any-return]


#: How deep a Refine queue is ranked (the page shows the first 25 of them with a reason).
REFINE_DEPTH = 200


def ranked(
    view: DatasetView, mode: str, n: int, label: str | None = None, query: str | None = None
) -> list[dict[str, Any]]:
    """The first ``n`` of the active-learning queue ``mode``, remembered with the view."""
    return memo(view, "queue", (mode, n, label, query), lambda: queue(view, mode, n=n, label=label, query=query))


def generation_of(view: DatasetView) -> int:
    """Which build of its dataset's view this is: what a page derived from it can be checked against."""
    return getattr(view, "ui_generation", id(view))


def index_of(view: DatasetView) -> dict[str, int]:
    """Each uid's row in the view."""
    return memo(view, "index", (), lambda: {uid: i for i, uid in enumerate(view.uids)})


def clusters_with_view(
    store: EventStore, dataset_id: str, *, wait: float | None = PAGE
) -> tuple[DatasetView, list[dict[str, Any]]]:
    """The dataset's view and the clusters of its unreviewed messages (``insight.discover``)."""
    view = view_of(store, dataset_id, wait=wait)
    return view, _clusters(view, wait)


def _clusters(view: DatasetView, wait: float | None) -> list[dict[str, Any]]:
    return prepared_memo(view, "clusters", lambda: discover(view), "clustering the unreviewed messages", wait)


def clusters_of(store: EventStore, dataset_id: str, *, wait: float | None = PAGE) -> list[dict[str, Any]]:
    return clusters_with_view(store, dataset_id, wait=wait)[1]


def weeks_of(
    store: EventStore, dataset_id: str, view: DatasetView, *, wait: float | None = PAGE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each message's own timestamp (when it was sent, as datetime64[s]), the ISO weeks in order, and each
    message's week (an index into them), in the view's order."""

    def compute() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m, ds = t.messages, t.dataset_sources
        query = (
            sa.select(m.c.source_id, m.c.comment_id, m.c.timestamp)
            .join(ds, ds.c.source_id == m.c.source_id)
            .where(ds.c.dataset_id == dataset_id)
        )
        with store.engine.connect() as conn:
            stamps = {f"{s}.{c}": as_utc(at) for s, c, at in conn.execute(query)}
        dates = [stamps.get(uid) or at for uid, at in zip(view.uids, view.created_at, strict=True)]
        moments = np.array([d.replace(tzinfo=None) for d in dates], dtype="datetime64[s]")
        weeks, index = np.unique(np.array([d.strftime("%G-W%V") for d in dates]), return_inverse=True)
        return moments, weeks, index

    return prepared_memo(view, "weeks", compute, "reading every message's date", wait)


def properties_of(store: EventStore, dataset_id: str, view: DatasetView) -> dict[str, np.ndarray]:
    """Per user property, each message's value as text ("" without one), in the view's order.

    Read from the log (the comments are opened once, like the view's texts) and kept with the view:
    only the Reports page's user-property filter asks for it.
    """

    def compute() -> dict[str, np.ndarray]:
        with store.engine.connect() as conn:
            rows = mldata.dataset_messages(conn, dataset_id)
            found = mldata.comments(conn, [row.position for row in rows])
        by_uid = {row.uid: found[row.position].get("user_properties") or {} for row in rows}
        keys = sorted({key for props in by_uid.values() for key in props})
        return {key: np.array([str(by_uid.get(uid, {}).get(key, "")) for uid in view.uids]) for key in keys}

    return memo(view, "properties", (), compute)


#: States at a moment: (log head they were computed at, when, the state).
_states = _Lru(STATES_SIZE)


def state_at(store: EventStore, dataset: str, moment: datetime, *, wait: float | None = PAGE) -> dict[str, Any]:
    """The dataset PROJECT/NAME as the log had it at ``moment`` (``handlers.history.dataset_at``, a replay:
    seconds at 100,000 messages), prepared in the background and kept.

    Once the log holds an event recorded after ``moment`` the answer is final (``recorded_at`` never
    goes backwards along the log). Before that it can still change, so it is computed again when the
    log has grown, at most every ``LIVE_S``: one replay at a time per moment, however busy the log.
    """
    moment = as_utc(moment).astimezone(UTC)
    key = ("state", str(store.engine.url), dataset, moment.isoformat())
    head, newest = _head(store)
    settled = newest is not None and newest > moment
    found = _states.get(key)
    if found is not _MISSING:
        position, computed_at, state = found
        if settled or position == head or time.monotonic() - computed_at < LIVE_S:
            return state
        _start(key, _rebuilding(moment), _state_builder(store, dataset, moment, key, head))
        return state  # the newer one is on its way; this one was true a moment ago

    def lookup() -> Any:
        kept = _states.get(key)
        return kept if kept is _MISSING else kept[2]

    return _prepared(key, _rebuilding(moment), lookup, _state_builder(store, dataset, moment, key, head), wait)  # type: ignore[no-any-return]


def _head(store: EventStore) -> tuple[int, datetime | None]:
    """The log's last position and when it was recorded."""
    e = t.events
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(e.c.position, e.c.recorded_at).order_by(e.c.position.desc()).limit(1)).first()
    return (0, None) if row is None else (row.position, as_utc(row.recorded_at))


def _rebuilding(moment: datetime) -> str:
    return f"rebuilding the dataset as it stood at {moment:%Y-%m-%d %H:%M:%S} UTC from the log"


def _state_builder(
    store: EventStore, dataset: str, moment: datetime, key: tuple[Any, ...], head: int
) -> Callable[[], None]:
    def rebuild() -> None:
        _states.put(key, (head, time.monotonic(), offload.run(history.dataset_at, store, dataset, moment)))

    return rebuild


def warm(store: EventStore) -> threading.Thread:
    """Prepare every dataset's view, clusters and dates on a thread, newest activity first (``commine serve``
    starts it), so that the first visits after a server start find them ready."""

    def run() -> None:
        query = sa.select(t.datasets.c.dataset_id).order_by(t.datasets.c.last_modified.desc()).limit(WARM_DATASETS)
        with store.engine.connect() as conn:
            ids = list(conn.execute(query).scalars())
        for dataset_id in ids:
            try:
                view = view_of(store, dataset_id, wait=None)
                clusters_of(store, dataset_id, wait=None)
                weeks_of(store, dataset_id, view, wait=None)
                # The queues Explore and Refine open on (ranking them takes up to a second at 100,000).
                ranked(view, "shuffle", 50)
                if view.version is not None:
                    ranked(view, "low-confidence", 50)
                    for mode in ("check", "missed"):
                        ranked(view, mode, REFINE_DEPTH)
            except Exception:
                log.exception("preparing dataset %s for the web UI failed", dataset_id)

    thread = threading.Thread(target=run, name="commine-ui: warm", daemon=True)
    thread.start()
    return thread


def reviewed(conn: Connection, dataset_id: str, uids: list[str]) -> set[str]:
    """Those uids with any label decision in the dataset now."""
    a = t.annotations
    found: set[str] = set()
    for start in range(0, len(uids), 1000):  # a whole cluster can be thousands
        query = sa.select(a.c.uid, a.c.assigned, a.c.dismissed).where(
            a.c.dataset_id == dataset_id, a.c.uid.in_(uids[start : start + 1000])
        )
        found.update(uid for uid, assigned, dismissed in conn.execute(query) if assigned or dismissed)
    return found


def message_row(conn: Connection, dataset_id: str, uid: str) -> Any:
    source_id, _, comment_id = uid.partition(".")
    m, ds = t.messages, t.dataset_sources
    return conn.execute(
        sa.select(m)
        .join(ds, ds.c.source_id == m.c.source_id)
        .where(ds.c.dataset_id == dataset_id, m.c.source_id == source_id, m.c.comment_id == comment_id)
        .where(m.c.deleted.is_(False))
    ).first()


def predictions(conn: Connection, dataset_id: str, version: int | None, uid: str) -> list[tuple[str, float]]:
    """The model version's probabilities for one message, best first."""
    if version is None:
        return []
    p = t.predictions
    found = conn.execute(
        sa.select(p.c.labels).where(p.c.dataset_id == dataset_id, p.c.model_version == version, p.c.uid == uid)
    ).scalar()
    return sorted((found or {}).items(), key=lambda item: -item[1])


def model_rows(conn: Connection, dataset_id: str) -> list[Any]:
    return list(
        conn.execute(
            sa.select(t.models.c.version, t.models.c.trained_at, t.models.c.training_size)
            .where(t.models.c.dataset_id == dataset_id)
            .order_by(t.models.c.version.desc())
        )
    )


def model_metrics(conn: Connection, dataset_id: str, version: int | None) -> Any:
    """A model version's row (the newest with None); kept in memory, since a recorded version never changes."""
    if version is None:
        version = latest_version(conn, dataset_id)
        if version is None:
            return None
    key = (str(conn.engine.url), dataset_id, version)
    found = _models.get(key)
    if found is _MISSING:
        found = mldata.model_row(conn, dataset_id, version)
        if found is not None:
            _models.put(key, found)
    return found


_QUOTE_START = re.compile(r"^(>|On .+ wrote:\s*$|-{2,} ?Original Message ?-{2,}|From: .+)", re.IGNORECASE)


def split_quoted(text: str) -> tuple[str, str]:
    """A body's own text and its quoted tail (from the first quoting line on), for folding the quote."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if index > 0 and _QUOTE_START.match(line.strip()):
            return "\n".join(lines[:index]).rstrip(), "\n".join(lines[index:])
    return text, ""


def at_threshold(curve: dict[str, list[float]], threshold: float) -> tuple[float | None, float | None]:
    """Precision and recall of a stored precision-recall curve at ``threshold`` (the first point at or above it)."""
    cuts = curve.get("thresholds", [])
    points = zip(curve.get("precision", [])[: len(cuts)], curve.get("recall", [])[: len(cuts)], cuts, strict=True)
    for precision, recall, cut in points:
        if cut >= threshold:
            return precision, recall
    return (1.0, 0.0) if curve.get("thresholds") else (None, None)
