"""Export: a dataset's messages with their annotations and predictions, as JSON lines or CSV.

A customer's right to take their data away (issue 5). Each record is the stored Communications Mining
comment with the dataset's labelling (labels as ``Parent > Child`` strings) and a model version's
probabilities, highest first. Records come in pages read from the log and the read models, in the
dataset's stable message order, so an export of a million messages never holds them all at once and an
interrupted one can go on from the uid it stopped after.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from commine.persistence import mldata, readmodels
from commine.persistence.store import EventStore

#: Messages read per round trip.
PAGE = 500
FORMATS = ("jsonl", "csv")
CSV_COLUMNS = (
    "uid",
    "source_id",
    "comment_id",
    "timestamp",
    "thread_id",
    "from",
    "to",
    "subject",
    "body",
    "user_properties",
    "assigned",
    "dismissed",
    "model_version",
    "predictions",
)


@dataclass(frozen=True)
class Export:
    """What an export covers: the dataset's messages in order, and the model version whose predictions it carries."""

    dataset_id: str
    model_version: int | None
    rows: list[mldata.MessageRow] = field(repr=False)

    @property
    def total(self) -> int:
        return len(self.rows)


def plan(store: EventStore, dataset_id: str, version: int | None = None) -> Export:
    """The export of a dataset under ``version`` (the newest model when None; no predictions without one)."""
    with store.engine.connect() as conn:
        model = mldata.model_row(conn, dataset_id, version)
        if version is not None and model is None:
            raise LookupError(f"dataset {dataset_id} has no model version {version}")
        rows = mldata.dataset_messages(conn, dataset_id)
    return Export(dataset_id, model.version if model is not None else None, rows)


def records(store: EventStore, export: Export, *, after: str | None = None) -> Iterator[dict[str, Any]]:
    """Every message of the export after the uid ``after`` (from the start when None), one dict each."""
    rows = export.rows
    if after is not None:
        uids = [row.uid for row in rows]
        if after not in uids:
            raise LookupError(f"{after!r} is not a message of dataset {export.dataset_id}: cannot go on after it")
        rows = rows[uids.index(after) + 1 :]
    for start in range(0, len(rows), PAGE):
        yield from _page(store, export, rows[start : start + PAGE])


def _page(store: EventStore, export: Export, rows: list[mldata.MessageRow]) -> Iterator[dict[str, Any]]:
    uids = [row.uid for row in rows]
    with store.engine.connect() as conn:
        comments = mldata.comments(conn, [row.position for row in rows])
        labelled = readmodels.annotations_of(conn, export.dataset_id, uids)
        version = export.model_version
        predicted = readmodels.predictions_of(conn, export.dataset_id, version, uids) if version else {}
    for row in rows:
        annotation = labelled.get(row.uid)
        probabilities = predicted.get(row.uid, {})
        yield {
            "uid": row.uid,
            "source_id": row.source_id,
            "comment": comments[row.position],
            "labelling": {
                "assigned": [_assigned(entry) for entry in annotation.assigned] if annotation else [],
                "dismissed": list(annotation.dismissed) if annotation else [],
            },
            "model_version": version,
            "predictions": [
                {"name": name, "probability": p}
                for name, p in sorted(probabilities.items(), key=lambda item: (-item[1], item[0]))
            ],
        }


def _assigned(entry: dict[str, Any]) -> dict[str, Any]:
    return {"name": entry["name"], **({"sentiment": entry["sentiment"]} if entry.get("sentiment") else {})}


def jsonl_line(record: dict[str, Any]) -> str:
    """One record as a line of JSON."""
    return json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"


def csv_header() -> str:
    return _csv_line(list(CSV_COLUMNS))


def csv_line(record: dict[str, Any]) -> str:
    """One record as a CSV row of ``CSV_COLUMNS``: the first message's fields, every body, labels joined by ``; ``."""
    comment = record["comment"]
    messages = comment.get("messages") or [{}]
    first = messages[0]
    bodies = [(m.get("body") or {}).get("text") or "" for m in messages]
    values = [
        record["uid"],
        record["source_id"],
        comment.get("id", ""),
        comment.get("timestamp", ""),
        comment.get("thread_id") or "",
        first.get("from") or "",
        "; ".join(first.get("to") or []),
        (first.get("subject") or {}).get("text") or "",
        "\n\n".join(body for body in bodies if body),
        json.dumps(comment.get("user_properties") or {}, ensure_ascii=False, sort_keys=True),
        "; ".join(entry["name"] for entry in record["labelling"]["assigned"]),
        "; ".join(record["labelling"]["dismissed"]),
        "" if record["model_version"] is None else str(record["model_version"]),
        "; ".join(f"{p['name']}={p['probability']:.4f}" for p in record["predictions"]),
    ]
    return _csv_line(values)


def _csv_line(values: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue()
