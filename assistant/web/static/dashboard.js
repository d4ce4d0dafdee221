/* The dashboard page: fetches /dashboard/data?hours=N and draws the panels with MiniCharts.
   Timestamps arrive in UTC (ISO text, epoch seconds) and are shown in the browser's zone. */
(function () {
  "use strict";

  var t = window.I18N.t;
  var root = document.getElementById("dashboard");
  var rangeSelect = document.getElementById("range");
  var refreshButton = document.getElementById("refresh");
  var statusEl = document.getElementById("dash-status");
  var tbody = document.querySelector("#last-table tbody");
  var REFRESH_MS = 60000;
  var COLORS = {
    primary: "#c2410c", secondary: "#1d4ed8", tertiary: "#0f766e", quaternary: "#7c3aed",
    RELEVANT: "#15803d", PARTLY_RELEVANT: "#ca8a04", NON_RELEVANT: "#b91c1c", unjudged: "#94a3b8",
    llm: "#1d4ed8", extractive: "#c2410c", none: "#94a3b8"
  };
  var lastData = null;
  var timer = null;
  var inflight = null;

  try {
    var saved = window.localStorage.getItem("arsonor.dashboard.hours");
    if (saved && rangeSelect.querySelector('option[value="' + saved + '"]')) rangeSelect.value = saved;
  } catch (e) { /* ignore */ }

  function locale() { return window.I18N.locale(); }

  function timeFormat(hours) {
    return hours <= 24
      ? new Intl.DateTimeFormat(locale(), { hour: "2-digit", minute: "2-digit" })
      : new Intl.DateTimeFormat(locale(), { day: "2-digit", month: "2-digit", hour: "2-digit", minute: "2-digit" });
  }

  var fullTime = function () {
    return new Intl.DateTimeFormat(locale(), { day: "2-digit", month: "2-digit", year: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  };

  function num(v, digits) {
    return Number(v).toLocaleString(locale(), { maximumFractionDigits: digits === undefined ? 0 : digits });
  }
  function pct(rate) { return rate === null || rate === undefined ? "–" : num(rate * 100, 1) + " %"; }
  function secs(v) {
    if (v === null || v === undefined) return "–";
    return v < 1 ? num(v * 1000, 0) + " ms" : num(v, 2) + " s";
  }
  function usd(v) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "$0";
    return "$" + Number(v).toLocaleString("en-US", { maximumSignificantDigits: 3 });
  }
  function compact(v) {
    return Number(v).toLocaleString(locale(), { notation: "compact", maximumFractionDigits: Math.abs(v) < 10 ? 2 : 1 });
  }

  function setText(id, value) { document.getElementById(id).textContent = value; }

  function column(series, key) { return series.map(function (p) { return p[key]; }); }
  // A sum per bucket, null where the bucket has no exchange (a gap, not a fall to zero).
  function sums(series, key) { return series.map(function (p) { return p.exchanges ? p[key] : null; }); }

  // The content-gaps section's own labels (issue 8), in both languages of the page.
  var GAP_LABELS = {
    fr: { title: "Questions que le blog ne traite pas", hint: "Questions déclinées ou notées 👎, regroupées par sens : la feuille de route éditoriale.",
          question: "Question (la plus représentative)", count: "Nombre", languages: "Langues", last: "Dernière fois",
          none: "Aucune : toutes les questions de la période étaient couvertes.", declined: "déclinées", down: "👎" },
    en: { title: "Questions the blog doesn't cover", hint: "Declined or thumbs-down questions, grouped by meaning: the editorial roadmap.",
          question: "Question (most central)", count: "Count", languages: "Languages", last: "Last seen",
          none: "None: every question of the period was covered.", declined: "declined", down: "👎" }
  };

  function renderGaps(groups, ft) {
    var L = GAP_LABELS[window.I18N.lang()] || GAP_LABELS.fr;
    setText("gaps-title", L.title);
    setText("gaps-hint", L.hint);
    setText("gaps-col-question", L.question);
    setText("gaps-col-count", L.count);
    setText("gaps-col-languages", L.languages);
    setText("gaps-col-last", L.last);
    var body = document.querySelector("#gaps-table tbody");
    body.replaceChildren();
    if (!groups.length) {
      var tr0 = document.createElement("tr");
      var td0 = document.createElement("td");
      td0.colSpan = 4;
      td0.className = "empty";
      td0.textContent = L.none;
      tr0.appendChild(td0);
      body.appendChild(tr0);
      return;
    }
    groups.forEach(function (g) {
      var tr = document.createElement("tr");
      var q = document.createElement("td");
      q.className = "c-question";
      var div = document.createElement("div");
      div.className = "clamp";
      div.textContent = g.question;
      q.title = (g.examples || []).join("\n");
      q.appendChild(div);
      tr.appendChild(q);
      var count = document.createElement("td");
      count.className = "c-num";
      count.textContent = num(g.count) + " (" + num(g.not_covered) + " " + L.declined + ", " + num(g.thumbs_down) + " " + L.down + ")";
      tr.appendChild(count);
      var langs = document.createElement("td");
      langs.className = "c-mode";
      langs.textContent = Object.keys(g.languages).map(function (k) { return k + " " + g.languages[k]; }).join(", ");
      tr.appendChild(langs);
      var last = document.createElement("td");
      last.className = "c-time";
      last.textContent = ft.format(new Date(g.last_seen));
      last.title = g.first_seen + " → " + g.last_seen;
      tr.appendChild(last);
      body.appendChild(tr);
    });
  }

  function render(data) {
    lastData = data;
    var hours = data.hours || Number(rangeSelect.value);
    var tf = timeFormat(hours);
    var times = column(data.series, "t");

    // tiles
    setText("tile-exchanges", num(data.totals.exchanges));
    setText("tile-conversations", num(data.totals.conversations) + " " + t("dash.conversations"));
    setText("tile-pos", num(data.feedback.positive));
    setText("tile-neg", num(data.feedback.negative));
    setText("tile-feedback-rate", pct(data.feedback_rate.rate));
    setText("tile-feedback-detail", num(data.feedback_rate.rated_exchanges) + " / " + num(data.feedback_rate.exchanges) + " " + t("dash.feedback_detail"));
    setText("tile-error-rate", pct(data.error_rate.rate));
    setText("tile-error-detail", num(data.error_rate.errors) + " " + t(data.error_rate.errors === 1 ? "dash.error" : "dash.errors"));
    setText("tile-cost", usd(data.cost.total));
    setText("tile-cost-detail", num(data.cost.unknown_cost_exchanges) + " " + t("dash.unknown_cost"));

    // categorical panels
    MiniCharts.bars(document.getElementById("chart-relevance"), {
      title: t("dash.relevance"), empty: t("dash.none"),
      items: ["RELEVANT", "PARTLY_RELEVANT", "NON_RELEVANT", "unjudged"].map(function (k) {
        return { label: t("rel." + k), value: data.relevance[k] || 0, color: COLORS[k] };
      })
    });
    MiniCharts.bars(document.getElementById("chart-modes"), {
      title: t("dash.modes"), empty: t("dash.none"),
      items: Object.keys(data.answer_modes).map(function (k) {
        var key = "mode." + k;
        return { label: t(key) === key ? k : t(key), value: data.answer_modes[k], color: COLORS[k] || COLORS.quaternary };
      })
    });
    var palette = [COLORS.secondary, COLORS.primary, COLORS.tertiary, COLORS.quaternary, "#be185d", "#4d7c0f"];
    MiniCharts.bars(document.getElementById("chart-models"), {
      title: t("dash.models"), empty: t("dash.none"),
      items: data.models.map(function (m, i) {
        return { label: m.model === "none" ? t("dash.no_model") : m.model, value: m.exchanges, color: palette[i % palette.length] };
      })
    });

    // time series
    MiniCharts.line(document.getElementById("chart-response"), {
      title: t("dash.response_time"), times: times, timeFormat: tf, format: secs, empty: t("dash.none"),
      series: [
        { label: t("dash.avg"), color: COLORS.secondary, values: column(data.series, "response_time_avg") },
        { label: t("dash.p95"), color: COLORS.primary, values: column(data.series, "response_time_p95"), dashed: true }
      ]
    });
    MiniCharts.line(document.getElementById("chart-retrieval"), {
      title: t("dash.retrieval_time"), times: times, timeFormat: tf, format: secs, empty: t("dash.none"),
      series: [
        { label: t("dash.retrieval_avg"), color: COLORS.tertiary, values: column(data.series, "retrieval_time_avg") },
        { label: t("dash.retrieval_p95"), color: COLORS.tertiary, values: column(data.series, "retrieval_time_p95"), dashed: true },
        { label: t("dash.llm_avg"), color: COLORS.quaternary, values: column(data.series, "llm_time_avg") }
      ]
    });
    MiniCharts.line(document.getElementById("chart-errors"), {
      title: t("dash.error_rate_time"), times: times, timeFormat: tf, format: pct, empty: t("dash.no_errors"),
      series: [
        { label: t("dash.error_rate_series"), color: COLORS.NON_RELEVANT, values: column(data.series, "error_rate"), showZero: true }
      ]
    });

    // errors by status
    var etbody = document.querySelector("#errors-table tbody");
    var ftime = fullTime();
    etbody.replaceChildren();
    if (!data.errors_by_status.length) {
      var er0 = document.createElement("tr");
      var ed0 = document.createElement("td");
      ed0.colSpan = 4;
      ed0.className = "empty";
      ed0.textContent = t("dash.no_errors");
      er0.appendChild(ed0);
      etbody.appendChild(er0);
    }
    data.errors_by_status.forEach(function (e) {
      var tr = document.createElement("tr");
      [[e.status, "c-mode"], [num(e.exchanges), "c-num"], [ftime.format(new Date(e.last_seen)), "c-time"],
       [e.last_error || "–", "c-answer"]].forEach(function (pair) {
        var td = document.createElement("td");
        td.className = pair[1];
        var div = document.createElement("div");
        div.className = pair[1] === "c-answer" ? "clamp" : "";
        div.textContent = pair[0];
        td.appendChild(div);
        tr.appendChild(td);
      });
      etbody.appendChild(tr);
    });
    MiniCharts.line(document.getElementById("chart-cost"), {
      title: t("dash.cost"), times: times, timeFormat: tf, format: usd, empty: t("dash.none"),
      series: [
        { label: t("dash.answer_cost"), color: COLORS.primary, values: column(data.series, "cost") },
        { label: t("dash.judge_cost"), color: COLORS.quaternary, values: column(data.series, "judge_cost"), dashed: true }
      ]
    });
    MiniCharts.line(document.getElementById("chart-tokens"), {
      title: t("dash.tokens"), times: times, timeFormat: tf, format: compact, empty: t("dash.none"),
      series: [
        { label: t("dash.prompt"), color: COLORS.secondary, values: sums(data.series, "prompt_tokens") },
        { label: t("dash.completion"), color: COLORS.primary, values: sums(data.series, "completion_tokens") },
        { label: t("dash.judge_tokens"), color: COLORS.quaternary, values: sums(data.series, "judge_tokens"), dashed: true }
      ]
    });

    // last conversations
    var ft = fullTime();
    tbody.replaceChildren();
    if (!data.last_conversations.length) {
      var tr0 = document.createElement("tr");
      var td0 = document.createElement("td");
      td0.colSpan = 6;
      td0.className = "empty";
      td0.textContent = t("dash.none");
      tr0.appendChild(td0);
      tbody.appendChild(tr0);
    }
    data.last_conversations.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.dataset.conversationId = row.conversation_id;
      if (row.status && row.status !== "ok") tr.className = "row-error";
      function cell(content, cls) {
        var td = document.createElement("td");
        if (cls) td.className = cls;
        if (cls === "c-answer" || cls === "c-question") {
          var div = document.createElement("div");
          div.className = "clamp";
          div.textContent = content;
          td.appendChild(div);
        } else {
          td.textContent = content;
        }
        tr.appendChild(td);
        return td;
      }
      var when = cell(ft.format(new Date(row.time)), "c-time");
      when.title = row.time;
      cell(row.question, "c-question");
      var answer = cell(row.answer || (row.status !== "ok" ? t("status.error") + " : " + row.status : ""), "c-answer");
      answer.title = row.answer || "";
      var rel = cell(row.relevance ? t("rel." + row.relevance) : "–", "c-rel");
      if (row.relevance) rel.dataset.relevance = row.relevance;
      var modeKey = "mode." + (row.mode || "none");
      cell((t(modeKey) === modeKey ? row.mode : t(modeKey)) + (row.mode === "llm" && row.model ? " · " + row.model : ""), "c-mode");
      cell(secs(row.response_time), "c-num");
      tbody.appendChild(tr);
    });

    renderGaps(data.content_gaps || [], ft);

    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local";
    setText("tz-note", t("dash.tz") + " " + zone + ".");
    statusEl.textContent = t("dash.updated") + " " + new Intl.DateTimeFormat(locale(), { hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(new Date());
    statusEl.classList.remove("failed");
    root.dataset.loaded = "true";
  }

  function load() {
    var hours = rangeSelect.value;
    if (inflight && inflight.abort) inflight.abort();
    inflight = window.AbortController ? new AbortController() : null;
    statusEl.textContent = t("dash.loading");
    return fetch(root.dataset.url + "?hours=" + encodeURIComponent(hours), {
      headers: { "Accept": "application/json" }, signal: inflight ? inflight.signal : undefined
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) throw new Error(body && body.error ? body.error : "HTTP " + response.status);
        render(body);
      });
    }).catch(function (err) {
      if (err && err.name === "AbortError") return;
      statusEl.textContent = t("dash.failed") + " : " + (err && err.message ? err.message : "");
      statusEl.classList.add("failed");
    });
  }

  function schedule() {
    if (timer) clearInterval(timer);
    timer = setInterval(function () { if (!document.hidden) load(); }, REFRESH_MS);
  }

  rangeSelect.addEventListener("change", function () {
    try { window.localStorage.setItem("arsonor.dashboard.hours", rangeSelect.value); } catch (e) { /* ignore */ }
    load();
    schedule();
  });
  refreshButton.addEventListener("click", load);
  window.I18N.onChange(function () { if (lastData) render(lastData); });
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { if (lastData) render(lastData); }, 150);
  });

  load();
  schedule();
})();
