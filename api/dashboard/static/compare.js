// Compare jobs: one chart with a curve per job (the series chosen), and each job's sample grid at the same
// step (the newest grid at or before it). Reloads every 10 s while a job is unfinished.
"use strict";

(() => {
  const section = document.getElementById("compare");
  if (!section) return;
  const ids = section.dataset.jobs.split(",");
  const $ = (sel) => document.getElementById(sel);
  const labelOf = (id) => section.querySelector(`tr[data-job-id="${CSS.escape(id)}"]`).dataset.label;
  let histories = [], grids = [], steps = [];

  function drawCurves() {
    const key = $("compare-figure").value;
    const series = ids.map((id, i) => ({
      name: labelOf(id), cls: "s" + i, points: (histories[i] ? histories[i].data : []).map((p) => [p.step, p[key]]),
    }));
    dt.chart.draw($("compare-chart"), series, { xLabel: "step" });
    dt.chart.legend($("compare-legend"), series);
  }

  function showGrids() {
    const step = steps[Number($("compare-step").value)];
    $("compare-step-label").textContent = step === undefined ? "" : `step ${step}`;
    ids.forEach((id, i) => {
      const figure = $("compare-grids").querySelector(`figure[data-job-id="${CSS.escape(id)}"]`);
      const sample = (grids[i] || []).filter((s) => s.step <= step).pop();
      const img = figure.querySelector("img"), note = figure.querySelector(".hint");
      img.hidden = !sample;
      note.textContent = sample ? (sample.step === step ? "" : `(newest grid: step ${sample.step})`) : "no sample grid at this step";
      if (sample && img.getAttribute("src") !== sample.url) img.src = sample.url;
    });
  }

  async function load() {
    const api = (id) => `/v1/jobs/${encodeURIComponent(id)}`;
    [histories, grids] = await Promise.all([
      Promise.all(ids.map((id) => dt.getJSON(`${api(id)}/metrics?max_points=500`))),
      Promise.all(ids.map((id) => dt.allPages(`${api(id)}/samples`))),
    ]);
    grids = grids.map((list) => list.sort((a, b) => a.step - b.step));
    const total = histories.reduce((n, h) => n + h.total_points, 0);
    $("compare-note").textContent = total ? "" : "No logged steps yet.";
    drawCurves();
    const atEnd = steps.length === 0 || Number($("compare-step").value) === steps.length - 1;
    steps = [...new Set(grids.flat().map((s) => s.step))].sort((a, b) => a - b);
    $("compare-slider").hidden = steps.length === 0;
    $("compare-step").max = Math.max(steps.length - 1, 0);
    if (atEnd) $("compare-step").value = steps.length - 1;
    showGrids();
  }

  async function statuses() {
    const jobs = await Promise.all(ids.map((id) => dt.getJSON(`/v1/jobs/${encodeURIComponent(id)}`)));
    return jobs.every((job) => dt.TERMINAL.includes(job.status));
  }

  async function poll() {
    try {
      await load();
      if (await statuses()) return;
    } catch (err) {
      console.warn("dashboard:", err.message);
    }
    setTimeout(poll, 10000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("compare-figure").addEventListener("change", drawCurves);
    $("compare-step").addEventListener("input", showGrids);
    dt.chart.responsive($("compare-chart"), drawCurves);
    poll();
  });
})();
