// Line charts drawn as SVG from JSON: axes with round ticks, one path per series (gaps where a value is
// missing), and a readout of every series at the step under the pointer.
"use strict";

dt.chart = (() => {
  const MARGIN = { top: 12, right: 16, bottom: 30, left: 58 };

  // About `count` round tick values covering [low, high].
  function ticks(low, high, count) {
    if (!(high > low)) { high = low + (Math.abs(low) || 1); low -= Math.abs(low) * 0.1; }
    const raw = (high - low) / count;
    const power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
    const out = [];
    for (let v = Math.ceil(low / step) * step; v <= high + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    return out;
  }

  function label(value) {
    const abs = Math.abs(value);
    if (abs !== 0 && (abs < 1e-3 || abs >= 1e6)) return value.toExponential(1);
    return dt.number(value, 3);
  }

  // series: [{name, cls, points: [[x, y|null], ...]}]; options: {xLabel}
  function draw(node, series, options = {}) {
    const width = Math.max(node.clientWidth || 640, 240), height = node.clientHeight || 260;
    node.setAttribute("viewBox", `0 0 ${width} ${height}`);
    node.replaceChildren();
    const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && isFinite(p[1])));
    if (all.length === 0) {
      node.append(Object.assign(dt.svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }),
        { textContent: "no data yet" }));
      return;
    }
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    const xTicks = ticks(Math.min(...xs), Math.max(...xs), 6), yTicks = ticks(Math.min(...ys), Math.max(...ys), 5);
    const [x0, x1] = [Math.min(xTicks[0], ...xs), Math.max(xTicks[xTicks.length - 1], ...xs)];
    const [y0, y1] = [Math.min(yTicks[0], ...ys), Math.max(yTicks[yTicks.length - 1], ...ys)];
    const inner = { w: width - MARGIN.left - MARGIN.right, h: height - MARGIN.top - MARGIN.bottom };
    const sx = (x) => MARGIN.left + (x1 > x0 ? (x - x0) / (x1 - x0) : 0.5) * inner.w;
    const sy = (y) => MARGIN.top + (y1 > y0 ? 1 - (y - y0) / (y1 - y0) : 0.5) * inner.h;

    for (const t of yTicks) {
      node.append(dt.svg("line", { class: "grid-line", x1: MARGIN.left, x2: width - MARGIN.right, y1: sy(t), y2: sy(t) }));
      node.append(Object.assign(dt.svg("text", { x: MARGIN.left - 6, y: sy(t) + 4, "text-anchor": "end" }), { textContent: label(t) }));
    }
    for (const t of xTicks) {
      node.append(Object.assign(dt.svg("text", { x: sx(t), y: height - MARGIN.bottom + 16, "text-anchor": "middle" }),
        { textContent: label(t) }));
    }
    node.append(dt.svg("line", { class: "axis", x1: MARGIN.left, x2: MARGIN.left, y1: MARGIN.top, y2: height - MARGIN.bottom }));
    node.append(dt.svg("line", { class: "axis", x1: MARGIN.left, x2: width - MARGIN.right, y1: height - MARGIN.bottom, y2: height - MARGIN.bottom }));
    if (options.xLabel) {
      node.append(Object.assign(dt.svg("text", { x: width - MARGIN.right, y: height - 2, "text-anchor": "end" }), { textContent: options.xLabel }));
    }
    series.forEach((s, i) => {
      let d = "", pen = "M";
      for (const [x, y] of s.points) {
        if (y === null || !isFinite(y)) { pen = "M"; continue; }
        d += `${pen}${sx(x).toFixed(1)} ${sy(y).toFixed(1)}`;
        pen = "L";
      }
      if (d) node.append(dt.svg("path", { class: `line ${s.cls || "s" + i}`, d, "data-series": s.name }));
    });
    readout(node, series, { sx, sy, x0, x1, top: MARGIN.top, bottom: height - MARGIN.bottom });
  }

  // A dashed line at the step under the pointer, a dot on each series and their values.
  function readout(node, series, g) {
    const cursor = dt.svg("line", { class: "cursor", y1: g.top, y2: g.bottom, visibility: "hidden" });
    const text = dt.svg("text", { class: "readout", y: g.top + 10, visibility: "hidden" });
    const dots = series.map((s, i) => dt.svg("circle", { class: `dot ${s.cls || "s" + i}`, r: 3, visibility: "hidden" }));
    node.append(cursor, ...dots, text);
    node.onmousemove = (event) => {
      const box = node.getBoundingClientRect();
      const px = ((event.clientX - box.left) / box.width) * node.viewBox.baseVal.width;
      const parts = [];
      let step = null;
      series.forEach((s, i) => {
        const valid = s.points.filter((p) => p[1] !== null && isFinite(p[1]));
        if (!valid.length) return;
        const near = valid.reduce((a, b) => (Math.abs(g.sx(b[0]) - px) < Math.abs(g.sx(a[0]) - px) ? b : a));
        step = near[0];
        dots[i].setAttribute("cx", g.sx(near[0]));
        dots[i].setAttribute("cy", g.sy(near[1]));
        dots[i].setAttribute("visibility", "visible");
        parts.push(`${s.name} ${dt.number(near[1], 4)}`);
      });
      if (step === null) return;
      cursor.setAttribute("x1", g.sx(step));
      cursor.setAttribute("x2", g.sx(step));
      cursor.setAttribute("visibility", "visible");
      text.textContent = `step ${step}: ${parts.join(" · ")}`;
      const x = g.sx(step);
      const right = x > node.viewBox.baseVal.width / 2;
      text.setAttribute("x", right ? x - 6 : x + 6);
      text.setAttribute("text-anchor", right ? "end" : "start");
      text.setAttribute("visibility", "visible");
    };
    node.onmouseleave = () => {
      for (const item of [cursor, text, ...dots]) item.setAttribute("visibility", "hidden");
    };
  }

  // The legend of `series` as list items with a swatch each.
  function legend(list, series) {
    list.replaceChildren(...series.map((s, i) =>
      dt.el("li", {}, dt.el("span", { class: `swatch ${s.cls || "s" + i}` }), s.name)));
  }

  // Redraw with the latest arguments when the chart's width changes.
  function responsive(node, redraw) {
    let width = node.clientWidth;
    new ResizeObserver(() => {
      if (node.clientWidth !== width) { width = node.clientWidth; redraw(); }
    }).observe(node);
  }

  return { draw, legend, responsive, ticks };
})();
