"""After the run (or while it runs): logs -> per-step records -> figures, verdict, report.md.
Never imports launcher.plan or launcher.submit (tests/test_stages.py)."""
