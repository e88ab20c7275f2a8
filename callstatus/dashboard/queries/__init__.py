"""The dashboard's SQL, one module per page: parameterised DuckDB queries returning `Result`s.

`relations` names what a query reads (the views, or their rollup tables); `base` runs SQL and
caches it; `scopes` holds the slices and CTEs the pages share; `overview`, `causes`, `legs`,
`calls` and `health` serve their page, `sidebar` the controls and the first-run check.
"""
