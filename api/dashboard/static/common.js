// What every dashboard page shares: the session's CSRF token, JSON fetches of /v1 (authorised by the
// session cookie), a small DOM builder (text only: nothing is parsed as HTML) and formatting.
"use strict";

const dt = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const TERMINAL = ["succeeded", "failed", "cancelled"];

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function signIn() {
    location.href = "/ui/sign-in?next=" + encodeURIComponent(location.pathname + location.search);
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (response.status === 401) {
      signIn();
    }
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (err) { /* not JSON */ }
      throw new Error(`${response.status}: ${detail}`);
    }
    return response.json();
  }

  // Every item of a /v1 list, following `has_more` with `after` (pages of 100).
  async function allPages(url) {
    const items = [];
    let after = null;
    for (;;) {
      const sep = url.includes("?") ? "&" : "?";
      const page = await getJSON(url + sep + "limit=100" + (after ? "&after=" + encodeURIComponent(after) : ""));
      items.push(...page.data);
      if (!page.has_more || page.data.length === 0) return items;
      after = page.data[page.data.length - 1].id;
    }
  }

  // el("a", {href: "/x", class: "y"}, "text", child): an element; strings become text nodes.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    return node;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "—";
    const s = Math.round(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
    return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, "0")} min`;
  }

  function number(value, digits = 4) {
    if (value === null || value === undefined) return "—";
    if (Number.isInteger(value)) return value.toLocaleString("en");
    return Number(value).toPrecision(digits).replace(/(\.\d*?)0+(e|$)/, "$1$2").replace(/\.(e|$)/, "$1");
  }

  function badge(status) {
    return el("span", { class: "badge " + status }, status);
  }

  // Call fn at most once per `ms`; calls in between are folded into one trailing call.
  function throttle(fn, ms) {
    let last = Date.now(), timer = null;  // the first call waits too: pages load everything once at start
    return () => {
      const wait = last + ms - Date.now();
      if (wait <= 0) { last = Date.now(); fn(); return; }
      if (!timer) timer = setTimeout(() => { timer = null; last = Date.now(); fn(); }, wait);
    };
  }

  function localTimes(root) {
    for (const node of (root || document).querySelectorAll("time[datetime]")) {
      const when = new Date(node.getAttribute("datetime"));
      if (!isNaN(when)) { node.title = node.textContent; node.textContent = when.toLocaleString(); }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const select of document.querySelectorAll("[data-autosubmit]")) {
      select.addEventListener("change", () => select.form.submit());
    }
    localTimes();
  });

  return { TERMINAL, csrfToken, signIn, getJSON, allPages, el, svg, duration, number, badge, throttle, localTimes };
})();
