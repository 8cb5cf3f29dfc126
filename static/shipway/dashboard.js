/* Draws a feature dashboard's charts with Chart.js (static/vendor/chartjs/chart.umd.js) from
   the JSON the page embeds as #dashboard-data. The page works without this script: the
   same figures are in its tables. Exposes the chart instances as window.shipwayCharts. */
(function () {
  "use strict";
  var PALETTE = ["#1d4ed8", "#15803d", "#7e22ce", "#0e7490", "#a16207", "#be185d", "#4b5563", "#c2410c"];

  // Picking a date in the range picker means a custom range.
  document.querySelectorAll("#dash-from, #dash-to").forEach(function (input) {
    input.addEventListener("change", function () {
      var select = document.getElementById("dash-range");
      if (select && input.value) { select.value = "custom"; }
    });
  });

  var source = document.getElementById("dashboard-data");
  if (!source || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  if (!data) { return; }

  // One colour per prompt version (stable and canary of one version share it; canary is dashed).
  var versions = [];
  data.series.forEach(function (s) { if (versions.indexOf(s.version) < 0) { versions.push(s.version); } });
  function colour(s) { return PALETTE[versions.indexOf(s.version) % PALETTE.length]; }
  document.querySelectorAll(".swatch[data-series]").forEach(function (el) {
    var s = data.series[Number(el.dataset.series)];
    if (s) { el.style.background = colour(s); }
  });

  function percent(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(2) + " %"; }
  function usd(v) { return v === null || v === undefined ? "–" : "$" + v.toFixed(v < 1 ? 4 : 2); }
  function number(v) { return v === null || v === undefined ? "–" : Math.round(v).toLocaleString("en-GB"); }
  // Axis ticks with as many decimals as the tick step needs (so 0.5 %, 1.0 %, 1.5 % never
  // collapse into "1 %, 1 %, 2 %").
  function decimals(step) { return step > 0 ? Math.max(0, Math.min(6, Math.ceil(-Math.log10(step) - 1e-9))) : 0; }
  function tick(scale, prefix, suffix) {
    return function (value, index, ticks) {
      var step = ticks.length > 1 ? Math.abs(ticks[1].value - ticks[0].value) * scale : 1;
      var v = value * scale;
      if (scale === 1 && v >= 1e6) { return prefix + (v / 1e6).toFixed(decimals(step / 1e6)) + " M" + suffix; }
      if (scale === 1 && v >= 1e4) { return prefix + (v / 1e3).toFixed(decimals(step / 1e3)) + " k" + suffix; }
      return prefix + v.toFixed(decimals(step)) + suffix;
    };
  }

  var METRICS = {
    calls: { kind: "bar", format: number, axis: tick(1, "", "") },
    error_rate: { kind: "line", format: percent, axis: tick(100, "", " %"), slo: data.slo.error_rate },
    p50_ms: { kind: "line", format: function (v) { return number(v) + " ms"; }, axis: tick(1, "", "") },
    p95_ms: { kind: "line", format: function (v) { return number(v) + " ms"; }, axis: tick(1, "", ""),
              slo: data.slo.p95_latency_ms },
    tokens: { kind: "bar", format: number, axis: tick(1, "", "") },
    cost_usd: { kind: "bar", format: usd, axis: tick(1, "$", "") },
    cache_hit_rate: { kind: "line", format: percent, axis: tick(100, "", " %") }
  };

  function datasets(metric, spec) {
    var out = data.series.map(function (s) {
      var c = colour(s);
      var canary = s.arm === "canary";
      return {
        label: s.name, data: s[metric], borderColor: c,
        backgroundColor: spec.kind === "bar" ? c + (canary ? "66" : "cc") : c,
        borderWidth: spec.kind === "bar" ? (canary ? 1 : 0) : 2, borderDash: canary ? [6, 3] : [],
        pointRadius: 0, pointHitRadius: 6, cubicInterpolationMode: "monotone", spanGaps: false,
        pointStyle: "line",
        stack: spec.kind === "bar" ? "all" : undefined
      };
    });
    if (spec.slo !== null && spec.slo !== undefined) {
      out.push({ label: "SLO", data: data.labels.map(function () { return spec.slo; }), borderColor: "#b42318",
                 borderWidth: 1.5, borderDash: [2, 3], pointRadius: 0, fill: false });
    }
    return out;
  }

  var section = document.getElementById("charts");
  if (section) { section.hidden = false; }  // hidden without JS: the tables carry the figures
  var charts = [];
  document.querySelectorAll("canvas[data-metric]").forEach(function (canvas) {
    var metric = canvas.dataset.metric;
    var spec = METRICS[metric];
    if (!spec) { return; }
    var chart = new Chart(canvas, {
      type: spec.kind,
      data: { labels: data.labels, datasets: datasets(metric, spec) },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: spec.kind === "bar", ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 8 },
               grid: { display: false } },
          y: { stacked: spec.kind === "bar", beginAtZero: true, ticks: { callback: spec.axis } }
        },
        plugins: {
          legend: { position: "bottom", labels: { boxWidth: 14, usePointStyle: spec.kind === "line" } },
          tooltip: { callbacks: { label: function (ctx) { return ctx.dataset.label + ": " + spec.format(ctx.parsed.y); } } }
        }
      }
    });
    canvas.dataset.rendered = "true";
    charts.push(chart);
  });
  window.shipwayCharts = charts;
})();
