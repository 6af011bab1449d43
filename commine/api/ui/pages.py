"""Navigation, sign-in, the dataset workspace, the message view, Explore, Discover and Refine."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from commine.api.deps import Store
from commine.api.errors import ApiError
from commine.api.routes.labellings import _annotated
from commine.api.ui.core import COOKIE, PageError, PageUser, can, need, render
from commine.api.ui.data import (
    REFINE_DEPTH,
    clusters_with_view,
    generation_of,
    index_of,
    latest_version,
    memo,
    message_row,
    predictions,
    ranked,
    reviewed,
    split_quoted,
    view_of,
)
from commine.api.views import dataset_row
from commine.domain.access import LABELS_READ, SOURCES_READ, SOURCES_READ_SENSITIVE, Principal, allowed
from commine.handlers.insight import summary, thresholds
from commine.persistence import schema as t

router = APIRouter(include_in_schema=False)

#: Messages per page of the message list.
PAGE = 25
EXPLORE_QUEUES = ("shuffle", "teach", "low-confidence", "search")
REFINE_QUEUES = ("check", "missed", "rebalance")


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", None, next=_safe(next), error=None)


def _safe(target: str) -> str:
    """Only a path of this site to go on to after signing in."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.post("/login")
async def login(request: Request, store: Store) -> Response:
    """Sign in with an API token (``commine tokens issue USER``): kept in an HttpOnly cookie."""
    form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
    token, target = form.get("token", "").strip(), _safe(form.get("next", "/"))
    # Off the event loop: the look-up, and the catch-up it makes when the read models are behind.
    if not token or await run_in_threadpool(store.authenticate, token) is None:
        return render(request, "login.html", None, status=401, next=target, error="unknown or revoked token")
    answer = RedirectResponse(target, status_code=303)
    secure = request.url.scheme == "https"
    answer.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, max_age=12 * 3600)
    return answer


@router.post("/logout")
def logout() -> Response:
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(COOKIE)
    return answer


def _visible(user: Principal, project: str) -> bool:
    return user.admin or bool(user.permissions.get(project))


@router.get("/", response_class=HTMLResponse)
def home(request: Request, store: Store, user: PageUser) -> HTMLResponse:
    """Projects the user holds a permission in, each with its sources and datasets."""
    with store.store.engine.connect() as conn:
        projects = [
            r for r in conn.execute(sa.select(t.projects).order_by(t.projects.c.name)) if _visible(user, r.name)
        ]
        names = [p.name for p in projects]
        sources = conn.execute(
            sa.select(t.sources).where(t.sources.c.project.in_(names), t.sources.c.purged.is_(False))
        ).all()
        datasets = conn.execute(sa.select(t.datasets).where(t.datasets.c.project.in_(names))).all()
    listing = [
        {
            "project": p,
            "sources": sorted(
                (s for s in sources if s.project == p.name and allowed(user, p.name, SOURCES_READ)),
                key=lambda s: s.name,
            ),
            "datasets": sorted(
                (d for d in datasets if d.project == p.name and allowed(user, p.name, LABELS_READ)),
                key=lambda d: d.name,
            ),
        }
        for p in projects
    ]
    return render(request, "home.html", user, listing=listing)


def workspace(store: Store, user: Principal, project: str, name: str, page: str) -> dict[str, Any]:
    """The dataset, its newest model version and what the user may do: every workspace page's context."""
    need(user, project, LABELS_READ, "reading this dataset")
    with store.store.engine.connect() as conn:
        try:
            dataset = dataset_row(conn, project=project, name=name)
        except ApiError as exc:
            raise PageError(exc.status_code, exc.message) from None
        version = latest_version(conn, dataset.dataset_id)
        labels = list(
            conn.execute(
                sa.select(t.labels.c.name).where(t.labels.c.dataset_id == dataset.dataset_id).order_by(t.labels.c.name)
            ).scalars()
        )
    return {
        "dataset": dataset,
        "project": project,
        "name": name,
        "base": f"/d/{project}/{name}",
        "version": version,
        "labels": labels,
        "can": can(user, project),
        "page": page,
    }


@router.get("/d/{project}/{name}", response_class=HTMLResponse)
def dataset_home(request: Request, project: str, name: str, store: Store, user: PageUser) -> HTMLResponse:
    ws = workspace(store, user, project, name, "overview")
    with store.store.engine.connect() as conn:
        dataset_id = ws["dataset"].dataset_id
        reviewed_count = conn.execute(
            sa.select(sa.func.count()).select_from(t.annotations).where(t.annotations.c.dataset_id == dataset_id)
        ).scalar()
        sources = conn.execute(
            sa.select(t.sources.c.project, t.sources.c.name, t.sources.c.source_id)
            .join(t.dataset_sources, t.dataset_sources.c.source_id == t.sources.c.source_id)
            .where(t.dataset_sources.c.dataset_id == dataset_id)
        ).all()
    return render(request, "dataset.html", user, **ws, reviewed_count=reviewed_count, sources=sources)


