"""Run logging: the log file, metrics.jsonl, reconstruction grids, wandb (plots: ``log_utils.plot``)."""
from log_utils.log_utils import LogManager, build_id_name

__all__ = ["LogManager", "build_id_name"]
