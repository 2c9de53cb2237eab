"""Batch training: every task JSON of a folder on a pool of GPUs (or CPU slots).

The folder holds the task files and ``config.json`` (GPUs, tasks per GPU, retries,
log folder); ``plan`` turns them into a checked plan, ``scheduler`` runs the processes,
``summary`` reports what happened.
"""