@router.get("/d/{project}/{name}/messages", response_class=HTMLResponse)
def messages(request: Request, project: str, name: str, store: Store, user: PageUser, after: str = "") -> HTMLResponse:
    """The dataset's messages, newest first, a page at a time (keyset paging on created_at, uid)."""
    ws = workspace(store, user, project, name, "messages")
    m, ds = t.messages, t.dataset_sources
    query = (
        sa.select(m.c.source_id, m.c.comment_id, m.c.timestamp, m.c.position, m.c.created_at)
        .join(ds, ds.c.source_id == m.c.source_id)
        .where(ds.c.dataset_id == ws["dataset"].dataset_id, m.c.deleted.is_(False))
    )
    if after.isdigit():
        query = query.where(m.c.position < int(after))
    with store.store.engine.connect() as conn:
        rows = list(conn.execute(query.order_by(m.c.position.desc()).limit(PAGE + 1)))
        items = _annotated(conn, ws["dataset"], rows[:PAGE], allowed(user, project, SOURCES_READ_SENSITIVE))
    more = rows[PAGE - 1].position if len(rows) > PAGE else None
    return render(request, "messages.html", user, **ws, items=items, after=more)


def message_context(store: Store, user: Principal, ws: dict[str, Any], uid: str) -> dict[str, Any]:
    """One message as the message view shows it: thread, labelling, predictions with confidence."""
    dataset = ws["dataset"]
    with store.store.engine.connect() as conn:
        row = message_row(conn, dataset.dataset_id, uid)
        if row is None:
            raise PageError(404, f"no message {uid} in this dataset")
        [item] = _annotated(conn, dataset, [row], allowed(user, ws["project"], SOURCES_READ_SENSITIVE))
        predicted = predictions(conn, dataset.dataset_id, ws["version"], uid)
        thread = _thread(conn, row)
    labelling = (item.get("labelling") or [{}])[0]
    assigned = [(" > ".join(_parts(a["name"])), a.get("sentiment")) for a in labelling.get("assigned", [])]
    dismissed = [" > ".join(_parts(d["name"])) for d in labelling.get("dismissed", [])]
    parts = []
    for message in item["comment"].get("messages", []):
        own, quoted = split_quoted((message.get("body") or {}).get("text", ""))
        parts.append({**message, "own": own, "quoted": quoted})
    return {
        "uid": uid,
        "comment": item["comment"],
        "parts": parts,
        "assigned": assigned,
        "dismissed": dismissed,
        "predicted": [(n, p) for n, p in predicted[:8] if p >= 0.05],
        "thread": thread,
    }


def _thread(conn: Any, row: Any) -> list[tuple[str, Any]]:
    """The other messages of the message's thread (same source, same thread id), oldest first, up to 20."""
    if not row.thread_id:
        return []
    m = t.messages
    query = (
        sa.select(m.c.comment_id, m.c.timestamp)
        .where(m.c.source_id == row.source_id, m.c.thread_id == row.thread_id, m.c.deleted.is_(False))
        .where(m.c.comment_id != row.comment_id)
        .order_by(m.c.timestamp)
        .limit(20)
    )
    return [(f"{row.source_id}.{comment_id}", at) for comment_id, at in conn.execute(query)]


def _parts(name: str | list[str]) -> list[str]:
    return [name] if isinstance(name, str) else name


@router.get("/d/{project}/{name}/m/{uid}", response_class=HTMLResponse)
def message(request: Request, project: str, name: str, uid: str, store: Store, user: PageUser) -> HTMLResponse:
    ws = workspace(store, user, project, name, "messages")
    return render(request, "message.html", user, **ws, m=message_context(store, user, ws, uid), queue_name="")


