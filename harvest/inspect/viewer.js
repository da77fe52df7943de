// worldtrace trace viewer: steps through the events embedded in #wt-data. No network access.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("wt-data").textContent);
  var meta = data.trace;
  // event tuple fields (see harvest/inspect/html.py EVENT_FIELDS)
  var KIND = 0, LINENO = 1, FUNC = 2, FILE = 3, DEPTH = 4, FRAME = 5, THREAD = 6, LOCALS = 7, ARG = 8, LINE = 9;
  var events = data.events;
  var n = events.length;
  var root = document.getElementById("wt-viewer");
  var slider = document.getElementById("wt-slider");
  var sourceEl = document.getElementById("wt-source");
  var lines = data.source.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  // --- header and output -------------------------------------------------------------------------
  var header = document.getElementById("wt-header");
  var title = el("div", "wt-title");
  var call = meta.entrypoint ? meta.entrypoint + "(" + (meta.input === null ? "" : meta.input) + ")" : "<script>";
  title.appendChild(el("span", null, meta.program_id + " \u2014 " + call + " "));
  title.appendChild(el("span", "wt-status " + (meta.status === "ok" ? "wt-status-ok" : "wt-status-other"), meta.status));
  header.appendChild(title);
  var outcome = meta.status === "ok" ? "returned " + meta.return_value
    : (meta.exception_type ? "raised " + meta.exception_type + ": " + meta.exception_message : (meta.tracer_error || ""));
  header.appendChild(el("div", "wt-meta", outcome));
  header.appendChild(el("div", "wt-meta", "trace " + meta.trace_id + " \u00b7 " + meta.n_events + " events" +
    (meta.truncated ? " (truncated)" : "") + " \u00b7 Python " + meta.python_version + " (" + meta.backend + ") \u00b7 image " + meta.image));
  var output = document.getElementById("wt-output");
  ["stdout", "stderr"].forEach(function (name) {
    if (meta[name]) { output.appendChild(el("h4", null, name)); output.appendChild(el("pre", "wt-" + name, meta[name])); }
  });

  // --- source ------------------------------------------------------------------------------------
  var lineEls = [];
  function renderSource(file) {
    sourceEl.textContent = "";
    lineEls = [];
    var own = file === data.main_file;
    document.getElementById("wt-file").textContent = file || "";
    if (!own) return;
    for (var i = 0; i < lines.length; i++) {
      var row = el("div", "wt-line");
      row.setAttribute("data-lineno", String(i + 1));
      row.appendChild(el("span", "wt-ln", String(i + 1)));
      row.appendChild(el("span", "wt-arrow"));
      row.appendChild(el("span", "wt-code", lines[i] || " "));
      sourceEl.appendChild(row);
      lineEls.push(row);
    }
  }
  var shownFile = null;

  // --- state: the fold of the locals deltas per frame, and the call stack per thread -------------
  // Variables live in Maps: a plain {} would answer `name in values` for constructor, toString,
  // __proto__... and hide variables named so.
  var applied = -1, states = {}, stacks = {};
  function reset() { applied = -1; states = {}; stacks = {}; }
  function apply(i) {
    var ev = events[i];
    var st = states[ev[FRAME]] || (states[ev[FRAME]] = { names: [], values: new Map() });
    var locals = ev[LOCALS];
    for (var j = 0; j < locals.length; j++) {
      var name = locals[j][0], value = locals[j][1];
      if (value === null) {
        if (st.values.has(name)) { st.values.delete(name); st.names.splice(st.names.indexOf(name), 1); }
      } else {
        if (!st.values.has(name)) st.names.push(name);
        st.values.set(name, value);
      }
    }
    var stack = stacks[ev[THREAD]] || (stacks[ev[THREAD]] = []);
    stack.length = Math.min(stack.length, ev[DEPTH]);
    stack.push({ frame: ev[FRAME], func: ev[FUNC], lineno: ev[LINENO] });
    applied = i;
  }
  function advanceTo(i) {
    if (i < applied) reset();
    while (applied < i) apply(applied + 1);
  }

  function describe(ev) {
    if (ev[KIND] === "call") return "call " + ev[FUNC] + "()";
    if (ev[KIND] === "return") return ev[ARG] === null ? ev[FUNC] + "() ends (exception propagates)" : ev[FUNC] + "() returns " + ev[ARG];
    if (ev[KIND] === "exception") return "exception in " + ev[FUNC] + "(): " + ev[ARG];
    return "line " + ev[LINENO] + " in " + ev[FUNC] + "()";
  }

  function renderFrames(ev) {
    var framesEl = document.getElementById("wt-frames");
    framesEl.textContent = "";
    var stack = stacks[ev[THREAD]] || [];
    var changed = new Set();
    ev[LOCALS].forEach(function (pair) { changed.add(pair[0]); });
    for (var k = 0; k < stack.length; k++) {
      var f = stack[k], current = k === stack.length - 1;
      var box = el("div", "wt-frame" + (current ? " wt-frame-current" : ""));
      box.setAttribute("data-frame-id", String(f.frame));
      box.setAttribute("data-function", f.func);
      var name = el("div", "wt-frame-name", f.func + " ");
      name.appendChild(el("small", null, "line " + f.lineno + " \u00b7 frame " + f.frame + (ev[THREAD] ? " \u00b7 thread " + ev[THREAD] : "")));
      box.appendChild(name);
      var st = states[f.frame] || { names: [], values: new Map() };
      if (!st.names.length) box.appendChild(el("div", "wt-empty", "no locals"));
      else {
        var table = el("table");
        st.names.forEach(function (v) {
          var tr = el("tr", current && changed.has(v) ? "wt-changed" : null);
          tr.setAttribute("data-name", v);
          tr.appendChild(el("td", "wt-name", v));
          tr.appendChild(el("td", "wt-value", st.values.get(v)));
          table.appendChild(tr);
        });
        box.appendChild(table);
      }
      if (current && (ev[KIND] === "return" || ev[KIND] === "exception") && ev[ARG] !== null) {
        var out = el("div", "wt-frame-result wt-result-" + ev[KIND]);
        out.appendChild(el("span", "wt-result-label", ev[KIND] === "return" ? "return value " : "exception "));
        out.appendChild(el("span", "wt-result-value", ev[ARG]));
        box.appendChild(out);
      }
      framesEl.appendChild(box);
    }
  }

  var step = -1, prevLine = null;
  function show(i) {
    if (!n) { document.getElementById("wt-counter").textContent = "no events"; return; }
    i = Math.max(0, Math.min(n - 1, i));
    advanceTo(i);
    var ev = events[i];
    if (ev[FILE] !== shownFile) { renderSource(ev[FILE]); shownFile = ev[FILE]; }
    lineEls.forEach(function (row) { row.classList.remove("wt-current", "wt-prev"); });
    var prevEv = i > 0 ? events[i - 1] : null;
    if (prevEv && prevEv[FILE] === ev[FILE] && lineEls[prevEv[LINENO] - 1] && prevEv[LINENO] !== ev[LINENO])
      lineEls[prevEv[LINENO] - 1].classList.add("wt-prev");
    var cur = lineEls[ev[LINENO] - 1];
    if (cur) {
      cur.classList.add("wt-current");
      if (cur.scrollIntoView) cur.scrollIntoView({ block: "nearest" });
    } else if (!(ev[FILE] === data.main_file && ev[LINENO] < 1)) {  // line 0: a module starting
      var single = el("div", "wt-line wt-current");
      single.setAttribute("data-lineno", String(ev[LINENO]));
      single.appendChild(el("span", "wt-ln", String(ev[LINENO])));
      single.appendChild(el("span", "wt-arrow"));
      single.appendChild(el("span", "wt-code", ev[LINE]));
      sourceEl.textContent = "";
      sourceEl.appendChild(single);
      shownFile = null;
    }
    var evEl = document.getElementById("wt-event");
    evEl.className = "wt-kind-" + ev[KIND];
    evEl.setAttribute("data-kind", ev[KIND]);
    evEl.textContent = describe(ev);
    renderFrames(ev);
    document.getElementById("wt-counter").textContent = "Step " + (i + 1) + " of " + n;
    slider.value = String(i);
    step = i;
    root.setAttribute("data-step", String(i));
    prevLine = ev[LINENO];
  }

  slider.max = String(Math.max(n - 1, 0));
  slider.addEventListener("input", function () { show(parseInt(slider.value, 10)); });
  document.getElementById("wt-first").addEventListener("click", function () { show(0); });
  document.getElementById("wt-prev").addEventListener("click", function () { show(step - 1); });
  document.getElementById("wt-next").addEventListener("click", function () { show(step + 1); });
  document.getElementById("wt-last").addEventListener("click", function () { show(n - 1); });
  document.addEventListener("keydown", function (e) {
    if (e.target === slider) return;  // the slider moves itself and fires "input"
    if (e.key === "ArrowRight" || e.key === "ArrowDown") { show(step + 1); e.preventDefault(); }
    else if (e.key === "ArrowLeft" || e.key === "ArrowUp") { show(step - 1); e.preventDefault(); }
    else if (e.key === "Home") { show(0); e.preventDefault(); }
    else if (e.key === "End") { show(n - 1); e.preventDefault(); }
  });
  show(0);
  root.focus();
})();
