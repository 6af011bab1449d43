"""``commine annotate`` and ``commine labels``: label messages, and rename, merge or delete labels.

Both append straight to the store (like ``commine projects add``): a person is waiting for the
answer. The read models are brought up to date before the command returns, so ``commine labels
list`` and ``commine status`` show the change at once.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import click
from tqdm import tqdm

from commine.domain.annotation import QUEUES, SENTIMENTS
from commine.domain.errors import DomainError
from commine.scripts.context import Context, actor_name, fail, pass_context

if TYPE_CHECKING:
    from commine.handlers.labels import AnnotationRequest

#: Lines of a JSONL file decided and appended together.
CHUNK = 500
#: The keys a JSONL line may have.
LINE_KEYS = {"source", "id", "labels", "dismissed", "sentiment", "remove", "queue"}


@dataclass(frozen=True)
class LineError:
    """A JSONL line that is no request at all (bad JSON, a missing key), with its number."""

    line: int
    reason: str


def parse_line(text: str) -> Any:
    """One JSONL line as an ``AnnotationRequest``; raises ``ValueError`` saying what is wrong."""
    from commine.handlers.labels import AnnotationRequest

    try:
        item = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from None
    if not isinstance(item, dict):
        raise ValueError('each line must be a JSON object {"source": ..., "id": ..., "labels": [...]}')
    unknown = sorted(set(item) - LINE_KEYS)
    if unknown:
        raise ValueError(f"unknown key(s): {', '.join(unknown)}")
    for key in ("source", "id"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise ValueError(f"{key!r} must be a non-empty string")
    lists = {key: item.get(key) or [] for key in ("labels", "dismissed", "remove")}
    for key, value in lists.items():
        if not isinstance(value, list) or not all(isinstance(v, str | list) for v in value):
            raise ValueError(f"{key!r} must be a list of label names")
    sentiment = item.get("sentiment")
    if sentiment is not None and sentiment not in SENTIMENTS:
        raise ValueError("'sentiment' must be positive, negative or null")
    queue = item.get("queue") or ""
    if queue not in ("", *QUEUES):
        raise ValueError(f"'queue' must be one of {', '.join(QUEUES)}")
    return AnnotationRequest(
        source=item["source"],
        comment_id=item["id"],
        labels=tuple(lists["labels"]),
        dismissed=tuple(lists["dismissed"]),
        sentiment=sentiment,
        remove=tuple(lists["remove"]),
        queue=queue,
    )


def read_requests(handle: IO[str]) -> Iterator[tuple[int, Any]]:
    """(line number, request or ``LineError``) for each non-blank line."""
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            yield number, parse_line(text)
        except ValueError as exc:
            yield number, LineError(number, str(exc))


def chunks(items: Iterator[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    chunk: list[tuple[int, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def refresh_read_models(store: Any) -> None:
    """Bring the read models up to the change just made (a worker may be at it already)."""
    from commine.persistence.projections import catch_up

    catch_up(store, wait=False)


def _labels_text(assigned: Sequence[dict[str, Any]], dismissed: Sequence[str]) -> str:
    shown = [a["name"] + (f" ({a['sentiment']})" if a.get("sentiment") else "") for a in assigned]
    text = "labels: " + (", ".join(shown) or "none")
    return text + (f"; dismissed: {', '.join(dismissed)}" if dismissed else "")


@click.command()
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("source", required=False, metavar="[SOURCE")
@click.argument("comment_id", required=False, metavar="COMMENT_ID]")
@click.option("--label", "labels", multiple=True, metavar="NAME", help='Assign, e.g. "Billing > Refund". Repeatable.')
@click.option("--dismiss", "dismissed", multiple=True, metavar="NAME", help="Say this label does not apply.")
@click.option("--sentiment", type=click.Choice(SENTIMENTS), default=None, help="For the labels assigned here.")
@click.option("--remove", "removed", multiple=True, metavar="NAME", help="Take off a label and its children.")
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), default=None, help="JSONL requests; - = stdin.")
@click.option(
    "--queue",
    type=click.Choice(QUEUES),
    default=None,
    help="The queue the message came from (commine queue --mode); shuffle counts as reviewed at random.",
)
@pass_context
def annotate(
    ctx: Context,
    dataset: str,
    source: str | None,
    comment_id: str | None,
    labels: tuple[str, ...],
    dismissed: tuple[str, ...],
    sentiment: str | None,
    removed: tuple[str, ...],
    file: IO[str] | None,
    queue: str | None,
) -> None:
    """Label one message, or many from a JSONL file.

    One message: SOURCE (PROJECT/SOURCE, or a source name in the dataset's project) and
    COMMENT_ID, with --label, --dismiss and --remove. Labels add to what the message has; a
    child implies its parent; a label not yet in the taxonomy is added to it.

    Many: --file, one JSON object a line: {"source": "P/S", "id": "...", "labels": [...],
    "dismissed": [...], "sentiment": "positive"|"negative"|null, "remove": [...], "queue": "shuffle"}. Every good
    line is applied; bad ones are reported by line number and make the command exit 1.
    """
    if file is not None:
        if source or comment_id or labels or dismissed or sentiment or removed or queue:
            fail("--file takes the requests from the file: give no SOURCE, COMMENT_ID or label options with it")
        _annotate_file(ctx, dataset, file)
        return
    if not (source and comment_id):
        fail("name a message (SOURCE COMMENT_ID) or give --file")
        return
    if not (labels or dismissed or removed):
        fail("nothing to do: give --label, --dismiss or --remove")
    from commine.handlers.labels import AnnotationRequest

    request = AnnotationRequest(source, comment_id, labels, dismissed, sentiment, removed, queue=queue or "")
    _annotate_one(ctx, dataset, request)


def _annotate_one(ctx: Context, dataset: str, request: AnnotationRequest) -> None:
    from commine.handlers.labels import ERROR
    from commine.handlers.labels import annotate as annotate_messages

    try:
        (result,) = annotate_messages(ctx.store, dataset, [request], actor=actor_name())
    except DomainError as exc:
        fail(str(exc))
    if result.outcome == ERROR:
        fail(result.reason)
    refresh_read_models(ctx.store)
    where = f"{request.source} {request.comment_id}"
    click.echo(f"{result.outcome}: {where}: {_labels_text(result.assigned, result.dismissed)}")


def _annotate_file(ctx: Context, dataset: str, handle: IO[str]) -> None:
    from commine.handlers.labels import APPLIED, ERROR, UNCHANGED

    store, actor = ctx.store, actor_name()
    counts = {APPLIED: 0, UNCHANGED: 0}
    errors: list[LineError] = []
    with tqdm(unit="line", desc="annotate", file=sys.stderr, disable=None) as bar:
        for chunk in chunks(read_requests(handle), CHUNK):
            errors.extend(item for _, item in chunk if isinstance(item, LineError))
            for number, result in _apply_chunk(store, dataset, chunk, actor):
                if result.outcome == ERROR:
                    errors.append(LineError(number, result.reason))
                else:
                    counts[result.outcome] += 1
            bar.update(len(chunk))
    refresh_read_models(store)
    name = getattr(handle, "name", "-")
    for error in sorted(errors, key=lambda e: e.line):
        click.echo(f"{name}: line {error.line}: {error.reason}", err=True)
    click.echo(f"{counts[APPLIED]} applied, {counts[UNCHANGED]} unchanged, {len(errors)} error(s)")
    if errors:
        sys.exit(1)


def _apply_chunk(store: Any, dataset: str, chunk: list[tuple[int, Any]], actor: str) -> list[tuple[int, Any]]:
    """The good requests of a chunk applied: (line number, result) for each."""
    from commine.handlers.labels import annotate as annotate_messages

    good = [(number, item) for number, item in chunk if not isinstance(item, LineError)]
    if not good:
        return []
    try:
        results = annotate_messages(store, dataset, [item for _, item in good], actor=actor)
    except DomainError as exc:
        fail(str(exc))
    return [(number, result) for (number, _), result in zip(good, results, strict=True)]


# --- commine labels --------------------------------------------------------------------------------


@click.group()
def labels() -> None:
    """The taxonomy of a dataset: list, add, rename, merge and delete labels.

    Renaming, merging and deleting reach every annotation: messages labelled with the old name
    carry the new one. A label's children go with it (`A > x` becomes `B > x`).
    """


def _dataset_id(store: Any, dataset: str) -> str:
    from commine.handlers.commands import get_dataset

    try:
        return get_dataset(store, dataset).dataset_id
    except DomainError as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


@labels.command("list")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@pass_context
def labels_list(ctx: Context, dataset: str, as_json: bool) -> None:
    """Each label with how many messages have it assigned and dismissed."""
    from commine.persistence.projections import catch_up
    from commine.persistence.readmodels import labels as read_labels

    dataset_id = _dataset_id(ctx.store, dataset)
    catch_up(ctx.store)
    rows = read_labels(ctx.store.engine, dataset_id)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f'no labels in {dataset} yet: commine labels add {dataset} "NAME"')
    width = max((len(row["name"]) for row in rows), default=0)
    for row in rows:
        click.echo(f"{row['name']:<{width}}  {row['assigned']:>7} assigned {row['dismissed']:>7} dismissed")


def _taxonomy_command(ctx: Context, action: Any) -> Any:
    """Run a taxonomy change, turning a broken rule into a clear error, then refresh the read models."""
    try:
        outcome = action()
    except DomainError as exc:
        fail(str(exc))
    refresh_read_models(ctx.store)
    return outcome


@labels.command("add")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@click.option("--description", default="")
@pass_context
def labels_add(ctx: Context, dataset: str, name: str, description: str) -> None:
    """Add the label NAME (and its missing parents) to the taxonomy."""
    from commine.handlers.labels import define_label

    store, actor = ctx.store, actor_name()
    canonical = _taxonomy_command(ctx, lambda: define_label(store, dataset, name, description=description, actor=actor))
    click.echo(f"label {canonical!r} is in {dataset}")


@labels.command("rename")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("old")
@click.argument("new")
@pass_context
def labels_rename(ctx: Context, dataset: str, old: str, new: str) -> None:
    """Rename the label OLD (and its children) to NEW, in every annotation too."""
    from commine.handlers.labels import rename_label

    store, actor = ctx.store, actor_name()
    renamed = _taxonomy_command(ctx, lambda: rename_label(store, dataset, old, new, actor=actor))
    click.echo(f"renamed {old!r} to {renamed!r} in {dataset}")


@labels.command("merge")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("sources", nargs=-1, required=True, metavar="LABEL...")
@click.option("--into", "target", required=True, metavar="TARGET", help="The label they become (added if missing).")
@pass_context
def labels_merge(ctx: Context, dataset: str, sources: tuple[str, ...], target: str) -> None:
    """Merge labels (and their children) into TARGET, in every annotation too."""
    from commine.handlers.labels import merge_labels

    store, actor = ctx.store, actor_name()
    merged = _taxonomy_command(ctx, lambda: merge_labels(store, dataset, sources, target, actor=actor))
    click.echo(f"merged {', '.join(repr(s) for s in sources)} into {merged!r} in {dataset}")


@labels.command("delete")
@click.argument("dataset", metavar="PROJECT/DATASET")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def labels_delete(ctx: Context, dataset: str, name: str, yes: bool) -> None:
    """Delete the label NAME and its children from the taxonomy and from every annotation."""
    from commine.handlers.labels import delete_label

    if not yes:
        click.confirm(f"delete {name!r} and its children from {dataset} and from every message?", abort=True)
    store, actor = ctx.store, actor_name()
    deleted = _taxonomy_command(ctx, lambda: delete_label(store, dataset, name, actor=actor))
    click.echo(f"deleted {', '.join(repr(d) for d in deleted)} from {dataset}")
