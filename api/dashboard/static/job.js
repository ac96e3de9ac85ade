// A job's page, live: the event log over SSE (/v1/jobs/{id}/events?stream=true), and on each event a
// throttled refresh of the job (status, progress, ETA, error), its metrics history (the charts, at most
// 500 points: the server averages longer histories), its sample grids and its checkpoints.
"use strict";

(() => {
  const main = document.getElementById("job");
  const id = main.dataset.jobId;
  const api = `/v1/jobs/${encodeURIComponent(id)}`;
  const tuning = main.dataset.kind === "tune";
  const $ = (sel) => document.getElementById(sel);
  let finished = dt.TERMINAL.includes(main.dataset.status);

  async function refreshJob() {
    const job = await dt.getJSON(api);
    $("job-status").replaceChildren(dt.badge(job.status));
    main.dataset.status = job.status;
    const p = job.progress;
    $("job-progress").max = p.total_steps || 1;
    $("job-progress").value = p.step;
    $("job-steps").textContent = `${dt.number(p.step)} / ${dt.number(p.total_steps)}`;
    finished = dt.TERMINAL.includes(job.status);
    $("job-eta").textContent = finished ? "—" : dt.duration(p.eta_seconds);
    for (const [node, at] of [["job-started", job.started_at], ["job-finished", job.finished_at]]) {
      if (at) $(node).replaceChildren(dt.el("time", { datetime: at }, new Date(at).toLocaleString()));
    }
    $("job-attempts").textContent = job.attempts;
    if (job.error) {
      $("job-error").hidden = false;
      $("job-error").querySelector("pre").textContent = job.error;
    }
    if (finished && $("cancel-form")) $("cancel-form").remove();
  }

  // --- charts -------------------------------------------------------------------------------------
  let metrics = null;
  const CHARTS = [
    ["chart-loss", [["total", "loss", "s0"], ["target", "loss_target", "s1"], ["knowledge bank", "loss_bank", "s2"]]],
    ["chart-lr", [["learning rate", "learning_rate", "s3"]]],
    ["chart-ips", [["images/s", "images_per_sec", "s5"]]],
  ];

  function drawCharts() {
    if (!metrics) return;
    for (const [node, lines] of CHARTS) {
      const series = lines
        .map(([name, key, cls]) => ({ name, cls, points: metrics.data.map((p) => [p.step, p[key]]) }))
        .filter((s) => s.points.some((p) => p[1] !== null));
      dt.chart.draw($(node), series, { xLabel: "step" });
      if (node === "chart-loss") dt.chart.legend($("legend-loss"), series);
    }
  }

  async function loadMetrics() {
    metrics = await dt.getJSON(`${api}/metrics?max_points=500`);
    const n = metrics.total_points;
    $("metrics-note").textContent = n === 0 ? "No logged steps yet." :
      `${dt.number(n)} logged steps` + (metrics.downsampled ? `, shown as ${metrics.data.length} averages.` : ".");
    drawCharts();
  }

  // --- sample grids ---------------------------------------------------------------------------------
  let samples = [];

  function showSample() {
    const index = Number($("sample-step").value);
    const sample = samples[index];
    if (!sample) return;
    $("sample-step-label").textContent = `step ${sample.step} (${index + 1} of ${samples.length})`;
    if ($("sample-image").getAttribute("src") !== sample.url) $("sample-image").src = sample.url;
    $("sample-image").alt = `sample grid at step ${sample.step}`;
    $("sample-image").hidden = false;
  }

  async function loadSamples() {
    const atEnd = samples.length === 0 || Number($("sample-step").value) === samples.length - 1;
    samples = (await dt.allPages(`${api}/samples`)).sort((a, b) => a.step - b.step);
    $("samples-note").textContent = samples.length ? "" : "No sample grid yet.";
    $("samples-slider").hidden = samples.length === 0;
    $("sample-step").max = Math.max(samples.length - 1, 0);
    if (atEnd) $("sample-step").value = samples.length - 1;  // follow the newest unless the viewer moved away
    showSample();
  }

  // --- checkpoints ----------------------------------------------------------------------------------
  function probeSteps(steps) {  // the probe form's choice of checkpoint follows the published ones
    const select = $("checkpoint_step");
    if (!select) return;
    const chosen = select.value;
    select.replaceChildren(dt.el("option", { value: "" }, "the latest"),
      ...steps.map((step) => dt.el("option", { value: step, selected: String(step) === chosen }, String(step))));
  }

  async function loadCheckpoints() {
    const checkpoints = (await dt.allPages(`${api}/checkpoints`)).sort((a, b) => b.step - a.step);
    probeSteps(checkpoints.map((c) => c.step));
    $("checkpoints-note").textContent = checkpoints.length ? "" : "No checkpoint yet.";
    $("checkpoints").replaceChildren(...checkpoints.map((c) => {
      const files = dt.el("ul", {}, ...c.files.map((f) => dt.el("li", {}, dt.el("a", { href: f.url, download: "" }, f.path))));
      const loss = c.metrics && c.metrics.loss !== undefined ? ` · loss ${dt.number(c.metrics.loss)}` : "";
      return dt.el("li", { "data-step": c.step }, dt.el("strong", {}, `step ${c.step}`),
        `${loss} · ${new Date(c.created_at).toLocaleString()}`,
        dt.el("details", {}, dt.el("summary", {}, `${c.files.length} files`), files));
    }));
  }

  // --- reports (forgetting probes) -----------------------------------------------------------------------
  async function loadReports() {
    const reports = (await dt.getJSON(`${api}/reports`)).data;
    $("reports-note").textContent = reports.length ? "" : "No report yet.";
    $("reports").replaceChildren(...reports.map((r) => dt.el("li", {}, dt.el("a", { href: r.url }, r.name))));
    const png = reports.find((r) => r.name.endsWith(".png"));
    if (png) { $("report-image").src = png.url; $("report-image").hidden = false; }
  }

  // --- the event log ---------------------------------------------------------------------------------
  const MAX_LINES = 500;

  function logEvent(event) {
    const line = dt.el("li", { class: event.level },
      dt.el("time", { datetime: event.created_at }, new Date(event.created_at).toLocaleTimeString()),
      `[${event.type}] ${event.message}`);
    const log = $("events");
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(line);
    while (log.childElementCount > MAX_LINES) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  const report = (err) => console.warn("dashboard:", err.message);
  const refreshFast = dt.throttle(() => {
    refreshJob().catch(report);
    if (tuning) loadMetrics().catch(report);
  }, 2000);
  const refreshOutputs = dt.throttle(() => {
    if (tuning) { loadSamples().catch(report); loadCheckpoints().catch(report); } else { loadReports().catch(report); }
  }, 8000);

  function refreshAll() {
    refreshJob().catch(report);
    if (tuning) {
      loadMetrics().catch(report); loadSamples().catch(report); loadCheckpoints().catch(report);
    } else {
      loadReports().catch(report);
    }
  }

  // A status change refreshes everything, once for a burst (the stream replays the log on connect).
  const refreshOnStatus = dt.throttle(refreshAll, 1500);

  function follow() {
    const source = new EventSource(`${api}/events?stream=true`);
    for (const type of ["status", "progress", "message"]) {
      source.addEventListener(type, (message) => {
        logEvent(JSON.parse(message.data));
        if (type === "status") {
          refreshOnStatus();
        } else {
          refreshFast();
          refreshOutputs();
        }
      });
    }
    source.addEventListener("end", () => {  // the job finished: the stream ends, do not reconnect
      source.close();
      refreshAll();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (tuning) {
      $("sample-step").addEventListener("input", showSample);
      for (const [node] of CHARTS) dt.chart.responsive($(node), drawCharts);
    }
    refreshAll();
    follow();
  });
})();
