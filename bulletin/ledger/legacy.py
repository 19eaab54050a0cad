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
    # 3 → 4: "Was this useful?" answers, one per delivery (issue 18; bulletin/ledger/feedback.py).
    # delivery_id becomes NULL when `purge` deletes the delivery: the answer still counts.
    """
    CREATE TABLE feedback (
        id INTEGER PRIMARY KEY,
        send_id INTEGER NOT NULL REFERENCES sends(id),
        delivery_id INTEGER UNIQUE REFERENCES deliveries(id) ON DELETE SET NULL,
        answer TEXT NOT NULL CHECK (answer IN ('useful', 'not_useful', 'concern')),
        comment TEXT NOT NULL DEFAULT '',
        answered_at TEXT NOT NULL,
        commented_at TEXT
    );
    CREATE INDEX feedback_send ON feedback(send_id, answer);
    """,
    # 4 → 5: sign-off before send (issue 17). One row per request, approval or "ask for
    # changes" of one version (fingerprint) of a message; a link's decision names its request,
    # once (UNIQUE: a link cannot be used twice). Sends record the version and approvals they
    # went out under. All SQL on these tables is in bulletin/ledger/approvals.py.
    """
    CREATE TABLE approval_events (
        id INTEGER PRIMARY KEY,
        message TEXT NOT NULL,
        path TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        kind TEXT NOT NULL,
        approver TEXT NOT NULL,
        approver_name TEXT NOT NULL DEFAULT '',
        route TEXT NOT NULL,
        request_id INTEGER UNIQUE REFERENCES approval_events(id),
        comment TEXT NOT NULL DEFAULT '',
        audience INTEGER NOT NULL,
        audience_definition TEXT NOT NULL,
        text TEXT NOT NULL,
        expires_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX approval_events_message ON approval_events(message, fingerprint, id);
    CREATE TABLE send_versions (
        send_id INTEGER NOT NULL REFERENCES sends(id),
        fingerprint TEXT NOT NULL,
        audience INTEGER NOT NULL,
        after_event INTEGER NOT NULL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (send_id, fingerprint)
    );
    CREATE TABLE send_approvals (
        send_id INTEGER NOT NULL REFERENCES sends(id),
        approval_id INTEGER NOT NULL REFERENCES approval_events(id),
        PRIMARY KEY (send_id, approval_id)
    );
    """,
    # 5 → 6: public pages of sent messages (issue 21; SQL in bulletin/ledger/publications.py). The
    # message file's bytes as each send began, so a page shows what was sent, not a later edit;
    # and one page per reference, pointing at the send it shows, withdrawn or not.
    """
    CREATE TABLE sent_sources (
        content_hash TEXT PRIMARY KEY,
        message TEXT NOT NULL,
        source BLOB NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE publications (
        reference TEXT PRIMARY KEY,
        message TEXT NOT NULL,
        send_id INTEGER NOT NULL REFERENCES sends(id),
        content_hash TEXT NOT NULL,
        published_at TEXT NOT NULL,
        withdrawn_at TEXT
    );
    """,
    # 6 → 7: revisions 0003 (why bulletin dropped a row; `bulletin run`'s notices) and 0004
    # (the tables above, for a file that lacks some). Alembic runs them; this is the record.
    """
    ALTER TABLE deliveries ADD COLUMN cause TEXT;
    CREATE TABLE run_notices (key TEXT PRIMARY KEY, first_given_at TEXT NOT NULL);
    """,
    # 7 → 8: revision 0005 (per-send leases: who is sending, and who claimed each row).
    """
    ALTER TABLE deliveries ADD COLUMN lease TEXT;
    CREATE TABLE leases (
        send_id INTEGER NOT NULL REFERENCES sends(id),
        holder TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        acquired_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        PRIMARY KEY (send_id, holder)
    );
    """,
    # 8 → 9: revision 0006 (each queued recipient's merge values, for a streamed send).
    """
    ALTER TABLE deliveries ADD COLUMN fields TEXT;
    """,
]

# `PRAGMA user_version` the newest revision leaves in a SQLite file.
SCHEMA_VERSION = len(MIGRATIONS)
