// kaiten-sync admin page: the live progress of the running sync, redrawn from status.json every
// second while a run is going (every 5 seconds when idle). The rest of the page is reloaded every
// 30 seconds while no run is going and the quick actions' fields are untouched (what was a
// <meta refresh>, which reloaded the page under someone filling in a form). Served from this
// origin as /admin/sync/app.js (the Content-Security-Policy allows no inline script); everything
// is written with textContent, never as HTML.
(function () {
  "use strict";
  var script = document.currentScript;
  var url = script && script.getAttribute("data-status");
  if (!url) {
    return;
  }
  var polls = 0;
  var loadedAt = Date.now();

  // Whether someone started filling in a form of the page.
  function formsTouched() {
    var fields = document.querySelectorAll("form input, form select");
    for (var i = 0; i < fields.length; i += 1) {
      var f = fields[i];
      if (f.type === "checkbox" || f.type === "radio") {
        if (f.checked !== f.defaultChecked) {
          return true;
        }
      } else if (f.tagName === "SELECT") {
        for (var j = 0; j < f.options.length; j += 1) {
          if (f.options[j].selected !== f.options[j].defaultSelected) {
            return true;
          }
        }
      } else if (f.type !== "hidden" && f.value !== f.defaultValue) {
        return true;
      }
    }
    return document.activeElement !== null && document.activeElement.form !== undefined && document.activeElement.form !== null;
  }

  function el(tag, value, className) {
    var e = document.createElement(tag);
    if (value !== undefined && value !== null) {
      e.textContent = String(value);
    }
    if (className) {
      e.className = className;
    }
    return e;
  }

  function num(v) {
    return typeof v === "number" ? String(v) : "–";
  }

  function ago(iso) {
    var secs = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (secs < 60) {
      return secs + "s";
    }
    if (secs < 3600) {
      return Math.floor(secs / 60) + "m";
    }
    return Math.floor(secs / 3600) + "h " + Math.floor((secs % 3600) / 60) + "m";
  }

  function drawNow(running) {
    var now = document.getElementById("now");
    if (!now) {
      return;
    }
    now.textContent = "";
    if (running) {
      now.appendChild(el("span", "running", "badge running"));
      now.appendChild(document.createTextNode(" " + running.kind + " (" + running.trigger + ") since " + ago(running.since)));
    } else {
      now.textContent = "idle";
    }
  }

  function drawProgress(p, running) {
    var box = document.getElementById("progress");
    if (!box) {
      return;
    }
    box.textContent = "";
    if (!p) {
      var none = el("p", "No run of this process yet.", "muted");
      none.id = "progress-summary";
      box.appendChild(none);
      return;
    }
    var state = p.finished ? "finished: " + p.finished : running ? "running" : "stopped";
    var summary = el(
      "p",
      "Run #" + p.run_id + " (" + p.kind + ") " + state + " · " + p.kinds_done + " of " + p.kinds_total +
        " kinds done · " + p.requests + " requests · " + p.elapsed_secs + "s elapsed"
    );
    summary.id = "progress-summary";
    box.appendChild(summary);
    var table = el("table");
    var head = el("tr");
    ["kind", "state", "pages", "records", "new", "changed", "deleted", "requests", "rate", "estimate"].forEach(function (h, i) {
      head.appendChild(el("th", h, i >= 2 ? "num" : ""));
    });
    table.appendChild(el("thead")).appendChild(head);
    var body = table.appendChild(el("tbody"));
    (p.kinds || []).forEach(function (k) {
      var row = el("tr");
      row.setAttribute("data-kind", k.kind);
      row.appendChild(el("td", k.kind));
      row.appendChild(el("td")).appendChild(el("span", k.state, "badge " + k.state));
      [k.pages, k.fetched, k.inserted, k.updated, k.deleted, k.requests].forEach(function (v) {
        row.appendChild(el("td", num(v), "num"));
      });
      row.appendChild(el("td", typeof k.rate_per_sec === "number" ? k.rate_per_sec.toFixed(1) + "/s" : "–", "num"));
      row.appendChild(el("td", typeof k.eta_secs === "number" ? "~" + Math.round(k.eta_secs) + "s left" : "–", "num"));
      body.appendChild(row);
    });
    box.appendChild(table);
  }

  function poll() {
    var running = false;
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("status.json answered " + response.status);
        }
        return response.json();
      })
      .then(function (status) {
        running = Boolean(status.schedule && status.schedule.running);
        drawNow(status.schedule && status.schedule.running);
        drawProgress(status.progress, running);
        var box = document.getElementById("progress");
        if (box) {
          polls += 1;
          box.setAttribute("data-polls", String(polls));
          box.removeAttribute("data-error");
        }
      })
      .catch(function (error) {
        var box = document.getElementById("progress");
        if (box) {
          box.setAttribute("data-error", String(error));
        }
      })
      .then(function () {
        if (!running && Date.now() - loadedAt > 30000 && !formsTouched()) {
          window.location.reload();
          return;
        }
        setTimeout(poll, running ? 1000 : 5000);
      });
  }

  poll();
})();
