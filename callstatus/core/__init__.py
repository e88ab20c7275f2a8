"""The core: settings, the database and its migrations, webhook records and their storage,
rollups, snapshots and background jobs. Imports nothing of callstatus above it."""
