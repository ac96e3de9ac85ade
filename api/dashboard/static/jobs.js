// The jobs list, live: every 3 s (while the tab is visible and a job on it is unfinished) the same page is
// fetched from /v1/jobs and each row's status, progress and ETA updated; new jobs are announced.
"use strict";

(() => {
  const table = document.getElementById("jobs");
  if (!table) return;
  const EVERY_MS = 3000;

  function update(row, job) {
    row.dataset.jobStatus = job.status;
    row.querySelector(".status").replaceChildren(dt.badge(job.status));
    const bar = row.querySelector("progress");
    bar.max = job.progress.total_steps || 1;
    bar.value = job.progress.step;
    row.querySelector(".steps").textContent = `${dt.number(job.progress.step)} / ${dt.number(job.progress.total_steps)}`;
    row.querySelector(".eta").textContent = dt.TERMINAL.includes(job.status) ? "—" : dt.duration(job.progress.eta_seconds);
  }

  function unfinished() {
    return [...table.querySelectorAll("tr[data-job-id]")].some((row) => !dt.TERMINAL.includes(row.dataset.jobStatus));
  }

  async function refresh() {
    const query = new URLSearchParams({ limit: "50" });
    if (table.dataset.status) query.set("status", table.dataset.status);
    if (table.dataset.after) query.set("after", table.dataset.after);
    const page = await dt.getJSON(`/v1/jobs?${query}`);
    let fresh = 0;
    for (const job of page.data) {
      const row = table.querySelector(`tr[data-job-id="${CSS.escape(job.id)}"]`);
      if (row) update(row, job); else if (!table.dataset.after) fresh += 1;
    }
    const notice = document.getElementById("jobs-notice");
    notice.hidden = fresh === 0;
    notice.replaceChildren(`${fresh} new job${fresh === 1 ? "" : "s"} · `, dt.el("a", { href: location.href }, "show"));
  }

  async function tick() {
    if (!document.hidden && (unfinished() || !table.dataset.after)) {
      try { await refresh(); } catch (err) { console.warn("dashboard:", err.message); }
    }
    setTimeout(tick, EVERY_MS);
  }

  document.addEventListener("DOMContentLoaded", () => setTimeout(tick, EVERY_MS));
})();
