"""The graph: the stage declaration, the partitions, and one folder per Dagster group."""
