"""The SQL page: read-only queries over the analysts' snapshot, the schema beside the editor."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from callstatus.analyst import sandbox as safe_sql
from callstatus.core.snapshot import age_s
from callstatus.dashboard import context
from callstatus.dashboard.text import code, plain

TEXT_KEY = "sql_page_text"
EXAMPLE_KEY = "sql_page_example"
RESULT_KEY = "sql_page_result"
NO_EXAMPLE = "Pick an example query…"
SNAPSHOT_POLL_S = 3


def snapshot_path() -> Path:
    """The snapshot of the server running in this process, else of the configured database."""
    return context.settings().snapshot_path


@st.cache_data(show_spinner=False, max_entries=4)
def _schema(path: str, modified: float) -> dict[str, list[tuple[str, str]]]:
    # `modified` is only part of the cache key: a new snapshot may bring new columns.
    return safe_sql.schema(Path(path))


def _load_example() -> None:
    choice = st.session_state.get(EXAMPLE_KEY)
    if choice in safe_sql.EXAMPLES:
        st.session_state[TEXT_KEY] = safe_sql.EXAMPLES[choice]


def _schema_list(path: Path) -> None:
    st.subheader("Tables and views")
    try:
        relations = _schema(str(path), path.stat().st_mtime)
    except (OSError, safe_sql.Refused) as exc:
        st.warning(f"Cannot list the schema: {plain(exc)}")
        return
    # Relation names are the migrations' own ("calls (view)"); column names are quoted anyway.
    for name, columns in relations.items():
        with st.expander(name):
            st.markdown(
                "\n".join(
                    f"- {code(column)} {plain(data_type.lower())}" for column, data_type in columns
                )
            )


def _run(path: Path, sql: str) -> None:
    try:
        st.session_state[RESULT_KEY] = safe_sql.run_query(path, sql)
    except safe_sql.Refused as refusal:
        st.session_state[RESULT_KEY] = refusal


def _show_result() -> None:
    result = st.session_state.get(RESULT_KEY)
    if result is None:
        return
    if isinstance(result, safe_sql.Refused):
        # The message quotes the query and DuckDB's text: plain text, never Markdown; a
        # multi-line one (a parser error's pointer) keeps its layout below.
        first, _, rest = str(result).partition("\n")
        st.error(plain(first))
        if rest.strip():
            st.code(rest.strip("\n"), language="text")
        return
    rows = result.table.num_rows
    if result.notice:  # rows left out: the row limit, or the size limit
        st.warning(result.notice)
    st.caption(f"{rows:,} rows in {result.elapsed_s:.2f} s")
    st.dataframe(result.table, hide_index=True)
    csv_col, parquet_col = st.columns(2)
    csv_col.download_button(
        "Download CSV",
        safe_sql.to_csv_bytes(result.table),
        "query.csv",
        "text/csv",
        on_click="ignore",
    )
    parquet_col.download_button(
        "Download Parquet",
        safe_sql.to_parquet_bytes(result.table),
        "query.parquet",
        "application/vnd.apache.parquet",
        on_click="ignore",
    )


@st.fragment(run_every=SNAPSHOT_POLL_S)
def _wait_for_snapshot(path: Path) -> None:
    """Show the page by itself once the server has written its first snapshot."""
    if age_s(path) is not None:
        st.rerun()


def render(snapshot: Path | None = None) -> None:
    """Draw the page; `snapshot` overrides where the snapshot is (tests).

    The page runs as a fragment of its own (not refreshed in live mode: the snapshot changes
    at most once a minute, and a query's result stays until the next Run).
    """
    path = snapshot or snapshot_path()
    st.fragment(_page)(path)


def _page(path: Path) -> None:
    st.header("SQL")
    age = age_s(path)
    if age is None:
        st.info(
            f"No snapshot yet at {code(path)}. The server writes one shortly after it starts and "
            "then at most once a minute while data changes."
        )
        _wait_for_snapshot(path)
        return
    st.caption(
        f"Read-only queries on the snapshot {code(path.name)}, current as of {age:.0f} s ago. "
        f"One statement, at most {safe_sql.DEFAULT_TIME_LIMIT_S:g} s, "
        f"{safe_sql.DEFAULT_ROW_LIMIT:,} rows and "
        f"{safe_sql.DEFAULT_BYTE_LIMIT // safe_sql.MiB} MB. Definitions: docs/data.md."
    )
    st.session_state.setdefault(TEXT_KEY, next(iter(safe_sql.EXAMPLES.values())))
    editor, side = st.columns([3, 1])
    with side:
        _schema_list(path)
    with editor:
        st.selectbox(
            "Examples", [NO_EXAMPLE, *safe_sql.EXAMPLES], key=EXAMPLE_KEY, on_change=_load_example
        )
        sql = st.text_area("Query", key=TEXT_KEY, height=280)
        if st.button("Run", type="primary"):
            with st.spinner("Running…"):
                _run(path, sql or "")
        _show_result()
