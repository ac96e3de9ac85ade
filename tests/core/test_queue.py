"""Jobs are enqueued by task name onto the ``gpu`` queue of the real Redis broker."""

from __future__ import annotations

import base64
import json

from core.queue import GPU_QUEUE, RUN_JOB_TASK, check_broker, enqueue_job, make_celery


def test_enqueue_puts_a_run_job_message_on_the_gpu_queue(settings, redis_client):
    app = make_celery(settings)
    check_broker(app)
    enqueue_job(app, "job_123")
    raw = redis_client.lpop(GPU_QUEUE)
    assert raw is not None, "no message on the gpu queue"
    message = json.loads(raw)
    assert message["headers"]["task"] == RUN_JOB_TASK
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert args == ["job_123"] and kwargs == {}
