"""Alembic's environment, run by bulletin.ledger.migrate with a connection already open.

There is no alembic.ini: `migrate.alembic_config` builds the configuration in code and hands
over the connection (and its transaction) in `config.attributes["connection"]`.
"""

from __future__ import annotations

from alembic import context

from bulletin.ledger.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "bulletin's migrations run from bulletin.ledger.migrate (upgrade, make_revision), "
        "not from the alembic command"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=True,  # SQLite alters tables by copying them; Alembic's batch mode does that
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
