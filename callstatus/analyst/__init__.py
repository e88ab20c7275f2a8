"""Analysts' access: `callstatus sql` and `export` over the snapshot, and the read-only SQL sandbox."""
