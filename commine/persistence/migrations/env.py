"""Alembic environment: runs migrations on the engine the application hands in."""

from alembic import context

from commine.persistence.schema import log_metadata, projection_metadata

target_metadata = [log_metadata, projection_metadata]

#: Any constant; processes migrating one database at the same moment queue on this lock, and
#: the later ones find the schema at head already.
MIGRATION_LOCK = 7_151_117

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    context.configure(connection=connection, target_metadata=target_metadata)
    context.run_migrations()
