"""Dashboard pages: each module's `render()` lays out one page from queries and charts."""
