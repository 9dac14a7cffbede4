// crux-gen dashboard: reload the page's data every <meta name="crux-refresh"> seconds.
// The reload is a GET of the same address (its query string keeps the filter and
// the page). It waits while a form is being edited, and keeps the open <details>
// and the scroll position across the reload. No framework, no network but this host.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="crux-refresh"]');
  var seconds = meta ? parseFloat(meta.getAttribute("content")) : 0;
  var live = document.getElementById("live");
  var saveKey = "crux-ui:" + location.pathname + location.search;

  // Restore what the last reload saved.
  try {
    var saved = JSON.parse(sessionStorage.getItem(saveKey) || "null");
    sessionStorage.removeItem(saveKey);
    if (saved) {
      document.querySelectorAll("details[data-key]").forEach(function (d) {
        if (saved.open.indexOf(d.getAttribute("data-key")) >= 0) { d.open = true; }
      });
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

  function tick() {
    if (editing()) {
      if (live) { live.textContent = "refresh paused while you edit"; }
      window.setTimeout(tick, seconds * 1000);
      return;
    }
    if (document.hidden) { window.setTimeout(tick, seconds * 1000); return; }
    try {
      var open = [];
      document.querySelectorAll("details[open][data-key]").forEach(function (d) {
        open.push(d.getAttribute("data-key"));
      });
      sessionStorage.setItem(
        "crux-ui:" + location.pathname + location.search,
        JSON.stringify({ open: open, x: window.scrollX, y: window.scrollY })
      );
    } catch (e) { /* storage off: reload anyway */ }
    location.replace(location.href);
  }
  window.setTimeout(tick, seconds * 1000);
})();
