/* lrdiag report: builds the page from the JSON embedded in it. Every name in it comes from a log,
   so the DOM is built with textContent only, never innerHTML. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("lrdiag-data").textContent);
  var curves = JSON.parse(document.getElementById("lrdiag-curves").textContent);
  var replayCurves = JSON.parse(document.getElementById("lrdiag-replay-curves").textContent);
  var SEVERITIES = ["error", "warning", "info"];
  var SEVERITY_COLOR = { error: "198,40,40", warning: "178,106,0", info: "2,119,189" };
  var PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
  var LR_COLOR = "#888";
  var plots = [];
  var linkZoom = false;
  var zooming = false;
  var lastZoom = null;

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === "text") node.textContent = attrs[key];
      else if (key === "class") node.className = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { if (child != null) node.append(child); });
    return node;
  }

  function fmt(value) {
    if (value == null) return "–";
    if (typeof value === "string") return value;
    var size = Math.abs(value);
    if (size !== 0 && (size < 1e-3 || size >= 1e5)) return value.toExponential(3);
    return String(+value.toPrecision(4));
  }

  function where(f) { return f.step_start === f.step_end ? "step " + f.step_start : "steps " + f.step_start + "–" + f.step_end; }

  function width(node) { return Math.max((node.clientWidth || 900) - 8, 300); }

  /* ---------- charts ---------- */

  function axisValues(u, splits) { return splits.map(fmt); }

  function logScale(tables) {
    var low = Infinity, high = -Infinity;
    tables.forEach(function (table) {
      table[1].forEach(function (v) { if (v != null) { if (v < low) low = v; if (v > high) high = v; } });
    });
    return low > 0 && high / low > 30;
  }

  function lineSeries(label, color, scale, dash) {
    return { label: label, stroke: color, width: 1.25, scale: scale, dash: dash, points: { show: false },
             value: function (u, v) { return fmt(v); } };
  }

  function shade(u, ctx, x0, x1, rgb, alpha) {
    var left = Math.max(Math.min(x0, x1), u.bbox.left), right = Math.min(Math.max(x0, x1), u.bbox.left + u.bbox.width);
    var minimum = 3 * uPlot.pxRatio;
    if (right - left < minimum) { left -= minimum / 2; right += minimum / 2; }
    ctx.fillStyle = "rgba(" + rgb + "," + alpha + ")";
    ctx.fillRect(left, u.bbox.top, right - left, u.bbox.height);
  }

  function vline(u, ctx, x, rgb) {
    ctx.strokeStyle = "rgb(" + rgb + ")";
    ctx.lineWidth = 1.5 * uPlot.pxRatio;
    ctx.setLineDash([5 * uPlot.pxRatio, 4 * uPlot.pxRatio]);
    ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
    ctx.setLineDash([]);
  }

  function marker(u, ctx, x, y, rgb) {
    var r = 5 * uPlot.pxRatio;
    ctx.fillStyle = "rgb(" + rgb + ")";
    ctx.beginPath(); ctx.moveTo(x, y - r); ctx.lineTo(x + r, y + r * 0.8); ctx.lineTo(x - r, y + r * 0.8); ctx.closePath();
    ctx.fill();
  }

  /* Windows are shaded under the lines; markers and best-step lines are drawn over them. */
  function drawFindings(findings, scaleOf, over) {
    return function (u) {
      var ctx = u.ctx;
      ctx.save();
      ctx.beginPath(); ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height); ctx.clip();
      findings.forEach(function (f) {
        var rgb = SEVERITY_COLOR[f.severity] || SEVERITY_COLOR.info;
        var x0 = u.valToPos(f.step_start, "x", true), x1 = u.valToPos(f.step_end, "x", true);
        var ev = f.evidence || {};
        var scale = scaleOf[f.metric];
        if (f.category === "spike") {
          var x = u.valToPos(ev.step != null ? ev.step : f.step_start, "x", true);
          if (!over) shade(u, ctx, x0, x1, rgb, 0.10);
          else if (scale && typeof ev.peak === "number") marker(u, ctx, x, u.valToPos(ev.peak, scale, true), rgb);
          else vline(u, ctx, x, rgb);
        } else if (f.category === "train_val_divergence") {
          if (!over) shade(u, ctx, x0, x1, rgb, 0.07);
          else vline(u, ctx, u.valToPos(ev.best_step != null ? ev.best_step : f.step_start, "x", true), rgb);
        } else if (!over) {
          shade(u, ctx, x0, x1, rgb, f.category === "lr_schedule" ? 0.06 : 0.14);
        }
      });
      ctx.restore();
    };
  }

  function syncZoom(u) {
    if (!linkZoom || zooming) return;
    zooming = true;
    var x = u.scales.x;
    lastZoom = { min: x.min, max: x.max };
    plots.forEach(function (other) { if (other !== u && other.root.isConnected) other.setScale("x", { min: x.min, max: x.max }); });
    zooming = false;
  }

  /* tables: [{label, role, steps, values, color, dash}] on one step axis; LR on its own axis at the right. */
  function chart(container, tables, findings, height) {
    var losses = tables.filter(function (t) { return t.role !== "lr"; });
    var lrs = tables.filter(function (t) { return t.role === "lr"; });
    var ordered = losses.concat(lrs);
    var series = [{ label: "step", value: function (u, v) { return v == null ? "–" : String(v); } }];
    var scaleOf = {};
    ordered.forEach(function (t, i) {
      var scale = t.role === "lr" ? "lr" : "loss";
      scaleOf[t.label] = scale;
      series.push(lineSeries(t.label, t.color || (t.role === "lr" ? LR_COLOR : PALETTE[i % PALETTE.length]), scale,
                             t.dash || (t.role === "lr" ? [4, 3] : undefined)));
    });
    var aligned = uPlot.join(ordered.map(function (t) { return [t.steps, t.values]; }));
    var axes = [{ label: "step" }];
    var scales = { x: { time: false } };
    if (losses.length) {
      var log = logScale(losses.map(function (t) { return [t.steps, t.values]; }));
      scales.loss = log ? { distr: 3, log: 10 } : {};
      axes.push({ scale: "loss", label: log ? "loss (log)" : "loss", values: axisValues, size: 60 });
    }
    if (lrs.length) {
      scales.lr = {};
      axes.push({ scale: "lr", side: 1, label: "learning rate", values: axisValues, size: 70, grid: { show: false } });
    }
    var opts = {
      width: width(container), height: height || 280, series: series, axes: axes, scales: scales,
      cursor: { sync: { key: "lrdiag" }, drag: { x: true, y: false } },
      legend: { live: true },
      hooks: { drawAxes: [drawFindings(findings || [], scaleOf, false)], draw: [drawFindings(findings || [], scaleOf, true)],
               setScale: [function (u, key) { if (key === "x") syncZoom(u); }] }
    };
    var plot = new uPlot(opts, aligned, container);
    plots.push(plot);
    if (linkZoom && lastZoom) plot.setScale("x", lastZoom);
    return plot;
  }

  function runTables(run, runCurves) {
    var tags = Object.keys(runCurves);
    var rank = { train_loss: 0, val_loss: 1, lr: 2 };
    tags.sort(function (a, b) { return rank[run.curves[a].role] - rank[run.curves[b].role]; });
    return tags.map(function (tag) {
      return { label: tag, role: run.curves[tag].role, steps: runCurves[tag][0], values: runCurves[tag][1] };
    });
  }

  /* ---------- overview ---------- */

  function overview(runs) {
    var columns = [
      { key: "run", label: "run" }, { key: "source", label: "format" },
      { key: "error", label: "errors", num: true }, { key: "warning", label: "warnings", num: true },
      { key: "info", label: "info", num: true },
      { key: "best_val", label: "best val loss", num: true }, { key: "final_val", label: "final val loss", num: true }
    ];
    var head = el("tr", {}, columns.map(function (c) { return el("th", { text: c.label, "data-key": c.key }); }));
    var body = el("tbody");
    var rows = runs.map(function (run, i) {
      var o = run.overview;
      var values = { run: run.run, source: run.source, error: o.counts.error, warning: o.counts.warning, info: o.counts.info,
                     best_val: o.best_val, final_val: o.final_val };
      var link = el("a", { href: "#run-" + i, text: run.run });
      var tr = el("tr", {}, columns.map(function (c) {
        var td = el("td", { class: c.num ? "num" : "" }, [c.key === "run" ? link : fmt(values[c.key])]);
        if (SEVERITIES.indexOf(c.key) >= 0 && values[c.key] > 0) td.classList.add("count-" + c.key);
        return td;
      }));
      return { tr: tr, values: values, index: i };
    });
    rows.forEach(function (row) { body.append(row.tr); });
    var table = el("table", { class: "overview" }, [el("thead", {}, [head]), body]);
    head.addEventListener("click", function (event) {
      var th = event.target.closest("th");
      if (!th) return;
      var key = th.getAttribute("data-key");
      var dir = th.getAttribute("data-dir") === "asc" ? "desc" : "asc";
      head.querySelectorAll("th").forEach(function (other) { other.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", dir);
      var sign = dir === "asc" ? 1 : -1;
      rows.sort(function (a, b) {
        var x = a.values[key], y = b.values[key];
        if (typeof x === "string" || typeof y === "string") {
          var nx = typeof x === "number" ? x : null, ny = typeof y === "number" ? y : null;
          if (nx === null && ny === null) return sign * String(x).localeCompare(String(y));
          x = nx; y = ny;
        }
        if (x == null) return 1;
        if (y == null) return -1;
        return sign * (x - y);
      });
      rows.forEach(function (row) { body.append(row.tr); });
    });
    return { table: table, rows: rows };
  }

  function applyFilter(rows, sections, text, severity) {
    var needle = text.trim().toLowerCase();
    rows.forEach(function (row) {
      var v = row.values;
      var show = !needle || v.run.toLowerCase().indexOf(needle) >= 0 || String(v.source).toLowerCase().indexOf(needle) >= 0;
      if (severity === "error") show = show && v.error > 0;
      else if (severity === "warning") show = show && (v.error > 0 || v.warning > 0);
      else if (severity === "clean") show = show && v.error === 0 && v.warning === 0;
      row.tr.classList.toggle("hidden", !show);
      sections[row.index].classList.toggle("hidden", !show);
    });
  }

  /* ---------- run sections ---------- */

  function ruleDocs(code) {
    var rule = data.rules[code];
    if (!rule) return null;
    var items = [["What it detects", rule.what], ["Why it matters", rule.why], ["Example", rule.example], ["What to do", rule.fix]];
    return el("details", {}, [el("summary", { text: "About " + code + " " + rule.name })].concat([el("dl", {},
      [].concat.apply([], items.filter(function (item) { return item[1]; }).map(function (item) {
        return [el("dt", { text: item[0] }), el("dd", { text: item[1] })];
      })))]));
  }

  function findingItem(f, holder) {
    var zoom = el("button", { class: "zoom", type: "button", text: "zoom" });
    zoom.addEventListener("click", function () {
      drawNow(holder);
      var plot = holder.plot;
      if (!plot) return;
      var span = Math.max(f.step_end - f.step_start, 1), pad = Math.max(span * 0.5, 5);
      plot.setScale("x", { min: f.step_start - pad, max: f.step_end + pad });
    });
    return el("li", { class: f.severity }, [
      el("span", { class: "badge " + f.severity, text: f.severity }),
      el("span", { class: "code", text: f.rule + " " + f.name }), " ",
      el("span", { class: "muted", text: f.metric + " " + where(f) }), zoom,
      el("div", { text: f.message }), ruleDocs(f.rule)
    ]);
  }

  function candidateBlock(candidate, lrTable) {
    var status = candidate.replay ? candidate.replay.status : (candidate.confirmed ? "confirmed" : null);
    var head = el("h4", {}, [candidate.name, " ", el("span", { class: "muted", text: "(addresses " + (candidate.addresses || []).join(", ") + ")" })]);
    if (status) head.append(" ", el("span", { class: "status-" + status.replace(/ /g, "-"), text: status.toUpperCase() }));
    var block = el("div", { class: "candidate" }, [head, el("p", { text: candidate.rationale || "" })]);
    if (candidate.replay && candidate.replay.reason) block.append(el("p", { class: "muted", text: "replay: " + candidate.replay.reason }));
    block.append(el("pre", {}, [el("code", { text: candidate.code || "" })]));
    var curve = candidate.lr_curve || [];
    if (curve.length) {
      var holder = el("div", { class: "chart" });
      block.append(holder);
      var tables = [{ label: candidate.name + " LR", role: "lr", color: "#2ca02c", dash: [],
                      steps: curve.map(function (p) { return p[0]; }), values: curve.map(function (p) { return p[1]; }) }];
      if (lrTable) tables.unshift({ label: "logged " + lrTable.label, role: "lr", steps: lrTable.steps, values: lrTable.values });
      lazy(holder, function () { chart(holder, tables, [], 180); });
    }
    return block;
  }

  /* Charts are drawn as they come near the viewport: a hundred at once would keep the page from opening. */
  var drawers = new Map();
  var ready = false;

  function lazy(holder, draw) { drawers.set(holder, draw); }

  function drawNow(holder) {
    var draw = drawers.get(holder);
    if (draw) { drawers.delete(holder); draw(); }
  }

  function watch() {
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { observer.unobserve(entry.target); drawNow(entry.target); }
      });
      if (!ready) {
        ready = true;
        requestAnimationFrame(function () { requestAnimationFrame(function () {
          window.__lrdiagReadyAt = performance.now(); window.__lrdiagReady = true;
        }); });
      }
    }, { rootMargin: "600px 0px" });
    drawers.forEach(function (draw, holder) { observer.observe(holder); });
  }

  function runSection(run, i) {
    var section = el("section", { class: "run", id: "run-" + i });
    var files = run.files.length;
    section.append(el("h2", { text: run.run }),
      el("div", { class: "muted", text: run.source + " · " + files + " file" + (files === 1 ? "" : "s") + " · " +
        Object.keys(run.metrics).length + " metrics" + (run.overview.downsampled ? " · curves downsampled for display (every spike kept)" : "") }));
    var holder = el("div", { class: "chart" });
    section.append(holder);
    var tables = runTables(run, curves[i] || {});
    var list = el("ul", { class: "findings" });
    section.append(list);
    if (tables.length) lazy(holder, function () { holder.plot = chart(holder, tables, run.findings); });
    else holder.append(el("p", { class: "muted", text: "no loss or learning-rate metric to plot" }));
    run.findings.forEach(function (f) { list.append(findingItem(f, holder)); });
    if (!run.findings.length) list.append(el("li", { text: "no findings" }));
    if (run.problems.length) {
      section.append(el("div", { class: "problems" }, run.problems.map(function (p) {
        return el("div", { text: "problem: " + p.file + (p.where ? ": " + p.where : "") + ": " + p.message });
      })));
    }
    if (run.notes.length) {
      section.append(el("div", { class: "notes" }, run.notes.map(function (n) { return el("div", { text: "note: " + n }); })));
    }
    var recs = data.recommendations[run.run];
    if (recs && recs.candidates.length) {
      var lr = tables.filter(function (t) { return t.role === "lr"; })[0];
      section.append(el("h3", { text: "Recommended schedules" }));
      recs.candidates.forEach(function (c) { section.append(candidateBlock(c, lr)); });
    }
    return section;
  }

  function replaySection(replays) {
    var section = el("section", { class: "replays", id: "replays" }, [
      el("h2", { text: "Replays: control against candidates" }),
      el("div", { class: "muted", text: replays.dir + " · " + replays.runs.length + " replays" })]);
    (replays.errors || []).forEach(function (e) { section.append(el("p", { class: "count-error", text: "error: " + e })); });
    var labels = [];
    replays.runs.forEach(function (r) { if (labels.indexOf(r.label) < 0) labels.push(r.label); });
    ["train_loss", "val_loss"].forEach(function (role) {
      var tables = [];
      replays.runs.forEach(function (r, i) {
        var tag = Object.keys(r.curves).filter(function (t) { return r.curves[t].role === role; })[0];
        if (!tag) return;
        var color = r.label === "control" ? "#222" : PALETTE[labels.indexOf(r.label) % PALETTE.length];
        tables.push({ label: r.run + " " + tag, role: role, color: color, dash: r.seed ? [6, 3] : undefined,
                      steps: replayCurves[i][tag][0], values: replayCurves[i][tag][1] });
      });
      if (!tables.length) return;
      var holder = el("div", { class: "chart" });
      section.append(el("h3", { text: role === "train_loss" ? "Training loss" : "Validation loss" }), holder);
      lazy(holder, function () { chart(holder, tables, [], 300); });
    });
    var rows = labels.map(function (label) {
      var mine = replays.runs.filter(function (r) { return r.label === label; });
      var codes = mine.map(function (r) { return r.findings.map(function (f) { return f.rule; }).join(" ") || "none"; });
      return el("tr", {}, [el("td", { text: label }), el("td", { class: "num", text: String(mine.length) }),
                           el("td", { text: codes.join(" | ") })]);
    });
    section.append(el("table", { class: "overview" }, [
      el("thead", {}, [el("tr", {}, [el("th", { text: "schedule" }), el("th", { text: "seeds" }), el("th", { text: "findings per seed" })])]),
      el("tbody", {}, rows)]));
    return section;
  }

  /* ---------- page ---------- */

  function build() {
    var app = document.getElementById("app");
    var totals = { error: 0, warning: 0, info: 0 };
    data.runs.forEach(function (run) { SEVERITIES.forEach(function (s) { totals[s] += run.overview.counts[s]; }); });
    document.getElementById("summary").textContent = data.runs.length + " runs · " + totals.error + " errors · " +
      totals.warning + " warnings · " + totals.info + " info · lrdiag " + data.lrdiag + " · " + data.paths.join(" ");
    var view = overview(data.runs);
    var search = el("input", { type: "search", placeholder: "filter runs by name or format" });
    var severity = el("select", {}, [el("option", { value: "all", text: "all runs" }), el("option", { value: "error", text: "with errors" }),
      el("option", { value: "warning", text: "with warnings or errors" }), el("option", { value: "clean", text: "without warnings" })]);
    var link = el("input", { type: "checkbox", id: "link-zoom" });
    link.addEventListener("change", function () { linkZoom = link.checked; });
    app.append(el("div", { class: "controls" }, [search, severity, el("label", {}, [link, " zoom all charts together"]),
      el("span", { class: "muted", text: "drag on a chart to zoom, double-click to reset" })]));
    app.append(view.table);
    data.errors.forEach(function (e) { app.append(el("p", { class: "count-error", text: "error: " + e })); });
    if (data.replays) app.append(replaySection(data.replays));
    var sections = data.runs.map(runSection);
    sections.forEach(function (s) { app.append(s); });
    var refilter = function () { applyFilter(view.rows, sections, search.value, severity.value); };
    search.addEventListener("input", refilter);
    severity.addEventListener("change", refilter);
    watch();
    var resizing = null;
    window.addEventListener("resize", function () {
      clearTimeout(resizing);
      resizing = setTimeout(function () {
        plots.forEach(function (p) { p.setSize({ width: width(p.root.parentNode), height: p.height }); });
      }, 150);
    });
  }

  build();
})();
