// Base models: the location inputs of the chosen kind only, and the load check of pending models followed
// (every 2 s from /v1/base-models/{id}) until it is ready or failed.
"use strict";

(() => {
  function showKind() {
    const kind = document.getElementById("kind").value;
    for (const field of document.querySelectorAll("[data-kind]")) field.hidden = field.dataset.kind !== kind;
  }

  async function follow(row) {
    try {
      const model = await dt.getJSON(`/v1/base-models/${encodeURIComponent(row.dataset.modelId)}`);
      row.dataset.modelStatus = model.status;
      row.querySelector(".status").replaceChildren(dt.badge(model.status),
        dt.el("span", { class: "model-error" }, model.error ? " " + model.error : ""));
      if (model.resolutions) row.querySelector(".sizes").textContent = `${model.resolutions.native} px`;
      if (model.status !== "pending") return;
    } catch (err) {
      console.warn("dashboard:", err.message);
    }
    setTimeout(() => follow(row), 2000);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const kind = document.getElementById("kind");
    if (kind) { kind.addEventListener("change", showKind); showKind(); }
    for (const row of document.querySelectorAll('tr[data-model-status="pending"]')) setTimeout(() => follow(row), 1000);
  });
})();
