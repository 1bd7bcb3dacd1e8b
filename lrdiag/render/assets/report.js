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
  var SMOOTH_KEY = "lrdiag.smoothing";
  var smoothing = storedSmoothing();
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

  /* Numbers as a person writes them: 0.001, 1e-4, 2.5e-5, 10k, 1.2M; never 1.000e-4. */
  function readable(value, digits) {
    if (value === 0) return "0";
    var size = Math.abs(value);
    if (!isFinite(size)) return String(value);
    if (size >= 1e4 && size < 1e15) {
      var units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
      for (var i = 0; i < units.length; i++) {
        if (size >= units[i][0]) return String(+(value / units[i][0]).toPrecision(digits)) + units[i][1];
      }
    }
    if (size < 1e-3 || size >= 1e15) {
      var exponent = Math.floor(Math.log10(size));
      var mantissa = +(value / Math.pow(10, exponent)).toPrecision(digits);
      if (Math.abs(mantissa) >= 10) { mantissa = +(mantissa / 10).toPrecision(digits); exponent += 1; }
      return String(mantissa) + "e" + exponent;
    }
    return String(+value.toPrecision(digits));
  }

  function fmt(value) {
    if (value == null) return "–";
    if (typeof value === "string") return value;
    return readable(value, 4);
  }

  function duration(seconds) {
    if (seconds == null) return "–";
    if (Math.abs(seconds) < 120) return String(+seconds.toPrecision(3)) + "s";
    if (Math.abs(seconds) < 7200) return String(+(seconds / 60).toPrecision(3)) + "m";
    return String(+(seconds / 3600).toPrecision(3)) + "h";
  }

  /* ---------- smoothing: TensorBoard's debiased exponential moving average ---------- */

  function storedSmoothing() {
    try {  // a sandboxed frame or a strict policy may refuse storage: the default then, for this page
      var stored = parseFloat(window.localStorage.getItem(SMOOTH_KEY));
      if (stored >= 0 && stored < 1) return stored;
    } catch (e) { /* storage refused */ }
    return 0.6;
  }

  function storeSmoothing(weight) {
    try { window.localStorage.setItem(SMOOTH_KEY, String(weight)); } catch (e) { /* kept for this page only */ }
  }

  /* last = last * w + (1 - w) * v, divided by 1 - w^n (n finite points so far): the start is not pulled to 0.
     A missing or non-finite point stays a gap and leaves the average as it was. */
  function smooth(values, weight) {
    if (!weight) return values;
    var out = new Array(values.length), last = 0, count = 0;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v == null || !isFinite(v)) { out[i] = v; continue; }
      last = last * weight + (1 - weight) * v;
      count += 1;
      out[i] = last / (1 - Math.pow(weight, count));
    }
    return out;
  }

  function faint(color) {
    var hex = color.replace("#", "");
    if (hex.length !== 6) return color;
    return "rgba(" + parseInt(hex.slice(0, 2), 16) + "," + parseInt(hex.slice(2, 4), 16) + "," +
      parseInt(hex.slice(4, 6), 16) + ",0.22)";
  }

  function where(f) { return f.step_start === f.step_end ? "step " + f.step_start : "steps " + f.step_start + "–" + f.step_end; }

  function width(node) { return Math.max((node.clientWidth || 900) - 8, 300); }

  /* ---------- charts ---------- */

  function axisValues(u, splits) { return splits.map(function (v) { return v == null ? "" : readable(v, 3); }); }

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

  /* Windows are shaded under the lines; markers and best-step lines are drawn over them. An incident is drawn
     once: its headline finding as a finding is, and, when it touched several metrics, one band over its steps
     with its number, which the list under the chart explains. */
  function drawFindings(findings, scaleOf, over, incidents) {
    return function (u) {
      var ctx = u.ctx;
      ctx.save();
      ctx.beginPath(); ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height); ctx.clip();
      (incidents || []).forEach(function (inc) {
        if (inc.findings.length < 2) return;
        var rgb = SEVERITY_COLOR[inc.severity] || SEVERITY_COLOR.info;
        var x0 = u.valToPos(inc.step_start, "x", true), x1 = u.valToPos(inc.step_end, "x", true);
        if (!over) { shade(u, ctx, x0, x1, rgb, 0.12); return; }
        ctx.fillStyle = "rgb(" + rgb + ")";
        ctx.font = (11 * uPlot.pxRatio) + "px system-ui, sans-serif";
        ctx.fillText("#" + inc.id, Math.max(x0, u.bbox.left) + 3 * uPlot.pxRatio, u.bbox.top + 12 * uPlot.pxRatio);
      });
      // A headline's own window is not shaded again under its incident's band.
      var heads = incidents ? incidents.filter(function (inc) { return over || inc.findings.length < 2; })
        .map(function (inc) { return findings[inc.headline]; }) : findings;
      heads.forEach(function (f) {
        if (!f) return;
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

  var X_AXES = { step: "step", relative: "relative time", wall: "wall time" };

  /* spec: {tables: [{label, role, steps, values, color, dash}], findings, incidents, height, smooth, log, x}.
     Tables share one x axis (steps, or seconds when spec.x is "relative" or "wall"); LR has its own axis at
     the right. With spec.smooth, each loss is drawn smoothed over its raw curve, faint. spec.log: null for the
     automatic choice (log when a positive loss spans more than 30x), or true/false as the toggle set it. */
  function chart(container, spec) {
    var tables = spec.tables;
    var losses = tables.filter(function (t) { return t.role !== "lr"; });
    var lrs = tables.filter(function (t) { return t.role === "lr"; });
    var positive = losses.every(function (t) { return t.values.every(function (v) { return v == null || v > 0; }); });
    var log = losses.length > 0 && positive && (spec.log != null ? spec.log
      : logScale(losses.map(function (t) { return [t.steps, t.values]; })));
    var xName = spec.x || "step";
    var series = [{ label: X_AXES[xName], value: function (u, v) {
      if (v == null) return "–";
      if (xName === "relative") return duration(v);
      if (xName === "wall") return new Date(v * 1000).toISOString().replace("T", " ").slice(0, 19);
      return String(v);
    } }];
    var columns = [];
    var scaleOf = {};
    losses.concat(lrs).forEach(function (t, i) {
      var scale = t.role === "lr" ? "lr" : "loss";
      var color = t.color || (t.role === "lr" ? LR_COLOR : PALETTE[i % PALETTE.length]);
      var dash = t.dash || (t.role === "lr" ? [4, 3] : undefined);
      scaleOf[t.label] = scale;
      if (spec.smooth && scale === "loss" && smoothing > 0) {
        var raw = lineSeries(t.label + " (raw)", faint(color), scale, dash);
        raw.width = 1;
        raw.class = "raw";  // its legend row is hidden: the smoothed row shows the raw value beside its own
        series.push(raw);
        columns.push([t.steps, t.values]);
        var smoothed = lineSeries(t.label, color, scale, dash);
        smoothed.value = function (u, v, index, at) {
          var before = at == null ? null : u.data[index - 1][at];
          return fmt(v) + (before == null || v == null ? "" : " (raw " + fmt(before) + ")");
        };
        series.push(smoothed);
        columns.push([t.steps, smooth(t.values, smoothing)]);
      } else {
        series.push(lineSeries(t.label, color, scale, dash));
        columns.push([t.steps, t.values]);
      }
    });
    var aligned = uPlot.join(columns);
    var axes = [{ label: X_AXES[xName], values: xName === "wall" ? undefined : function (u, splits) {
      return splits.map(function (v) { return v == null ? "" : (xName === "relative" ? duration(v) : readable(v, 3)); });
    } }];
    var scales = { x: { time: xName === "wall" } };
    if (losses.length) {
      scales.loss = log ? { distr: 3, log: 10 } : {};
      axes.push({ scale: "loss", label: log ? "loss (log)" : "loss", values: axisValues, size: 60 });
    }
    if (lrs.length) {
      scales.lr = {};
      axes.push({ scale: "lr", side: 1, label: "learning rate", values: axisValues, size: 70, grid: { show: false } });
    }
    var findings = spec.findings || [];
    var opts = {
      width: width(container), height: spec.height || 280, series: series, axes: axes, scales: scales,
      cursor: { sync: { key: "lrdiag" }, drag: { x: true, y: false } },
      legend: { live: true },
      hooks: { drawAxes: [drawFindings(findings, scaleOf, false, spec.incidents)],
               draw: [drawFindings(findings, scaleOf, true, spec.incidents)],
               setScale: [function (u, key) { if (key === "x" && xName === "step") syncZoom(u); }] }
    };
    var plot = new uPlot(opts, aligned, container);
    plot.lrdiagLog = log;
    plot.lrdiagCanLog = losses.length > 0 && positive;
    if (xName === "step") plots.push(plot);
    if (linkZoom && lastZoom && xName === "step") plot.setScale("x", lastZoom);
    return plot;
  }

  /* A chart with its tools (log/linear toggle) above it, drawn when it comes near the viewport; redrawn whole
     when the smoothing or the scale changes, keeping the zoom. */
  function chartBox(spec) {
    var holder = el("div", { class: "chart" });
    var toggle = el("input", { type: "checkbox", class: "log-toggle" });
    var tools = el("div", { class: "chart-tools muted" }, [el("label", {}, [toggle, " log scale"])]);
    holder.spec = spec;
    holder.toggle = toggle;
    toggle.addEventListener("change", function () { spec.log = toggle.checked; remount(holder); });
    lazy(holder, function () { mount(holder); });
    return { box: el("div", { class: "chart-box" }, [tools, holder]), holder: holder };
  }

  function mount(holder) {
    holder.plot = chart(holder, holder.spec);
    holder.toggle.checked = holder.plot.lrdiagLog;
    holder.toggle.disabled = !holder.plot.lrdiagCanLog;
    mounted.add(holder);
  }

  function remount(holder) {
    var old = holder.plot;
    if (!old) return;
    var x = old.scales.x, zoom = { min: x.min, max: x.max };
    plots.splice(plots.indexOf(old), plots.indexOf(old) >= 0 ? 1 : 0);
    old.destroy();
    mount(holder);
    holder.plot.setScale("x", zoom);
  }

  var mounted = new Set();

  function setSmoothing(weight) {
    smoothing = weight;
    storeSmoothing(weight);
    mounted.forEach(function (holder) { if (holder.spec.smooth && holder.plot.root.isConnected) remount(holder); });
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
      var pick = el("input", { type: "checkbox", class: "compare", "data-run": String(i), title: "compare in the overlay" });
      var tr = el("tr", {}, columns.map(function (c) {
        var content = c.key === "run" ? [pick, link] : [fmt(values[c.key])];
        if (SEVERITIES.indexOf(c.key) >= 0 && values[c.key] > 0) {  // the run's incidents, under its chart
          content = [el("a", { href: "#run-" + i + "-incidents", text: fmt(values[c.key]) })];
        }
        var td = el("td", { class: c.num ? "num" : "" }, content);
        if (SEVERITIES.indexOf(c.key) >= 0 && values[c.key] > 0) td.classList.add("count-" + c.key);
        return td;
      }));
      return { tr: tr, values: values, index: i, pick: pick };
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

  function cause(f) {
    var ev = f.evidence || {};
    if (!ev.cause) return null;
    var facts = ev.cause_evidence || [];
    var fact = facts.filter(function (one) { return one.says === ev.cause; })[0] || facts[0];
    return "likely cause: " + ev.cause + (fact ? " (" + fact.fact + ")" : "");
  }

  function incidentsOf(run) {
    if (run.incidents) return run.incidents;
    return run.findings.map(function (f, i) {
      return { id: i + 1, category: f.category, severity: f.severity, step_start: f.step_start, step_end: f.step_end,
               metrics: [f.metric], headline: i, findings: [i] };
    });
  }

  /* An incident: its headline finding, the other metrics it touched, its likely cause, the others' messages. */
  function incidentItem(run, inc, holder, anchor) {
    var f = run.findings[inc.headline];
    var zoom = el("button", { class: "zoom", type: "button", text: "zoom" });
    zoom.addEventListener("click", function () {
      drawNow(holder);
      var plot = holder.plot;
      if (!plot) return;
      var span = Math.max(inc.step_end - inc.step_start, 1), pad = Math.max(span * 0.5, 5);
      plot.setScale("x", { min: inc.step_start - pad, max: inc.step_end + pad });
    });
    var others = inc.findings.filter(function (i) { return i !== inc.headline; }).map(function (i) { return run.findings[i]; });
    var item = el("li", { class: f.severity, id: anchor }, [
      el("span", { class: "badge " + f.severity, text: f.severity }),
      el("span", { class: "code", text: (others.length ? "#" + inc.id + " " : "") + f.rule + " " + f.name }), " ",
      el("span", { class: "muted", text: f.metric + " " + where(f) }), zoom,
      el("div", { text: f.message })]);
    if (others.length) {
      item.append(el("div", { class: "also", text: "also on: " + others.map(function (o) {
        return o.metric + "@" + where(o).replace(/^steps? /, "");
      }).join(", ") + " (" + inc.metrics.length + " metrics, steps " + inc.step_start + "–" + inc.step_end + ")" }));
    }
    var said = cause(f);
    if (said) item.append(el("div", { class: "cause muted", text: said }));
    if (others.length) {
      item.append(el("details", {}, [el("summary", { text: "the " + others.length + " other finding" + (others.length === 1 ? "" : "s") })]
        .concat(others.map(function (o) { return el("div", { class: "other", text: o.rule + " " + o.metric + " " + where(o) + ": " + o.message }); }))));
    }
    item.append(ruleDocs(f.rule));
    return item;
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
      var tables = [{ label: candidate.name + " LR", role: "lr", color: "#2ca02c", dash: [],
                      steps: curve.map(function (p) { return p[0]; }), values: curve.map(function (p) { return p[1]; }) }];
      if (lrTable) tables.unshift({ label: "logged " + lrTable.label, role: "lr", steps: lrTable.steps, values: lrTable.values });
      var holder = el("div", { class: "chart" });
      block.append(holder);
      lazy(holder, function () { chart(holder, { tables: tables, height: 180 }); });
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
    var tables = runTables(run, curves[i] || {});
    var incidents = incidentsOf(run);
    var holder;
    if (tables.length) {
      var made = chartBox({ tables: tables, findings: run.findings, incidents: incidents, smooth: true, log: null });
      holder = made.holder;
      section.append(made.box);
    } else {
      holder = el("div", { class: "chart" }, [el("p", { class: "muted", text: "no loss or learning-rate metric to plot" })]);
      section.append(holder);
    }
    var list = el("ul", { class: "findings", id: "run-" + i + "-incidents" });
    section.append(list);
    incidents.forEach(function (inc) { list.append(incidentItem(run, inc, holder, "run-" + i + "-incident-" + inc.id)); });
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
      var made = chartBox({ tables: tables, height: 300, smooth: true, log: null });
      section.append(el("h3", { text: role === "train_loss" ? "Training loss" : "Validation loss" }), made.box);
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

  /* ---------- overlay: chosen runs' main curve of one role on one chart ---------- */

  /* The run's wall clock at each of `steps`, interpolated between its logged (step, seconds) pairs. */
  function timesAt(clock, steps, wall) {
    var s = clock.steps, t = clock.seconds, j = 0, base = wall ? clock.start : 0;
    return steps.map(function (step) {
      while (j < s.length - 2 && s[j + 1] < step) j++;
      var span = s[j + 1] - s[j];
      var at = span > 0 ? t[j] + (t[j + 1] - t[j]) * (step - s[j]) / span : t[j];
      return base + Math.max(at, 0);
    });
  }

  function overlaySection(rows) {
    var roles = ["train_loss", "val_loss", "lr"].filter(function (role) {
      return data.runs.some(function (run) { return run.overview.primary && run.overview.primary[role]; });
    });
    var role = el("select", { class: "overlay-role" }, roles.map(function (r) { return el("option", { value: r, text: r }); }));
    var axis = el("select", { class: "overlay-x" }, Object.keys(X_AXES).map(function (x) {
      return el("option", { value: x, text: X_AXES[x] });
    }));
    var note = el("span", { class: "muted" });
    var area = el("div", { class: "overlay-chart" });
    var controls = el("div", { class: "controls hidden" }, [el("label", {}, ["metric role ", role]),
                                                             el("label", {}, ["x axis ", axis])]);
    var section = el("section", { class: "overlay", id: "overlay" }, [
      el("h2", {}, ["Compare runs ", note]), controls, area]);
    function draw() {
      var chosen = rows.filter(function (row) { return row.pick.checked; }).map(function (row) { return row.index; });
      chosen.sort(function (a, b) { return a - b; });
      var timed = chosen.every(function (i) { return data.runs[i].clock; });
      axis.querySelectorAll("option").forEach(function (option) { option.disabled = option.value !== "step" && !timed; });
      if (!timed && axis.value !== "step") axis.value = "step";
      if (area.holder && area.holder.plot) {  // the chart of the last choice goes, with its place in the page's lists
        mounted.delete(area.holder);
        if (plots.indexOf(area.holder.plot) >= 0) plots.splice(plots.indexOf(area.holder.plot), 1);
        area.holder.plot.destroy();
      }
      area.textContent = "";
      area.holder = null;
      var tables = [];
      chosen.forEach(function (i, k) {
        var run = data.runs[i], tag = run.overview.primary && run.overview.primary[role.value];
        if (!tag || !curves[i][tag]) return;
        var steps = curves[i][tag][0];
        var x = axis.value === "step" ? steps : timesAt(run.clock, steps, axis.value === "wall");
        tables.push({ label: run.run + " · " + tag, role: role.value === "lr" ? "lr" : role.value,
                      color: PALETTE[k % PALETTE.length], steps: x, values: curves[i][tag][1] });
      });
      note.textContent = chosen.length ? tables.length + " of " + chosen.length + " chosen runs have a " + role.value + " curve"
        : "tick runs in the table above to draw them on one chart";
      controls.classList.toggle("hidden", !chosen.length);
      if (!tables.length) return;
      var made = chartBox({ tables: tables, height: 320, smooth: true, log: null, x: axis.value });
      area.append(made.box);
      drawNow(made.holder);
      area.holder = made.holder;
    }
    rows.forEach(function (row) { row.pick.addEventListener("change", draw); });
    role.addEventListener("change", draw);
    axis.addEventListener("change", draw);
    draw();
    return section;
  }

  /* ---------- page ---------- */

  function build() {
    var app = document.getElementById("app");
    var totals = { error: 0, warning: 0, info: 0 }, findings = 0, incidents = 0;
    data.runs.forEach(function (run) {
      SEVERITIES.forEach(function (s) { totals[s] += run.overview.counts[s]; });
      findings += run.findings.length;
      incidents += incidentsOf(run).length;
    });
    document.getElementById("summary").textContent = data.runs.length + " runs · " + incidents + " incidents (" +
      findings + " findings): " + totals.error + " errors · " + totals.warning + " warnings · " + totals.info +
      " info · lrdiag " + data.lrdiag + " · " + data.paths.join(" ");
    var view = overview(data.runs);
    var search = el("input", { type: "search", placeholder: "filter runs by name or format" });
    var severity = el("select", {}, [el("option", { value: "all", text: "all runs" }), el("option", { value: "error", text: "with errors" }),
      el("option", { value: "warning", text: "with warnings or errors" }), el("option", { value: "clean", text: "without warnings" })]);
    var link = el("input", { type: "checkbox", id: "link-zoom" });
    link.addEventListener("change", function () { linkZoom = link.checked; });
    var slider = el("input", { type: "range", id: "smoothing", min: "0", max: "0.99", step: "0.01", value: String(smoothing) });
    var shown = el("span", { class: "smoothing-value", text: smoothing.toFixed(2) });
    slider.addEventListener("input", function () { shown.textContent = (+slider.value).toFixed(2); });
    slider.addEventListener("change", function () { setSmoothing(+slider.value); });
    app.append(el("div", { class: "controls" }, [search, severity, el("label", {}, [link, " zoom all charts together"]),
      el("label", { title: "TensorBoard's smoothing: a debiased exponential moving average; the raw curve stays faint behind" },
        ["smoothing ", slider, " ", shown]),
      el("span", { class: "muted", text: "drag on a chart to zoom, double-click to reset" })]));
    app.append(view.table);
    app.append(overlaySection(view.rows));
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
  window.__lrdiag = { smooth: smooth, readable: readable };  // for the tests in a real browser
})();
