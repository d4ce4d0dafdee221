/* MiniCharts: the dashboard's small SVG charts (no library). Everything is built with
   createElementNS / textContent; sizes follow the container's width.

   MiniCharts.line(container, {times: [epoch seconds], series: [{label, color, values, dashed}],
                               format: v => text, timeFormat: Intl.DateTimeFormat, empty: text})
   MiniCharts.bars(container, {items: [{label, value, color}], format: v => text, empty: text}) */
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";

  function svgEl(name, attrs, parent) {
    var el = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, String(attrs[k])); });
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, content, attrs) {
    var el = svgEl("text", Object.assign({ x: x, y: y }, attrs || {}), parent);
    el.textContent = content;
    return el;
  }

  // The top of the y axis: four equal steps of a round size (1, 2, 2.5 or 5 times 10^n).
  function niceMax(value) {
    if (!(value > 0)) return 1;
    var raw = value / 4;
    var exp = Math.pow(10, Math.floor(Math.log10(raw)));
    var f = raw / exp;
    var step = (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * exp;
    return step * 4;
  }

  function emptyState(container, message) {
    var p = document.createElement("p");
    p.className = "chart-empty";
    p.textContent = message || "—";
    container.appendChild(p);
  }

  function legend(container, series) {
    var ul = document.createElement("ul");
    ul.className = "legend";
    series.forEach(function (s) {
      var li = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch" + (s.dashed ? " dashed" : "");
      swatch.style.borderColor = s.color;
      swatch.style.backgroundColor = s.dashed ? "transparent" : s.color;
      li.appendChild(swatch);
      li.appendChild(document.createTextNode(s.label));
      ul.appendChild(li);
    });
    container.appendChild(ul);
  }

  function line(container, opts) {
    container.replaceChildren();
    var times = opts.times || [];
    var series = opts.series || [];
    var format = opts.format || function (v) { return String(v); };
    var hasData = series.some(function (s) { return s.values.some(function (v) { return v !== null && v !== undefined && v !== 0; }); });
    var width = Math.max(260, Math.floor(container.clientWidth || 520));
    var height = opts.height || 190;
    var pad = { left: 54, right: 12, top: 12, bottom: 26 };
    var svg = svgEl("svg", {
      viewBox: "0 0 " + width + " " + height, width: width, height: height,
      role: "img", "class": "line-chart", "aria-label": opts.title || ""
    }, container);
    var plotW = width - pad.left - pad.right;
    var plotH = height - pad.top - pad.bottom;
    var maxValue = 0;
    series.forEach(function (s) { s.values.forEach(function (v) { if (v > maxValue) maxValue = v; }); });
    var yMax = niceMax(maxValue);
    var t0 = times.length ? times[0] : 0;
    var t1 = times.length > 1 ? times[times.length - 1] : t0 + 1;
    function x(t) { return pad.left + (t - t0) / (t1 - t0) * plotW; }
    function y(v) { return pad.top + plotH - v / yMax * plotH; }

    // grid and y labels
    var grid = svgEl("g", { "class": "grid" }, svg);
    for (var i = 0; i <= 4; i++) {
      var v = yMax * i / 4;
      var gy = y(v);
      svgEl("line", { x1: pad.left, x2: width - pad.right, y1: gy, y2: gy }, grid);
      text(grid, pad.left - 6, gy + 4, format(v), { "text-anchor": "end", "class": "axis-label" });
    }
    // x labels: about one every 110 px
    var ticks = Math.max(2, Math.min(times.length, Math.floor(plotW / 110) + 1));
    var axis = svgEl("g", { "class": "axis" }, svg);
    for (var k = 0; k < ticks && times.length; k++) {
      var idx = Math.round(k * (times.length - 1) / Math.max(1, ticks - 1));
      var tx = x(times[idx]);
      var anchor = k === 0 ? "start" : k === ticks - 1 ? "end" : "middle";
      text(axis, tx, height - 8, opts.timeFormat.format(new Date(times[idx] * 1000)),
        { "text-anchor": anchor, "class": "axis-label" });
    }
    svgEl("line", { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0), "class": "baseline" }, svg);

    series.forEach(function (s) {
      var g = svgEl("g", { "class": "series" }, svg);
      var d = "";
      var open = false;
      // Like Grafana on rows that only exist for non-empty buckets: empty buckets (null) are
      // skipped and the line joins the points around them (spanGaps: false breaks it instead).
      s.values.forEach(function (v, j) {
        if (v === null || v === undefined) { if (opts.spanGaps === false) open = false; return; }
        d += (open ? "L" : "M") + x(times[j]).toFixed(1) + " " + y(v).toFixed(1) + " ";
        open = true;
      });
      if (d) {
        svgEl("path", {
          d: d.trim(), fill: "none", stroke: s.color, "stroke-width": 2,
          "stroke-linejoin": "round", "stroke-linecap": "round",
          "stroke-dasharray": s.dashed ? "5 4" : "none"
        }, g);
      }
      s.values.forEach(function (v, j) {
        if (v === null || v === undefined || (v === 0 && !s.showZero)) return;
        var c = svgEl("circle", { cx: x(times[j]).toFixed(1), cy: y(v).toFixed(1), r: 2.6, fill: s.color }, g);
        var tip = svgEl("title", {}, c);
        tip.textContent = opts.timeFormat.format(new Date(times[j] * 1000)) + " — " + s.label + " : " + format(v);
      });
    });
    if (!hasData) {
      text(svg, pad.left + plotW / 2, pad.top + plotH / 2, opts.empty || "—",
        { "text-anchor": "middle", "class": "empty-label" });
    }
    legend(container, series);
    return svg;
  }

  function bars(container, opts) {
    container.replaceChildren();
    var items = opts.items || [];
    var format = opts.format || function (v) { return String(v); };
    var total = items.reduce(function (a, it) { return a + (it.value || 0); }, 0);
    if (!items.length) { emptyState(container, opts.empty); return null; }
    var width = Math.max(220, Math.floor(container.clientWidth || 320));
    var rowH = 30;
    var labelW = Math.min(150, Math.floor(width * 0.42));
    var valueW = 74;
    var height = items.length * rowH + 4;
    var svg = svgEl("svg", {
      viewBox: "0 0 " + width + " " + height, width: width, height: height,
      role: "img", "class": "bar-chart", "aria-label": opts.title || ""
    }, container);
    var maxValue = items.reduce(function (a, it) { return Math.max(a, it.value || 0); }, 0) || 1;
    var barMax = width - labelW - valueW - 8;
    items.forEach(function (it, i) {
      var yy = i * rowH + 4;
      var g = svgEl("g", { "class": "bar-row" }, svg);
      var share = total ? " (" + Math.round(100 * (it.value || 0) / total) + "%)" : "";
      var tip = svgEl("title", {}, g);
      tip.textContent = it.label + " : " + format(it.value || 0) + share;
      var maxChars = Math.max(6, Math.floor(labelW / 7.2) - 1);
      var shown = it.label.length > maxChars ? it.label.slice(0, maxChars - 1) + "…" : it.label;
      text(g, 0, yy + 15, shown, { "class": "bar-label" });
      svgEl("rect", { x: labelW, y: yy + 3, width: barMax, height: 16, rx: 4, "class": "bar-track" }, g);
      var w = Math.max(it.value > 0 ? 3 : 0, barMax * (it.value || 0) / maxValue);
      svgEl("rect", { x: labelW, y: yy + 3, width: w.toFixed(1), height: 16, rx: 4, fill: it.color || "#c2410c", "class": "bar" }, g);
      text(g, width, yy + 15, format(it.value || 0) + share, { "text-anchor": "end", "class": "bar-value" });
    });
    if (!total) {
      var note = document.createElement("p");
      note.className = "chart-empty small";
      note.textContent = opts.empty || "—";
      container.appendChild(note);
    }
    return svg;
  }

  window.MiniCharts = { line: line, bars: bars };
})();
