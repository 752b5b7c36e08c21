"""The dashboard's only script, served from /dashboard.js (never inline, so
the pages' Content-Security-Policy can forbid inline scripts outright).

Every few seconds it asks /dashboard/live for the report, already rendered
by `saleflow.views.page` and escaped on the server, and swaps it and the overdue
list into the open page: the counts change without a reload.  No library,
no CDN, no font: it works offline.
"""

SCRIPT = """\
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var flow = live.getAttribute("data-flow") || "";
  var every = parseInt(live.getAttribute("data-every"), 10) || 3000;
  var state = document.getElementById("live-state");
  function refresh() {
    fetch("/dashboard/live?flow=" + encodeURIComponent(flow), {credentials: "same-origin", cache: "no-store"})
      .then(function (answer) {
        if (answer.status === 401) { window.location.assign("/"); throw new Error("logged out"); }
        if (!answer.ok) { throw new Error("status " + answer.status); }
        return answer.json();
      })
      .then(function (data) {
        document.getElementById("report").innerHTML = data.html;
        document.getElementById("overdue").innerHTML = data.overdue_html;
        state.textContent = "live, updated " + new Date().toLocaleTimeString();
        state.setAttribute("data-generated", data.generated_at);
        state.className = "live";
      })
      .catch(function () {
        state.textContent = "cannot reach the server; retrying";
        state.className = "late";
      })
      .then(function () { window.setTimeout(refresh, every); });
  }
  window.setTimeout(refresh, every);
})();
"""
