"""The local state store: cross-references, cursors, runs, outcomes, intents and conflicts.

SQLite by default, PostgreSQL for production; one schema managed by Alembic migrations.
`store.StateStore` opens the database and exposes one repository per concern (links, runs,
cursors, retries, intents, conflicts, locks); `ports` declares the protocols callers type against.
"""
