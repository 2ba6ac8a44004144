"""Storage: the database (SQLite), its tables, the group commit, and the versioned file store."""
