// crux-gen dashboard: refresh the page's data every <meta name="crux-refresh"> seconds.
// The flows list reloads (a GET of the same address: its query string keeps the
// filter and the page). A flow page asks only for what changed: ?tail=P&start=S
// answers its head and foot and the records from position P on, which replace the
// shown ones from P; the bars are placed again along the new span. It waits while a
// form is being edited, and keeps the open <details> and the scroll position.
// No framework, no network but this host.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="crux-refresh"]');
  var seconds = meta ? parseFloat(meta.getAttribute("content")) : 0;
  var live = document.getElementById("live");
  var saveKey = "crux-ui:" + location.pathname + location.search;
  var TRACK = 1000, MIN_BAR = 5;

  function openKeys() {
    var open = [];
    document.querySelectorAll("details[open][data-key]").forEach(function (d) {
      open.push(d.getAttribute("data-key"));
    });
    return open;
  }

  function reopen(root, open) {
    root.querySelectorAll("details[data-key]").forEach(function (d) {
      if (open.indexOf(d.getAttribute("data-key")) >= 0) { d.open = true; }
    });
  }

  // Restore what the last reload saved.
  try {
    var saved = JSON.parse(sessionStorage.getItem(saveKey) || "null");
    sessionStorage.removeItem(saveKey);
    if (saved) {
      reopen(document, saved.open);
      window.scrollTo(saved.x, saved.y);
    }
  } catch (e) { /* storage off: nothing to restore */ }

  // A notice of a finished action (?done=...) shows once, not on every reload.
  if (window.URL && window.history && history.replaceState) {
    var url = new URL(location.href);
    if (url.searchParams.has("done")) {
      url.searchParams.delete("done");
      history.replaceState(null, "", url.toString());
    }
  }

  if (!(seconds > 0)) { return; }

  var edited = false;
  document.addEventListener("input", function () { edited = true; });
  document.addEventListener("change", function () { edited = true; });
  document.addEventListener("submit", function () { edited = true; });

  function editing() {
    var el = document.activeElement;
    return edited || !!(el && /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(el.tagName));
  }

  function reload(href) {
    try {
      sessionStorage.setItem(
        "crux-ui:" + location.pathname + location.search,
        JSON.stringify({ open: openKeys(), x: window.scrollX, y: window.scrollY })
      );
    } catch (e) { /* storage off: reload anyway */ }
    if (href) { location.replace(href); } else { location.replace(location.href); }
  }

  // -- a flow page: only what changed ---------------------------------------------------

  var state = document.getElementById("history-state");
  var FINISHED = ["completed", "failed", "cancelled", "expired"];

  function dropFrom(container, selector, from) {
    container.querySelectorAll(selector).forEach(function (el) {
      if (parseInt(el.getAttribute("data-position"), 10) >= from) { el.remove(); }
    });
  }

  function placeBars(t0, t1) {
    var scale = t1 > t0 ? TRACK / (t1 - t0) : 0;
    document.querySelectorAll("#timeline-rows rect.bar").forEach(function (bar) {
      var start = parseFloat(bar.getAttribute("data-start"));
      var end = parseFloat(bar.getAttribute("data-end"));
      var x = Math.min((start - t0) * scale, TRACK - MIN_BAR);
      var width = Math.min(Math.max((end - start) * scale, MIN_BAR), TRACK - x);
      bar.setAttribute("x", x.toFixed(2));
      bar.setAttribute("width", width.toFixed(2));
    });
  }

  function apply(data) {
    var before = state.getAttribute("data-status");
    var wasFinished = FINISHED.indexOf(before) >= 0;
    if (data.reload || String(data.run) !== state.getAttribute("data-run") ||
        (wasFinished && data.status !== before)) {
      // a new run, a retried flow (its records rewritten), or too much to add
      reload(state.getAttribute("data-flow-url"));
      return;
    }
    var open = openKeys();
    var parts = { "flow-head": data.head, "flow-foot": data.foot, "timeline-span": data.span };
    Object.keys(parts).forEach(function (id) {
      var el = document.getElementById(id);
      if (el) { el.innerHTML = parts[id]; reopen(el, open); }
    });
    if (state.getAttribute("data-tail") === "1") {
      var rows = document.getElementById("timeline-rows");
      var items = document.getElementById("history-items");
      var from = data.from;
      dropFrom(rows, ".tl-row", from);
      dropFrom(items, "li[data-position]", from);
      var empty = rows.querySelector(".tl-empty");
      if (empty && data.rows) { empty.remove(); }
      rows.insertAdjacentHTML("beforeend", data.rows);
      items.insertAdjacentHTML("beforeend", data.items);
      reopen(items, open);
      rows.setAttribute("data-t0", data.t0);
      rows.setAttribute("data-t1", data.t1);
      placeBars(data.t0, data.t1);
      state.setAttribute("data-from", data.next);
      state.setAttribute("data-count", data.count);
      var count = document.getElementById("history-count");
      if (count) { count.textContent = data.shown; }
    }
    state.setAttribute("data-status", data.status);
  }

  function refreshFlow(done) {
    var query = "?tail=" + encodeURIComponent(state.getAttribute("data-from")) +
      "&start=" + encodeURIComponent(state.getAttribute("data-start")) +
      (state.getAttribute("data-tail") === "1" ? "" : "&head=1");
    fetch(state.getAttribute("data-flow-url") + query, {
      credentials: "same-origin", headers: { "Accept": "application/json" }
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    }).then(function (data) {
      apply(data);
      if (live) { live.textContent = "refreshes every " + seconds + "s"; }
    }).catch(function () {
      if (live) { live.textContent = "refresh failed; retrying"; }
    }).then(done);
  }

  function tick() {
    if (editing()) {
      if (live) { live.textContent = "refresh paused while you edit"; }
      window.setTimeout(tick, seconds * 1000);
      return;
    }
    if (document.hidden) { window.setTimeout(tick, seconds * 1000); return; }
    if (state && window.fetch) {
      refreshFlow(function () { window.setTimeout(tick, seconds * 1000); });
      return;
    }
    reload();
  }
  window.setTimeout(tick, seconds * 1000);
})();
