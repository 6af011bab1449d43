"""Alembic environment: runs migrations on the engine the application hands in."""

from alembic import context

from commine.persistence.schema import log_metadata, projection_metadata

target_metadata = [log_metadata, projection_metadata]

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=target_metadata)
    context.run_migrations()
