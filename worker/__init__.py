"""Celery GPU workers: claim a job, fetch its data and base model, train, publish, report."""
