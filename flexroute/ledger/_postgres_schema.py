"""The PostgreSQL ledger's schema: its migrations, applied in order under an advisory lock and
counted in ``flexroute_schema``."""

from __future__ import annotations

from typing import Any

import psycopg

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
        usage_json JSONB,
        standard_cost_pico BIGINT,
        actual_cost_pico BIGINT,
        saving_pico BIGINT NOT NULL,
        fee_pico BIGINT NOT NULL,
        status TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        received_at TIMESTAMPTZ NOT NULL,
        completed_at TIMESTAMPTZ NOT NULL,
        attempt_log_json JSONB NOT NULL,
        invoice_id TEXT
    );
    CREATE INDEX requests_org_received ON requests (org_id, received_at);
    CREATE INDEX requests_uncharged ON requests (org_id) WHERE invoice_id IS NULL;
    CREATE INDEX requests_invoice ON requests (invoice_id);
    CREATE TABLE orgs (
        org_id TEXT PRIMARY KEY,
        state TEXT NOT NULL DEFAULT 'active',
        reason TEXT,
        card_status TEXT NOT NULL DEFAULT 'none',
        customer_ref TEXT,
        updated_at TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE invoices (
        invoice_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        period TEXT NOT NULL,
        amount_pico BIGINT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT,
        attempts INTEGER NOT NULL,
        reference TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        UNIQUE (org_id, period)
    )
    """,
    """
    CREATE TABLE api_keys (
        key_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        tier TEXT NOT NULL,
        revoked BOOLEAN NOT NULL DEFAULT FALSE,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX api_keys_org ON api_keys (org_id);
    CREATE TABLE provider_keys (
        org_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        sealed TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (org_id, provider)
    )
    """,
    """
    ALTER TABLE orgs ADD COLUMN credit_pico BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE invoices ADD COLUMN credit_pico BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX requests_key_received ON requests (key_id, received_at);
    CREATE TABLE caps (
        org_id TEXT NOT NULL,
        key_id TEXT NOT NULL,
        fee_cap_pico BIGINT,
        spend_cap_pico BIGINT,
        updated_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (org_id, key_id)
    );
    CREATE TABLE reservations (
        reservation_id TEXT PRIMARY KEY,
        org_id TEXT NOT NULL,
        key_id TEXT,
        cost_pico BIGINT NOT NULL,
        fee_pico BIGINT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX reservations_org ON reservations (org_id, expires_at)
    """,
    """
    CREATE TABLE dashboard_sessions (
        session_hash TEXT PRIMARY KEY,
        org_id TEXT,
        key_id TEXT,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX dashboard_sessions_expiry ON dashboard_sessions (expires_at)
    """,
    """
    ALTER TABLE requests ADD COLUMN flex_probability DOUBLE PRECISION
    """,
)


async def migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    """Apply pending migrations in one transaction under an advisory lock for this schema."""
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('flexroute-migrate:' || current_schema()))"
        )
        await conn.execute("CREATE TABLE IF NOT EXISTS flexroute_schema (version INTEGER)")
        row = await (await conn.execute("SELECT max(version) FROM flexroute_schema")).fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    await conn.execute(statement.encode())
            await conn.execute("INSERT INTO flexroute_schema (version) VALUES (%s)", (number,))