def next_in_queue(
    store: Store, ws: dict[str, Any], mode: str, label: str | None, q: str | None, skip: set[str]
) -> dict[str, Any] | None:
    """The first message of the queue not reviewed since the view was built and not skipped."""
    view = view_of(store.store, ws["dataset"].dataset_id)
    if mode in ("teach",) and (label is None or label not in view.labels):
        return None
    if mode == "search" and not q:
        return None
    if mode != "shuffle" and view.version is None and mode != "search":
        raise PageError(409, "this queue needs a model: label a few messages from Shuffle first")
    for n in (50, 400):
        picked = ranked(view, mode, n, label if mode == "teach" else None, q)
        with store.store.engine.connect() as conn:
            done = reviewed(conn, ws["dataset"].dataset_id, [p["uid"] for p in picked])
        for item in picked:
            if item["uid"] not in done and item["uid"] not in skip:
                return item
    return None


@router.get("/d/{project}/{name}/explore", response_class=HTMLResponse)
def explore(
    request: Request,
    project: str,
    name: str,
    store: Store,
    user: PageUser,
    queue_name: str = "shuffle",
    label: str = "",
    q: str = "",
    skip: str = "",
) -> HTMLResponse:
    """One message after another from a queue; each decision is an annotation event."""
    ws = workspace(store, user, project, name, "explore")
    if queue_name not in EXPLORE_QUEUES:
        raise PageError(400, f"unknown queue {queue_name!r}; one of {', '.join(EXPLORE_QUEUES)}")
    skipped = [s for s in skip.split(",") if s][-50:]
    item = next_in_queue(store, ws, queue_name, label or None, q or None, set(skipped))
    m = message_context(store, user, ws, item["uid"]) if item else None
    return render(
        request, "explore.html", user, **ws, m=m, queue_name=queue_name, label=label, q=q, skip=",".join(skipped)
    )


#: Clusters the Discover page lists, and members a cluster's own page lists (to tick a part of it).
CLUSTERS_SHOWN, MEMBERS_SHOWN = 30, 500


@router.get("/d/{project}/{name}/discover", response_class=HTMLResponse)
def discover_page(
    request: Request, project: str, name: str, store: Store, user: PageUser, cluster: int | None = None
) -> HTMLResponse:
    """Clusters of unreviewed messages with their top terms and examples, or one cluster's members
    (``cluster``); label a whole cluster, or the ticked messages, in one action."""
    ws = workspace(store, user, project, name, "discover")
    view, found = clusters_with_view(store.store, ws["dataset"].dataset_id)
    shown = [{**c, "number": k} for k, c in enumerate(found[:CLUSTERS_SHOWN])]
    if cluster is not None:
        if not 0 <= cluster < len(found):
            raise PageError(404, f"no cluster {cluster}: the dataset has {len(found)} now; go back to Discover")
        index = index_of(view)
        members = [summary(view, index[uid]) for uid in found[cluster]["uids"][:MEMBERS_SHOWN]]
        shown = [{**found[cluster], "number": cluster, "examples": members}]
    context = {"clusters": shown, "generation": generation_of(view), "single": cluster is not None}
    return render(request, "discover.html", user, **ws, **context)


def _reasons(view: Any, i: int | None, mode: str, cut: Any, label: str | None) -> list[str]:
    """Why a message is in a Refine queue: the labels whose prediction disagrees with its review."""
    if mode == "rebalance" or i is None:
        return ["from a kind of message the reviewed set under-represents"]
    scores, truth = view.pool.scores[i], view.pool.truth[i]
    wrong = (truth & (scores < cut)) if mode == "check" else (~truth & (scores >= cut))
    verb = "assigned" if mode == "check" else "not assigned"
    return [
        f"{verb} {view.labels[j]}, but the model gives it {scores[j]:.2f} (threshold {cut[j]:.2f})"
        for j in wrong.nonzero()[0]
        if not label or view.labels[j] == label
    ]


@router.get("/d/{project}/{name}/refine", response_class=HTMLResponse)
def refine(
    request: Request, project: str, name: str, store: Store, user: PageUser, mode: str = "check", label: str = ""
) -> HTMLResponse:
    """Check label, missed label (optionally for one label) and rebalance, each message with its reason."""
    ws = workspace(store, user, project, name, "refine")
    if mode not in REFINE_QUEUES:
        raise PageError(400, f"unknown queue {mode!r}; one of {', '.join(REFINE_QUEUES)}")
    view = view_of(store.store, ws["dataset"].dataset_id)
    items: list[dict[str, Any]] = []
    if view.version is not None:
        cut = memo(view, "thresholds", (), lambda: thresholds(view))
        index = index_of(view)
        for item in ranked(view, mode, REFINE_DEPTH):
            why = _reasons(view, index.get(item["uid"]), mode, cut, label or None)
            if why:
                items.append({**item, "reasons": why})
            if len(items) >= 25:
                break
    return render(request, "refine.html", user, **ws, mode=mode, label=label, items=items, has_model=view.version)
