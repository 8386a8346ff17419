"""The metadata store: tables, connections and queries over SQLAlchemy Core (SQLite by default, PostgreSQL)."""
