"""The delivery ledger: the one owner of delivery state (DESIGN.md, issue 13).

SQLite by default, PostgreSQL when several machines share the work. Importing this package
loads SQLAlchemy, so only the commands that touch the database import it (`bulletin --help`
stays fast).

- `schema`: the tables, one definition for both back ends.
- `engine`: `make_engine(db)` for a SQLite path or a `postgresql://` URL.
- `migrate`: Alembic migrations run from code; adopts databases written before Alembic.
- `copy`: `copy_database(source, target)`, moving a history between back ends.
"""
