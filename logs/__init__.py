"""The logs room: what Sift records of its traffic and how it leaves and enters.

The query log (`querylog`, `querylog_es`: impressions, daily JSONL or an Elasticsearch index), the click log
(`clicklog`, `clicklog_es`), the validation of `POST /v1/events` (`events`, with the caps of `click_caps`),
UBI 1.3.0 mapping, import and whole-log transfer (`ubi`, `ubi_import`, `transfer`), and one configuration of
their own (`config.LogsConfig`), so a training job or a notebook opens the logs without loading the server's
AppConfig (`access.open_logs`, `access.read_logs`). Nothing is imported here eagerly: `events` needs the search
service's models, the rest does not.
"""
