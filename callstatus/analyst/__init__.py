"""Analysts' access: `callstatus sql` and `export` over the snapshot, and the SQL page's
read-only sandbox."""
