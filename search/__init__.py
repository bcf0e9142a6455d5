"""The query-time domain: documents, schema, filters, text, index stores (one contract suite), retrieval, the
search service, the query log, and the `suggest/` and `summarize/` subpackages. Imports `models` and `ranking`
only; never `serving`, `sift` or `training`."""
