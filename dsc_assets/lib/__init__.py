"""Pure domain code: schemas, rules, statistics, messages, tables and plots; no Dagster context."""
