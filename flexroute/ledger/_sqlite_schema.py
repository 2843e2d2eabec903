"""The SQLite ledger's schema: its migrations, applied in order and counted in the file's
``user_version``."""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE requests (
        request_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        key_id TEXT,
        provider TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        model TEXT,
        route TEXT NOT NULL,
        reason TEXT,
        tier_requested TEXT,
        tier_served TEXT,
        start_within_ms INTEGER,
        flex_wait_ms INTEGER,
        attempts INTEGER NOT NULL,
        usage_json TEXT,
        standard_cost_pico INTEGER,
        actual_cost_pico INTEGER,
        saving_pico INTEGER NOT NULL,
        fee_pico INTEGER NOT NULL,
        status TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        received_at TEXT NOT NULL,
        completed_at TEXT NOT NULL,
        attempt_log_json TEXT NOT NULL
    ) STRICT;
    CREATE INDEX requests_org_received ON requests (org_id, received_at);
    """,
    """
    ALTER TABLE requests ADD COLUMN invoice_id TEXT;
    CREATE INDEX requests_uncharged ON requests (org_id) WHERE invoice_id IS NULL;
    CREATE INDEX requests_invoice ON requests (invoice_id);
    CREATE TABLE orgs (
        org_id TEXT PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'active',
        reason TEXT,
        card_status TEXT NOT NULL DEFAULT 'none',
        customer_ref TEXT,
        updated_at TEXT NOT NULL
    ) STRICT;
    CREATE TABLE invoices (
        invoice_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        period TEXT NOT NULL,
        amount_pico INTEGER NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        attempts INTEGER NOT NULL,
        reference TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        UNIQUE (org_id, period)
    ) STRICT;
    """,
    """
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        tier TEXT NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX api_keys_org ON api_keys (org_id);
    CREATE TABLE provider_keys (
        org_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        sealed TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (org_id, provider)
    ) STRICT;
    """,
    """
    ALTER TABLE orgs ADD COLUMN credit_pico INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE invoices ADD COLUMN credit_pico INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX requests_key_received ON requests (key_id, received_at);
    CREATE TABLE caps (
        org_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        fee_cap_pico INTEGER,
        spend_cap_pico INTEGER,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (org_id, key_id)
    ) STRICT;
    CREATE TABLE reservations (
        reservation_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        key_id TEXT,
        cost_pico INTEGER NOT NULL,
        fee_pico INTEGER NOT NULL,
        expires_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX reservations_org ON reservations (org_id, expires_at);
    """,
    """
    CREATE TABLE dashboard_sessions (
        session_hash TEXT PRIMARY KEY,
        org_id TEXT,
        key_id TEXT,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    ) STRICT;
    CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at);
    """,
    """
    ALTER TABLE requests ADD COLUMN flex_probability REAL;
    """,
)


def migrate(db: sqlite3.Connection) -> int:
    """Apply the migrations this file has not seen yet (tracked in ``user_version``), in one
    ``BEGIN IMMEDIATE`` transaction so that two processes starting at once migrate once."""
    db.execute("BEGIN IMMEDIATE")
    try:
        (version,) = db.execute("PRAGMA user_version").fetchone()
        for script in MIGRATIONS[version:]:
            for statement in script.split(";"):
                if statement.strip():
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)
