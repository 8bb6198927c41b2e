"""The embedded SQLite broker."""
