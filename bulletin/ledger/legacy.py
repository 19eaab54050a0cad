"""The schema steps of the `PRAGMA user_version` scheme, kept as a record (never run).

Release 0.1.0 and wave 1 migrated SQLite files with these scripts; MIGRATIONS[n] took a file
from user_version n to n + 1. Alembic (bulletin/ledger/migrations) now does the work, and each
revision that changes the tables also sets user_version, so an older bulletin refuses a newer
file. bulletin.ledger.migrate.LEGACY_REVISIONS maps each number to its twin revision.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 0 → 1
    """
    CREATE TABLE sends (
        id INTEGER PRIMARY KEY,
        message TEXT NOT NULL,
        path TEXT NOT NULL,
        subject TEXT NOT NULL,
        reference TEXT NOT NULL DEFAULT '',
        category TEXT NOT NULL DEFAULT '',
        content_hash TEXT NOT NULL,
        transport TEXT NOT NULL,
        created_at TEXT NOT NULL,
        completed_at TEXT
    );
    CREATE INDEX sends_message ON sends(message, id);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        send_id INTEGER NOT NULL REFERENCES sends(id),
        email TEXT NOT NULL,
        email_key TEXT NOT NULL,
        first_name TEXT NOT NULL DEFAULT '',
        last_name TEXT NOT NULL DEFAULT '',
        ward TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL DEFAULT 'pending',
        message_id TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        opened INTEGER NOT NULL DEFAULT 0,
        clicked INTEGER NOT NULL DEFAULT 0,
        first_opened_at TEXT,
        last_opened_at TEXT,
        first_clicked_at TEXT,
        last_clicked_at TEXT,
        UNIQUE (send_id, email_key)
    );
    CREATE INDEX deliveries_state ON deliveries(send_id, state);
    CREATE INDEX deliveries_message_id ON deliveries(message_id);
    CREATE INDEX deliveries_email ON deliveries(email_key);
    CREATE TABLE suppressions (
        email_hash TEXT PRIMARY KEY,
        email TEXT,
        reason TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'manual',
        created_at TEXT NOT NULL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        sg_event_id TEXT UNIQUE,
        delivery_id INTEGER REFERENCES deliveries(id),
        event TEXT NOT NULL,
        email TEXT,
        timestamp INTEGER,
        reason TEXT,
        payload TEXT NOT NULL,
        received_at TEXT NOT NULL
    );
    CREATE INDEX events_delivery ON events(delivery_id);
    """,
    # 1 → 2: `bulletin purge` keeps a send's totals after deleting its rows (issue 8)
    """
    CREATE TABLE purged_sends (
        send_id INTEGER PRIMARY KEY REFERENCES sends(id),
        purged_at TEXT NOT NULL,
        counts TEXT NOT NULL
    );
    """,
    # 2 → 3: which of SendGrid's open / click tracking a send asked for (issue 19); NULL: not
    # recorded (an older send, or a transport that tracks nothing)
    """
    ALTER TABLE sends ADD COLUMN open_tracking INTEGER;
    ALTER TABLE sends ADD COLUMN click_tracking INTEGER;
    """,
    # 3 → 4: revision 0003 (why bulletin dropped a row; `bulletin run`'s notices)
    """
    ALTER TABLE deliveries ADD COLUMN cause TEXT;
    CREATE TABLE run_notices (key TEXT PRIMARY KEY, first_given_at TEXT NOT NULL);
    """,
]

# `PRAGMA user_version` the newest revision leaves in a SQLite file.
SCHEMA_VERSION = len(MIGRATIONS)
