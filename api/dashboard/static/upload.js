// Dataset upload with a progress bar: the archive goes to POST /v1/datasets (the REST API, authorised by
// the session cookie and the CSRF token header); a refusal lists the problem per file.
"use strict";

(() => {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const $ = (sel) => document.getElementById(sel);

  function showErrors(problem) {
    $("upload-detail").textContent = `${problem.title || "Refused"}: ${problem.detail || ""}`;
    const rows = (problem.errors || []).map((e) =>
      dt.el("tr", {}, dt.el("td", {}, dt.el("code", {}, e.file || e.field || "")), dt.el("td", {}, e.message)));
    $("upload-errors").querySelector("tbody").replaceChildren(...rows);
    $("upload-errors").querySelector("table").hidden = rows.length === 0;
    $("upload-errors").hidden = false;
  }

  function upload(event) {
    event.preventDefault();
    const file = $("upload-file").files[0];
    $("upload-errors").hidden = true;
    if (!file) return;
    const max = Number(form.dataset.maxBytes);
    if (file.size > max) {
      showErrors({ title: "Too large", detail: `the archive has ${file.size} bytes; the limit is ${max}`,
        errors: [{ file: file.name, message: "is larger than the upload limit" }] });
      return;
    }
    const body = new FormData();
    body.append("file", file, file.name);
    if ($("upload-name").value.trim()) body.append("name", $("upload-name").value.trim());
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/datasets");
    xhr.setRequestHeader("X-CSRF-Token", dt.csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      $("upload-progress").max = e.total;
      $("upload-progress").value = e.loaded;
      const done = e.loaded >= e.total;
      $("upload-status").textContent = done ? "validating every image…" :
        `${Math.round((100 * e.loaded) / e.total)} % of ${(e.total / 1048576).toFixed(1)} MiB sent`;
    };
    xhr.onload = () => {
      $("upload-button").disabled = false;
      let answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch (err) { answer = { detail: xhr.statusText }; }
      if (xhr.status === 201) {
        $("upload-status").textContent = `accepted: ${answer.num_images} images`;
        location.href = `/ui/datasets/${encodeURIComponent(answer.id)}`;
      } else if (xhr.status === 401) {
        dt.signIn();
      } else {
        $("upload-status").textContent = `refused (${xhr.status})`;
        showErrors(answer);
      }
    };
    xhr.onerror = () => {
      $("upload-button").disabled = false;
      showErrors({ title: "Upload failed", detail: "the connection was lost; try again" });
    };
    $("upload-button").disabled = true;
    $("upload-progress-box").hidden = false;
    $("upload-progress").value = 0;
    $("upload-status").textContent = "starting…";
    xhr.send(body);
  }

  form.addEventListener("submit", upload);
})();
