/* sanlv office pages: live progress without a reload. Plain ES5 for old Android browsers; the pages work
   without it (the progress page refreshes itself, and has a refresh link).

   An element with data-progress-url (a round on the home page, the progress page) is polled every 5 seconds.
   Inside it, [data-field] elements are filled from the answer: "status", "done", "final", "eta", "dial_rate",
   "live_calls", "attempts", "target-<state>"; a <progress> gets its value. A tbody[data-recent-calls] is
   rebuilt from the recent calls. When the round's status changes the page reloads (other buttons apply). */
(function () {
  "use strict";
  var PERIOD = 5000;

  function fields(root, name) {
    var all = root.querySelectorAll('[data-field="' + name + '"]');
    var out = [];
    for (var i = 0; i < all.length; i++) { out.push(all[i]); }
    if (root.getAttribute("data-field") === name) { out.push(root); }
    return out;
  }

  function setText(root, name, text) {
    var els = fields(root, name);
    for (var i = 0; i < els.length; i++) {
      if (els[i].tagName === "PROGRESS") { continue; }
      els[i].textContent = text;
    }
  }

  function cell(row, text, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function fillCalls(root, calls) {
    var body = root.querySelector("[data-recent-calls]");
    if (!body) { return; }
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (!calls.length) {
      var empty = document.createElement("tr");
      cell(empty, body.getAttribute("data-empty") || "", "muted").setAttribute("colspan", "6");
      body.appendChild(empty);
      return;
    }
    for (var i = 0; i < calls.length; i++) {
      var call = calls[i];
      var row = document.createElement("tr");
      cell(row, call.time, "nowrap");
      cell(row, call.phone, "phone");
      cell(row, call.direction);
      cell(row, String(call.number), "num");
      var status = cell(row, "");
      var badge = document.createElement("span");
      badge.className = "call-status call-" + call.status_value;
      badge.textContent = call.status;
      status.appendChild(badge);
      cell(row, call.duration);
      body.appendChild(row);
    }
  }

  function apply(root, data) {
    var display = data.display;
    var bars = fields(root, "final");
    for (var i = 0; i < bars.length; i++) {
      if (bars[i].tagName === "PROGRESS") {
        bars[i].max = data.total || 1;
        bars[i].value = data.final;
      }
    }
    setText(root, "final", String(data.final));
    setText(root, "done", display.done);
    setText(root, "eta", display.eta);
    setText(root, "dial_rate", display.dial_rate);
    setText(root, "live_calls", String(data.live_calls));
    setText(root, "attempts", String(data.attempts));
    for (var state in data.targets) {
      if (data.targets.hasOwnProperty(state)) { setText(root, "target-" + state, String(data.targets[state])); }
    }
    fillCalls(root, display.recent_calls || []);
  }

  function poll(root) {
    var url = root.getAttribute("data-progress-url");
    var initial = root.getAttribute("data-status");
    var failures = 0;

    function tick() {
      var request = new XMLHttpRequest();
      request.open("GET", url, true);
      request.setRequestHeader("Accept", "application/json");
      request.onreadystatechange = function () {
        if (request.readyState !== 4) { return; }
        var data = null;
        if (request.status === 200) {
          try { data = JSON.parse(request.responseText); } catch (e) { data = null; }
        }
        if (!data) {
          failures += 1;  // signed out, or the server is restarting: slow down, then stop
          if (failures < 5) { window.setTimeout(tick, PERIOD * (failures + 1)); }
          return;
        }
        failures = 0;
        if (data.status !== initial) {
          window.location.reload();
          return;
        }
        apply(root, data);
        window.setTimeout(tick, PERIOD);
      };
      request.send(null);
    }

    window.setTimeout(tick, PERIOD);
  }

  var live = document.querySelectorAll("[data-progress-url]");
  for (var i = 0; i < live.length; i++) { poll(live[i]); }
  var note = document.getElementById("poll-note");
  if (note && live.length) { note.removeAttribute("hidden"); }
})();
