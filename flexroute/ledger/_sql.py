"""SQL shared by the SQLite and PostgreSQL stores, written with ``?`` placeholders
(:func:`pg` turns them into psycopg's ``%s``). Money columns are integer pico-USD in both."""

from __future__ import annotations

INVOICE_COLUMNS = (
    "invoice_id, org_id, period, amount_pico, status, reason, attempts, reference, "
    "created_at, updated_at, credit_pico"
)

UNCHARGED_SUM = (
    "SELECT COALESCE(SUM(fee_pico), 0) FROM requests WHERE org_id = ? AND invoice_id IS NULL"
)
UNPAID_INVOICES_SUM = (
    "SELECT COALESCE(SUM(amount_pico), 0) FROM invoices WHERE org_id = ? AND status <> 'paid'"
)
AMOUNT_DUE_SUM = (
    "SELECT COALESCE(SUM(amount_pico), 0) FROM invoices "
    "WHERE org_id = ? AND status IN ('failed', 'open')"
)
ORG_ROW = "SELECT state, reason, card_status, customer_ref, credit_pico FROM orgs WHERE org_id = ?"
# Free credit already spent on invoices; what is left is taken from uncharged fees first.
INVOICED_CREDIT_SUM = "SELECT COALESCE(SUM(credit_pico), 0) FROM invoices WHERE org_id = ?"
# A new organisation's free credit (FLEXROUTE_FREE_CREDIT_USD), granted once.
GRANT_CREDIT = (
    "INSERT INTO orgs (org_id, credit_pico, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (org_id) DO NOTHING"
)
ORG_STATE = "SELECT state FROM orgs WHERE org_id = ?"
LAST_INVOICE = (
    f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE org_id = ? "  # noqa: S608 -- fixed columns
    "ORDER BY created_at DESC, period DESC LIMIT 1"
)
INVOICES_OF = (
    f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE org_id = ? "  # noqa: S608 -- fixed columns
    "ORDER BY created_at, period"
)
INVOICE_BY_ID = f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE invoice_id = ?"  # noqa: S608
ORG_IDS = "SELECT org_id FROM orgs UNION SELECT DISTINCT org_id FROM requests"
UPSERT_CARD = (
    "INSERT INTO orgs (org_id, card_status, customer_ref, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (org_id) DO UPDATE SET card_status = excluded.card_status, "
    "customer_ref = COALESCE(excluded.customer_ref, orgs.customer_ref), "
    "updated_at = excluded.updated_at"
)
UPSERT_STATE = (
    "INSERT INTO orgs (org_id, state, reason, updated_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (org_id) DO UPDATE SET state = excluded.state, reason = excluded.reason, "
    "updated_at = excluded.updated_at"
)
INSERT_INVOICE = (
    f"INSERT INTO invoices ({INVOICE_COLUMNS}) "  # noqa: S608 -- fixed columns
    "VALUES (?, ?, ?, 0, 'charging', NULL, 1, NULL, ?, ?, 0) "
    "ON CONFLICT (org_id, period) DO NOTHING"
)
ASSIGN_FEES = (
    "UPDATE requests SET invoice_id = ? "
    "WHERE org_id = ? AND invoice_id IS NULL AND fee_pico > 0 AND received_at < ?"
)
INVOICE_FEES_SUM = "SELECT COALESCE(SUM(fee_pico), 0) FROM requests WHERE invoice_id = ?"
SET_INVOICE_AMOUNT = "UPDATE invoices SET amount_pico = ?, credit_pico = ? WHERE invoice_id = ?"
RETRY_INVOICE = (  # a new attempt has no reference yet: a webhook for an older one is old
    "UPDATE invoices SET status = 'charging', attempts = attempts + 1, reason = NULL, "
    "reference = NULL, updated_at = ? WHERE invoice_id = ? AND status = ? AND attempts = ?"
)
SETTLE_INVOICE = (
    "UPDATE invoices SET status = ?, reason = ?, reference = COALESCE(?, reference), "
    "updated_at = ? WHERE invoice_id = ?"
)
FAILED_COUNT = "SELECT COUNT(*) FROM invoices WHERE org_id = ? AND status = 'failed'"


def usage_query(day_expr: str, org: bool, since: bool, *, invoice: bool = False) -> str:
    """Totals by (day, model, route); ``day_expr`` is the backend's UTC-date expression.
    ``invoice``: only the records one invoice covers (its id the last parameter)."""
    where = []
    if org:
        where.append("org_id = ?")
    if since:
        where.append("received_at >= ?")
    if invoice:
        where.append("invoice_id = ?")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return (
        f"SELECT {day_expr}, model, route, COUNT(*), "  # noqa: S608 -- fixed expressions
        "COALESCE(SUM(actual_cost_pico), 0), COALESCE(SUM(standard_cost_pico), 0), "
        f"COALESCE(SUM(saving_pico), 0), COALESCE(SUM(fee_pico), 0) FROM requests {clause} "
        "GROUP BY 1, 2, 3"
    )


def pg(sql: str) -> str:
    """The same statement with psycopg placeholders."""
    return sql.replace("?", "%s")
