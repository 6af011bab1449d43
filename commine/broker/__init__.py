"""RabbitMQ topology, publishing with confirms, the dramatiq broker and its in-process twin."""
