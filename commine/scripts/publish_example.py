"""How an integration publishes comments straight onto the broker, with nothing of commine but pika.

Run it against a running deployment (a worker consuming, the source created)::

    python -m commine.scripts.publish_example PROJECT/SOURCE [--count 3] [--amqp-url URL] [--prefix commine]

It publishes one ingest batch with publisher confirms and mandatory routing: when
``basic_publish`` returns, RabbitMQ has the batch on a durable queue, and a worker will store
it (the batch's receipt in the ``ingest_receipts`` table says what became new or updated).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import UTC, datetime

import pika


def ingest_message(prefix: str, body: dict[str, object]) -> bytes:
    """The dramatiq envelope the ``ingest`` actor consumes, around one ingest batch."""
    return json.dumps(
        {
            "queue_name": f"{prefix}.ingest",
            "actor_name": "ingest",
            "args": [body],
            "kwargs": {},
            "options": {},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
        }
    ).encode()


def example_batch(source: str, count: int) -> dict[str, object]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    comments = [
        {
            "id": f"example-{uuid.uuid4().hex[:12]}",
            "timestamp": now,
            "messages": [
                {
                    "from": "customer@example.com",
                    "to": ["support@example.com"],
                    "subject": {"text": "Refund for order 4711"},
                    "body": {"text": f"Hello, I was charged twice for order 4711 ({i}). Please refund one."},
                }
            ],
            "user_properties": {"string:Channel": "email", "number:Order Value": 84.2},
        }
        for i in range(count)
    ]
    return {"batch_id": uuid.uuid4().hex, "source": source, "actor": "integration:example", "comments": comments}


def publish(amqp_url: str, prefix: str, body: dict[str, object]) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # basic_publish now raises unless the broker confirmed
        channel.basic_publish(
            exchange="",
            routing_key=f"{prefix}.ingest",
            body=ingest_message(prefix, body),
            properties=pika.BasicProperties(delivery_mode=2, content_type="application/json"),
            mandatory=True,  # an unroutable message (no such queue yet) raises instead of vanishing
        )
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="PROJECT/SOURCE, created beforehand with `commine sources add`")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/%2F")
    parser.add_argument("--prefix", default="commine", help="COMMINE_QUEUE_PREFIX of the deployment")
    args = parser.parse_args()
    body = example_batch(args.source, args.count)
    publish(args.amqp_url, args.prefix, body)
    print(f"published batch {body['batch_id']} with {args.count} comment(s) to {args.prefix}.ingest")


if __name__ == "__main__":
    main()
