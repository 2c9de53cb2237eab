"""What a training process's exit status says, for shells, SLURM, Kubernetes and the multitask launcher.

The two codes above 3 are the ``sysexits.h`` ones for the same meaning, so schedulers that know
them (e.g. "75: try again later") do the right thing.
"""
FINISHED = 0  # trained to num_steps (or nothing left to train)
FAILED = 1  # an unexpected error: the traceback is in the log
BAD_INPUT = 2  # config, data, checkpoint or weights file: one line names it; running again cannot help
DIVERGED = 3  # too many non-finite steps in a row; the last good checkpoint is named
STORAGE = 74  # the run folder cannot be written (full disk, read-only): one line names the file (EX_IOERR)
INTERRUPTED = 75  # stopped by a signal or a time limit after saving a checkpoint: resume to continue (EX_TEMPFAIL)

NOT_RETRIED = frozenset({BAD_INPUT, STORAGE, INTERRUPTED})  # a retry would fail the same way, or was not asked for
