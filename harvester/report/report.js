// Builds the report page from the JSON data inlined beside this script, with uPlot.
// Every chart is drawn when the page opens; window.reportCharts lists them for tests.
(function () {
  "use strict";
  var page = JSON.parse(document.getElementById("report-data").textContent);
  var root = document.getElementById("report");
  var COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"];
  window.reportCharts = [];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    (children || []).forEach(function (c) {
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }
  function num(v, digits) {
    if (v === null || v === undefined) return "—";
    var d = digits === undefined ? (Math.abs(v) >= 100 ? 0 : 2) : digits;
    return Number(v).toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: 0 });
  }
  function pct(v) { return v === null || v === undefined ? "—" : num(v * 100, 2) + " %"; }
  function when(s) { return s ? s.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "unknown"; }
  function table(cls, head, rows) {
    var thead = el("thead", {}, [el("tr", {}, head.map(function (h) {
      return el("th", h.num ? { "class": "num" } : {}, [h.text || h]);
    }))]);
    return el("table", { "class": cls }, [thead, el("tbody", {}, rows)]);
  }
  function row(cells, cls) {
    return el("tr", cls ? { "class": cls } : {}, cells.map(function (c) {
      return el("td", c.cls ? { "class": c.cls } : {}, [String(c.text !== undefined ? c.text : c)]);
    }));
  }

  function chart(parent, spec) {
    var approx = spec.estimated && spec.estimated.length ? (spec.estimated.length === spec.x.length ? " ≈ estimate" : " (≈ estimated for some runs)") : "";
    var box = el("div", { "class": "chart", "id": "chart-" + spec.id, "data-chart": spec.id },
      [el("h3", {}, [spec.title + " (" + spec.unit + ")" + approx])]);
    if (approx) box.appendChild(el("p", { "class": "muted estimate" }, ["≈ " + spec.estimate + " (runs " + spec.estimated.join(", ") + ")."]));
    parent.appendChild(box);
    var series = [{}];
    spec.series.forEach(function (s, i) {
      if (s.marker) {
        series.push({ label: s.label, stroke: "#b00020", width: 0, paths: function () { return null; },
          points: { show: true, size: 12, stroke: "#b00020", fill: "#b00020" } });
      } else {
        series.push({ label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5,
          spanGaps: true, points: { show: spec.x.length < 60 } });
      }
    });
    var record = { id: spec.id, title: spec.title, unit: spec.unit, labels: spec.labels, drawn: 0, plot: null };
    var opts = {
      width: Math.max(600, parent.clientWidth - 8), height: 240, series: series,
      scales: { x: { time: spec.time !== false } },
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      axes: [spec.time === false ? { values: function (u, vals) {
        return vals.map(function (v) { return Number.isInteger(v) && spec.labels[v] ? spec.labels[v] : ""; });
      } } : {}, { size: 70, values: function (u, vals) { return vals.map(function (v) { return num(v); }); } }],
      legend: { live: true },
      hooks: { draw: [function () { record.drawn += 1; }] },
    };
    var data = [spec.x].concat(spec.series.map(function (s) { return s.values; }));
    record.plot = new uPlot(opts, data, box);
    window.reportCharts.push(record);
  }

  function facts(h) {
    var items = [
      ["run", h.run], ["test", h.test === undefined ? "unknown" : (h.test_name ? h.test_name + " (" + h.test + ")" : h.test)],
      ["project", h.project === null || h.project === undefined ? "unknown" : h.project],
      ["status", h.status || "unknown"], ["created", when(h.created)], ["result", h.result || "unknown"],
      ["started", when(h.started)], ["requests (http_reqs)", (h.estimated || {}).requests ? "≈ " + num(h.http_reqs, 0) + " (estimate)" : num(h.http_reqs, 0)],
      ["ended", when(h.ended)], ["iterations", num(h.iterations, 0)],
    ];
    var f = h.figures || {}, est = h.estimated || {};
    function figure(key, text) { return f[key] === null || f[key] === undefined ? "—" : (est[key] ? "≈ " + text + " (estimate)" : text); }
    items.push(["http_req_duration mean", figure("mean", num(f.mean) + " ms")], ["http_req_duration p95", figure("p95", num(f.p95) + " ms")],
      ["failed requests", figure("error_rate", pct(f.error_rate))], ["checks passed", figure("checks", pct(f.checks))]);
    var dl = el("dl", { "class": "facts" });
    items.forEach(function (it) { dl.appendChild(el("dt", {}, [it[0]])); dl.appendChild(el("dd", {}, [String(it[1])])); });
    return dl;
  }
  function estimates(h) {
    var est = h.estimated || {}, names = { mean: "mean", p95: "p95", error_rate: "failed requests", requests: "requests", checks: "checks passed" };
    return Object.keys(est).map(function (k) { return "≈ " + names[k] + ": " + est[k] + "."; });
  }

  function verdict(t) {
    if (t.crossed === null || t.crossed === undefined) return { text: "? not evaluated: " + (t.reason || "no value"), cls: "verdict unknown" };
    return { text: t.crossed ? "✗ crossed" : "✓ passed", cls: "verdict " + (t.crossed ? "crossed" : "passed") };
  }
  function runSection(run) {
    var sec = el("section", { "class": "run", "id": "run-" + run.run_id }, [el("h2", {}, ["Run " + run.run_id])]);
    sec.appendChild(facts(run.header));
    run.unknown.forEach(function (u) { sec.appendChild(el("p", { "class": "note" }, ["Not in the archive: " + u])); });
    var approx = estimates(run.header);
    if (approx.length) sec.appendChild(el("p", { "class": "note estimate" }, ["Estimates (the archive has no exact figure): " + approx.join(" ")]));
    if (run.header.complete === false) sec.appendChild(el("p", { "class": "note" }, ["k6 Cloud could not process this run fully: figures may be incomplete."]));
    sec.appendChild(el("h3", {}, ["Thresholds"]));
    if (run.thresholds.length) {
      sec.appendChild(table("thresholds", ["metric", "expression", { text: "value", num: true }, "verdict"],
        run.thresholds.map(function (t) {
          return row([t.metric, t.expression, { text: num(t.value), cls: "num" },
            verdict(t)], t.crossed ? "crossed" : (t.crossed === false ? "passed" : "unknown"));
        })));
    } else sec.appendChild(el("p", { "class": "muted" }, ["No thresholds archived."]));
    var charts = el("div", { "class": "charts" });
    sec.appendChild(el("h3", {}, ["Over time"]));
    sec.appendChild(charts);
    if (run.empty_charts.length) sec.appendChild(el("p", { "class": "muted" }, ["Nothing archived for: " + run.empty_charts.join(", ") + "."]));
    sec.appendChild(el("h3", {}, ["Checks"]));
    if (run.checks.length) {
      sec.appendChild(table("checks", ["check", "group", { text: "passes", num: true }, { text: "fails", num: true }, { text: "passed", num: true }],
        run.checks.map(function (c) {
          return row([c.check, c.group || "—", { text: num(c.passes, 0), cls: "num" }, { text: num(c.fails, 0), cls: "num" }, { text: pct(c.rate), cls: "num" }],
            c.fails ? "crossed" : "");
        })));
      if (run.checks.some(function (c) { return c.passes === null; }))
        sec.appendChild(el("p", { "class": "muted" }, ["Passes and fails need the sum and count series: harvest with --method default --method sum --method count."]));
    } else sec.appendChild(el("p", { "class": "muted" }, ["No checks archived."]));
    var urls = run.urls;
    sec.appendChild(el("h3", {}, ["Slowest URLs by http_req_duration " + urls.rank + " (mean over the run, ms; " + urls.rows.length + " of " + urls.of + ")"]));
    if (urls.rows.length) {
      sec.appendChild(table("urls", ["url", "method", "status", { text: "requests", num: true }].concat(urls.methods.map(function (m) { return { text: m, num: true }; })),
        urls.rows.map(function (u) {
          return row([{ text: u.url, cls: "url" }, u.method, u.status, { text: num(u.requests, 0), cls: "num" }]
            .concat(urls.methods.map(function (m) { return { text: num(u.values[m]), cls: "num" }; })));
        })));
    } else sec.appendChild(el("p", { "class": "muted" }, ["No http_req_duration series archived."]));
    root.appendChild(sec);
    run.charts.forEach(function (c) { chart(charts, c); });
  }

  function trendSection(t) {
    var name = t.test === null ? "test unknown (runs without a run record)" : "test " + (t.test_name ? t.test_name + " (" + t.test + ")" : t.test);
    var sec = el("section", { "class": "trend", "id": "trend-" + (t.test === null ? "unknown" : t.test) }, [el("h2", {}, ["Trends: " + name + ", " + t.runs.length + " runs"])]);
    if (!t.dated) sec.appendChild(el("p", { "class": "note" }, ["Run dates unknown (no run records): runs are in run id order."]));
    var charts = el("div", { "class": "charts" });
    sec.appendChild(charts);
    root.appendChild(sec);
    t.charts.forEach(function (c) { chart(charts, c); });
  }

  root.textContent = "";
  root.appendChild(el("h1", {}, [page.title]));
  root.appendChild(el("p", { "class": "muted" }, ["Report made " + when(page.generated) + " from an archive of the k6 Cloud API."]));
  if (page.trends.length) {
    root.appendChild(el("h2", {}, ["Regressions: worse than the median of the previous " + page.baseline + " runs by more than " + num(page.margin * 100, 1) + " %"]));
    if (page.regressions.length) {
      root.appendChild(table("regressions", ["run", "date", "trend", { text: "value", num: true }, { text: "median before", num: true }, { text: "change", num: true }],
        page.regressions.map(function (r) {
          return row([r.run, when(r.created), r.title + " (" + r.unit + ")", { text: (r.estimated ? "≈ " : "") + num(r.value), cls: "num" }, { text: num(r.median), cls: "num" },
            { text: r.change === null ? "from 0" : (r.change > 0 ? "+" : "") + num(r.change * 100, 1) + " %", cls: "num" }], "crossed");
        })));
    } else root.appendChild(el("p", {}, ["✓ No run regressed."]));
  }
  page.trends.forEach(trendSection);
  page.runs.forEach(runSection);
  window.reportReady = true;
})();
