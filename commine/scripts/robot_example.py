"""A robot consuming a queue-delivered stream over AMQP, with nothing but pika.

    python -m commine.scripts.robot_example DATASET_ID STREAM_NAME [--reject-label "Billing > Refund"]

Each message is a stream result (``comment``, ``labels`` meeting their thresholds with their
probabilities, ``sequence_id``). The robot acknowledges what it handled; one it cannot handle
goes to the stream's exception queue with a reason (``report_exception``), which commine
records as ``ExceptionReported``. A robot that dies before acknowledging gets nothing lost:
RabbitMQ delivers the message again, to it or to another robot. Delivery is at least once,
so a robot that must not act twice remembers the ``message_id`` (``<stream id>:<sequence id>``).
A message given back after its source was purged comes round again flagged as redelivered; the
robot asks ``purged_message`` and acknowledges such a message unread.
"""

from __future__ import annotations

import json
import os

import click
import pika

from commine.broker.streams import (
    declare_stream_topology,
    purged_message,
    report_exception,
    stream_queue,
    supports_quorum,
)


@click.command()
@click.argument("dataset_id")
@click.argument("stream_name")
@click.option("--amqp-url", default=lambda: os.environ.get("COMMINE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"))
@click.option("--prefix", default=lambda: os.environ.get("COMMINE_QUEUE_PREFIX", "commine"))
@click.option("--reject-label", default=None, help="Report messages with this label as exceptions (a demo rule).")
@click.option("--count", default=0, help="Stop after this many messages (0: run until interrupted).")
def main(dataset_id: str, stream_name: str, amqp_url: str, prefix: str, reject_label: str | None, count: int) -> None:
    queue = stream_queue(prefix, dataset_id, stream_name)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    # Declaring is idempotent (same arguments as the router's): the robot may start first.
    declare_stream_topology(channel, prefix, queue, quorum=supports_quorum(connection))
    channel.confirm_delivery()  # report_exception waits for the broker to take the report
    channel.basic_qos(prefetch_count=16)
    handled = 0
    try:
        for method, properties, body in channel.consume(queue):
            if purged_message(connection, prefix, method, body):
                channel.basic_ack(method.delivery_tag)  # its text must not be used: drop it unread
                click.echo(f"dropped {properties.message_id}: its source was purged")
                continue
            result = json.loads(body)
            labels = [" > ".join(label["name"]) for label in result["labels"]]
            if reject_label is not None and reject_label in labels:
                report_exception(channel, prefix, queue, method, properties, body, f"robot refuses {reject_label}")
                click.echo(f"exception {result['comment']['uid']}: {labels}")
            else:
                # ... do the work here (open a ticket, route the mail), then acknowledge:
                channel.basic_ack(method.delivery_tag)
                click.echo(f"handled {result['sequence_id']} {result['comment']['uid']}: {labels}")
            handled += 1
            if count and handled >= count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        channel.cancel()
        connection.close()


if __name__ == "__main__":
    main()
