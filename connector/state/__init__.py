"""The local state store: cross-references, cursors, runs, outcomes, intents and conflicts.

SQLite by default, PostgreSQL for production; one schema managed by Alembic migrations.
"""
