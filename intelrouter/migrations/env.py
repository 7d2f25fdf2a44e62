"""Alembic environment: runs on the connection the store hands over (see store.upgrade)."""

from alembic import context
from sqlalchemy import create_engine

from intelrouter.store import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is None:  # plain `alembic` CLI use
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
