"""Entry points: the `sift` command and local operations (the development Elasticsearch node)."""
