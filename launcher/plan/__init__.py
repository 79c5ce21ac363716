"""Login side: check a spec against its rules and the site, then render the job (pure)."""
