"""Multi-node jobs: one torchrun job over several hosts, placed by the service (gang scheduling).

The worker that claims a job with ``resources.nodes`` > 1 leads it. It forms the gang in the database
(``core.services.gangs``: node 0 is itself, the other slots open), starts its torchrun as the host of
the c10d rendezvous, and puts one join task per missing host on the ``gpu`` queue. A worker that takes
a join task claims an open slot, fetches the inputs into its own cache, brings the same checkpoint
and starts its torchrun against the leader's rendezvous. The leader waits until every slot is claimed,
at most ``DIFFTUNE_GANG_TIMEOUT_S``: then it closes the open slots and fails the job, naming how many
hosts joined; the rows are removed, and joined hosts, which beat their slot every second, see it gone
and stop their torchrun.

Training itself is plain torchrun: ranks are numbered by the rendezvous, global rank 0 (on whichever
host) reports progress and publishes under the attempt's lease, and writes the outcome to node 0's row
for the leader, which finishes the job. Every rank polls the lease, so a cancel stops all hosts; a
joined worker that is shutting down marks its slot ``leaving`` before telling its ranks, so the leader
requeues the job instead of calling it cancelled.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from contract.outputs import step_name
from core.queue import enqueue_join
from core.services import gangs
from core.tables import Job
from worker.context import WorkerContext, context
from worker.inputs import fetch_inputs
from worker.lease import Lease
from worker.pipeline import GangError, TrainSpec, build_config, job_dir, worker_name
from worker.publish import download_checkpoint
from worker.shutdown import shutdown_marker, shutdown_requested

log = logging.getLogger(__name__)
POLL_S = 1.0  # the leader's look at the slots, and each joined host's beat
STOP_GRACE_S = 10.0  # SIGTERM to a torchrun's process group, then SIGKILL
JOIN_SLACK_S = 120  # torchrun's own rendezvous timeout exceeds the gang timeout by this much


# ----------------------------------------------------------------------------------------------
# Hosts, ports, torchrun
# ----------------------------------------------------------------------------------------------


def worker_address(ctx: WorkerContext) -> str:
    """Where the other workers reach this host: ``DIFFTUNE_WORKER_ADDRESS``, else the local address this
    host uses toward the broker (a pod's IP on Kubernetes; 127.0.0.1 with a broker on loopback)."""
    if ctx.settings.worker_address:
        return ctx.settings.worker_address
    parts = urlsplit(ctx.settings.broker_url)
    if parts.hostname:
        try:
            family, kind, _, _, target = socket.getaddrinfo(parts.hostname, parts.port or 6379,
                                                            type=socket.SOCK_DGRAM)[0]
            with socket.socket(family, kind) as probe:
                probe.connect(target)  # UDP: nothing is sent, the route is chosen
                return probe.getsockname()[0]
        except OSError:
            pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return socket.gethostname()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def torchrun_command(job_id: str, spec_file: Path, *, rendezvous: dict, host: bool, address: str) -> list[str]:
    """One host's torchrun of the job: c10d rendezvous at the leader's endpoint (which the leader hosts)."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nnodes={rendezvous['nodes']}",
            f"--nproc_per_node={rendezvous['nproc_per_node']}", "--rdzv_backend=c10d",
            f"--rdzv_endpoint={rendezvous['endpoint']}", f"--rdzv_id={rendezvous['run_id']}",
            f"--rdzv_conf=is_host={int(host)},join_timeout={rendezvous['join_timeout']}",
            f"--local_addr={address}", "--max_restarts=0", "-m", "worker.train_entry", job_id, str(spec_file)]


class Torchrun:
    """A torchrun agent in its own process group (its ranks stop with it), output to ``log_file``."""

    def __init__(self, cmd: list[str], log_file: Path):
        self.log_file = log_file
        with log_file.open("w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def poll(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after ``STOP_GRACE_S``; nothing when it already ended."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.proc.poll() is not None:
                return
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                continue

    def tail(self, lines: int = 5) -> str:
        text = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def check_devices(per_node: int) -> None:
    """A CUDA host must have the GPUs each node runs on."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() < per_node:
        raise GangError(f"{per_node} GPUs per node, but {socket.gethostname()} has {torch.cuda.device_count()}; "
                        "set DIFFTUNE_WORKER_GPUS to the GPUs of each worker host")


def align_checkpoints(ctx: WorkerContext, out_dir: Path, checkpoint: dict | None) -> None:
    """Leave exactly the gang's starting checkpoint in ``out_dir`` (downloaded when missing): every host
    must resume from the same step, and a host may hold newer unpublished ones from an earlier attempt."""
    root = out_dir / "checkpoints"
    keep = step_name(int(checkpoint["step"])) if checkpoint else None
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    if checkpoint:
        download_checkpoint(ctx, checkpoint["job_id"], int(checkpoint["step"]), root / keep)


# ----------------------------------------------------------------------------------------------
# The leader: the worker that claimed the job
# ----------------------------------------------------------------------------------------------


def lead(ctx: WorkerContext, job: Job, lease: Lease, spec: TrainSpec, *, checkpoint: dict | None) -> dict:
    """Gang the job's hosts and train; returns rank 0's outcome. ``GangError`` when the hosts cannot be had
    within the gang timeout, or one of them fails or stops answering."""
    nodes, per_node, attempt = job.nodes, job.gpus_per_node, lease.attempt
    check_devices(per_node)
    timeout = ctx.settings.gang_timeout_s
    me, address = worker_name(), worker_address(ctx)
    rendezvous = {"endpoint": f"{address}:{free_port()}", "run_id": f"{job.id}-{attempt}", "nodes": nodes,
                  "nproc_per_node": per_node, "join_timeout": int(timeout) + JOIN_SLACK_S, "checkpoint": checkpoint}
    out_dir = Path(spec.out_dir)
    align_checkpoints(ctx, out_dir, checkpoint)
    spec_file = out_dir / "spec.json"
    spec_file.write_text(spec.to_json())
    with ctx.sessions() as session:
        gangs.form(session, job_id=job.id, attempt=attempt, nodes=nodes, worker=me, address=address,
                   rendezvous=rendezvous)
    try:
        lease.event(f"node 0 of {nodes}: {me} at {address} hosts the rendezvous {rendezvous['endpoint']}; waiting "
                    f"up to {timeout:g} s for {nodes - 1} more host(s) with {per_node} GPU(s) each",
                    node=0, worker=me, address=address)
        with shutdown_marker(spec.shutdown_marker):
            proc = Torchrun(torchrun_command(job.id, spec_file, rendezvous=rendezvous, host=True, address=address),
                            out_dir.parent / f"torchrun-{attempt}.log")
            try:
                for _ in range(nodes - 1):
                    enqueue_join(ctx.producer, job.id, attempt)
                if not _wait_for_hosts(ctx, job.id, lease, proc, nodes, timeout):
                    return {"step": None, "stopped": True, "metrics": None}  # cancelled, lost, or shutting down
                code = _watch(ctx, job.id, attempt, proc)
                with ctx.sessions() as session:
                    slots = gangs.members(session, job_id=job.id, attempt=attempt)
            finally:
                with ctx.sessions() as session:  # the joined hosts learn the gang ended before its store goes
                    gangs.disband(session, job_id=job.id, attempt=attempt)
                proc.stop()
        if code != 0:
            raise RuntimeError(f"torchrun over {nodes} hosts failed (exit {code}): {proc.tail()}")
        outcome = slots[0].outcome if slots else None
        if outcome is None:
            raise RuntimeError(f"torchrun over {nodes} hosts ended without an outcome: {proc.tail()}")
        leaving = [s.worker for s in slots if s.status == gangs.LEAVING]
        return {**outcome, **({"leaving": leaving} if leaving else {})}
    finally:
        with ctx.sessions() as session:
            gangs.disband(session, job_id=job.id, attempt=attempt)


def _problem(ctx: WorkerContext, slots: list) -> str | None:
    """A failed host, or one that stopped beating: the job cannot go on."""
    for slot in slots:
        if slot.status == gangs.FAILED:
            return f"node {slot.node} ({slot.worker}) failed: {slot.error}"
    for slot in gangs.stale(slots, older_than=timedelta(seconds=ctx.settings.heartbeat_timeout)):
        return f"node {slot.node} ({slot.worker}) stopped answering for {ctx.settings.heartbeat_timeout} s"
    return None


def _wait_for_hosts(ctx: WorkerContext, job_id: str, lease: Lease, proc: Torchrun, nodes: int,
                    timeout: float) -> bool:
    """True once every slot is claimed; False when the job is to stop (cancel, lost lease, shutdown).
    ``GangError`` at the timeout (the open slots are closed first, so no host joins after it)."""
    deadline = time.monotonic() + timeout
    while True:
        expired = time.monotonic() > deadline
        with ctx.sessions() as session:
            if expired:
                slots = gangs.close(session, job_id=job_id, attempt=lease.attempt)
            else:
                slots = gangs.members(session, job_id=job_id, attempt=lease.attempt)
        joined = [s for s in slots if s.status in (gangs.JOINED, gangs.LEAVING)]
        if problem := _problem(ctx, slots):
            raise GangError(problem)
        if len(joined) == nodes:
            lease.event(f"all {nodes} hosts joined: " + ", ".join(f"node {s.node} {s.worker} at {s.address}"
                                                                  for s in joined), nodes=nodes)
            return True
        if expired:
            raise GangError(f"only {len(joined)} of {nodes} hosts joined within {timeout:g} s "
                            "(DIFFTUNE_GANG_TIMEOUT_S): the other gpu workers were busy or too few. Run more "
                            "workers, ask for fewer nodes, or raise the timeout")
        if proc.poll() is not None:
            raise RuntimeError(f"torchrun ended (exit {proc.poll()}) while waiting for the other hosts: "
                               f"{proc.tail()}")
        if lease.should_stop() or shutdown_requested():
            return False
        time.sleep(POLL_S / 2)


def _watch(ctx: WorkerContext, job_id: str, attempt: int, proc: Torchrun) -> int:
    """Torchrun's exit code; ``GangError`` as soon as a host fails or stops answering."""
    while (code := proc.poll()) is None:
        with ctx.sessions() as session:
            problem = _problem(ctx, gangs.members(session, job_id=job_id, attempt=attempt))
        if problem:
            raise GangError(problem)
        time.sleep(POLL_S)
    return code


# ----------------------------------------------------------------------------------------------
# The other hosts: workers that took a join task
# ----------------------------------------------------------------------------------------------


class SlotBeat(threading.Thread):
    """Beats a joined slot every ``POLL_S``; ``in_gang`` turns False when the gang ended (the slot was
    removed or closed, or the attempt stopped running)."""

    def __init__(self, ctx: WorkerContext, job_id: str, attempt: int, node: int):
        super().__init__(name=f"slot-{job_id}-{node}", daemon=True)
        self.ctx, self.job_id, self.attempt, self.node = ctx, job_id, attempt, node
        self.in_gang = True
        self._status: str | None = None
        self._error: str | None = None
        self._stop_event = threading.Event()

    def beat(self, status: str | None = None, error: str | None = None) -> bool:
        with self.ctx.sessions() as session:
            self.in_gang = gangs.beat(session, job_id=self.job_id, attempt=self.attempt, node=self.node,
                                      status=status, error=error) and self.in_gang
        return self.in_gang

    def run(self) -> None:
        while not self._stop_event.wait(POLL_S):
            try:
                if not self.beat():
                    return
            except Exception:  # noqa: BLE001 - keep beating through database hiccups
                log.exception("beat of node %d of %s failed", self.node, self.job_id)

    def stop(self) -> None:
        self._stop_event.set()


def join(job_id: str, attempt: int) -> str:
    """Take a free node slot of the job's attempt and run that host's part of the torchrun job. Returns
    'skipped' (no slot to take), 'done', 'failed' (this host could not start or its torchrun failed) or
    'stopped' (the gang ended first)."""
    ctx = context()
    me, address = worker_name(), worker_address(ctx)
    with ctx.sessions() as session:
        claimed = gangs.join(session, job_id=job_id, attempt=attempt, worker=me, address=address)
    if claimed is None:
        log.info("join of %s (attempt %d): no open slot", job_id, attempt)
        return "skipped"
    node, rendezvous = claimed
    beat = SlotBeat(ctx, job_id, attempt, node)
    beat.start()
    try:
        return _run_node(ctx, job_id, attempt, node, rendezvous, me, address, beat)
    except Exception as err:  # noqa: BLE001 - the leader fails the job with this host's reason
        log.exception("node %d of %s could not run", node, job_id)
        beat.beat(status=gangs.FAILED, error=f"{type(err).__name__}: {err}" if not isinstance(err, ValueError)
                  else str(err))
        return "failed"
    finally:
        beat.stop()


def _run_node(ctx: WorkerContext, job_id: str, attempt: int, node: int, rendezvous: dict, me: str, address: str,
              beat: SlotBeat) -> str:
    lease = Lease(ctx, job_id, attempt)
    nodes = rendezvous["nodes"]
    lease.event(f"node {node} of {nodes} joined: {me} at {address}", node=node, worker=me, address=address)
    check_devices(rendezvous["nproc_per_node"])
    with ctx.sessions() as session:
        job = session.get(Job, job_id)
    inputs = fetch_inputs(ctx, job)
    out_dir = job_dir(ctx, job_id) / "run"
    out_dir.mkdir(parents=True, exist_ok=True)
    align_checkpoints(ctx, out_dir, rendezvous.get("checkpoint"))
    spec = TrainSpec(config=build_config(job, inputs.base_location), data_dir=str(inputs.data_dir),
                     out_dir=str(out_dir), attempt=attempt, nodes=nodes)
    spec_file = out_dir / "spec.json"
    spec_file.write_text(spec.to_json())
    marker = spec.shutdown_marker
    marker.unlink(missing_ok=True)
    if not beat.in_gang:
        return "stopped"
    proc = Torchrun(torchrun_command(job_id, spec_file, rendezvous=rendezvous, host=False, address=address),
                    out_dir.parent / f"torchrun-{attempt}-node{node}.log")
    try:
        ended_at = None
        while (code := proc.poll()) is None:
            if shutdown_requested() and not marker.exists():  # tell the leader first, then the ranks
                beat.beat(status=gangs.LEAVING)
                marker.touch()
            if not beat.in_gang:
                ended_at = ended_at or time.monotonic()
                if time.monotonic() - ended_at > STOP_GRACE_S:  # the gang ended; give its ranks a moment
                    log.warning("gang of %s ended; stopping node %d's torchrun", job_id, node)
                    proc.stop()
                    return "stopped"
            time.sleep(POLL_S / 2)
    finally:
        proc.stop()
        marker.unlink(missing_ok=True)
    if code != 0:
        if not beat.beat(status=gangs.FAILED, error=f"torchrun failed (exit {code}): {proc.tail()}"):
            log.warning("node %d of %s: torchrun ended with its gang (exit %d)", node, job_id, code)
            return "stopped"  # the leader gave up or failed first: its store went away
        log.error("node %d of %s: torchrun failed (exit %d): %s", node, job_id, code, proc.tail())
        return "failed"
    return "done"
