// Live updates for the console (progressive enhancement: every page works without this).
// The server sends a "pulse" over server-sent events whenever the views move or the unread
// count changes; the page then refetches itself and swaps its [data-live] regions and the
// unread badge. A region the user is typing in is left alone until focus leaves it.
(function () {
  "use strict";
  var body = document.body;
  var url = body.getAttribute("data-events");
  if (!url || !window.EventSource || !window.fetch || !window.DOMParser) { return; }
  var position = Number(body.getAttribute("data-position") || "0");
  var pending = false;
  var inflight = false;

  function busy(region) {
    var active = document.activeElement;
    return !!active && region.contains(active) &&
      (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.tagName === "SELECT");
  }

  function setUnread(count) {
    var badge = document.getElementById("unread");
    if (!badge) { return; }
    badge.textContent = String(count);
    badge.classList.toggle("empty", count === 0);
    var label = badge.getAttribute("aria-label") || "";
    badge.setAttribute("aria-label", label.replace(/^\d+/, String(count)));
  }

  function refresh() {
    if (inflight) { pending = true; return; }
    inflight = true;
    pending = false;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Console-Live": "1" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var deferred = false;
        document.querySelectorAll("[data-live]").forEach(function (region) {
          var next = region.id && fresh.getElementById(region.id);
          if (!next) { return; }
          if (busy(region)) { deferred = true; return; }
          if (region.innerHTML !== next.innerHTML) { region.innerHTML = next.innerHTML; }
        });
        var badge = fresh.getElementById("unread");
        if (badge) { setUnread(Number(badge.textContent)); }
        if (deferred) { pending = true; }
      })
      .catch(function () { pending = true; })
      .then(function () {
        inflight = false;
        body.setAttribute("data-live-refreshed", String(position));
        if (pending && !document.querySelector("[data-live] :focus")) { refresh(); }
      });
  }

  document.addEventListener("focusout", function () {
    window.setTimeout(function () { if (pending) { refresh(); } }, 0);
  });

  var failures = 0;
  function connect() {
    var source = new EventSource(url);
    source.addEventListener("pulse", function (event) {
      failures = 0;
      document.getElementById("live-off").hidden = true;
      var data = JSON.parse(event.data);
      setUnread(data.unread);
      if (data.position !== position) {
        position = data.position;
        refresh();
      }
    });
    source.onerror = function () {
      failures += 1;
      if (failures > 20) { document.getElementById("live-off").hidden = false; }
    };
  }
  connect();
})();
