"""One partition per task folder under prompts/: a new folder is a new partition after a reload."""

import dagster as dg

from dsc_assets.lib.tasks import task_names

task_partitions = dg.StaticPartitionsDefinition(task_names())
