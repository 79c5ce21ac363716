"""Login side: write the run dir and hand the job to Slurm, a wrapper or local processes; the
verbs that operate a run afterwards (status, logs, cancel, resume, sweeps)."""
