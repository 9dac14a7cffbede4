"""The schema of global limits (``Limit``; ``sql_limits`` uses it): SQLite's
version 8 and PostgreSQL's 7."""

from __future__ import annotations


def limit_ddl(real: str) -> tuple[str, ...]:
    """The tables, columns and indexes of limits (SQLite's schema version 8,
    PostgreSQL's 7); *real* is the dialect's float type."""
    return (
        f"ALTER TABLE flows ADD COLUMN blocked_until {real}",
        "ALTER TABLE flows ADD COLUMN fair_key TEXT",
        f"CREATE TABLE limit_state (name TEXT NOT NULL, key TEXT NOT NULL, tat {real} NOT NULL, "
        "PRIMARY KEY (name, key))",
        # part: '' for the flow's own slot, 'step N' for the step at position N.
        "CREATE TABLE limit_slots (name TEXT NOT NULL, key TEXT NOT NULL, flow_id TEXT NOT NULL, "
        "part TEXT NOT NULL, PRIMARY KEY (name, key, flow_id, part))",
        "CREATE INDEX limit_slots_by_flow ON limit_slots (flow_id)",
        # Round-robin across the keys of a keyed limit: when each key was last served.
        "CREATE TABLE fair_turns (fair_key TEXT PRIMARY KEY, served INTEGER NOT NULL)",
        "CREATE INDEX fair_turns_served ON fair_turns (served)",
        # The flows a slot's release unblocks, and those a rate holds back.
        "CREATE INDEX flows_limit_blocked ON flows (blocked_by, priority, updated_at) "
        "WHERE blocked_by IS NOT NULL AND blocked_until IS NULL",
        "CREATE INDEX flows_rate_wait ON flows (blocked_until) WHERE blocked_until IS NOT NULL",
    )
