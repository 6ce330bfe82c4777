"""The tree page's colour switch: which measure the node fill and the teacher ring show.

`render_page` runs this script right after the page's own (`coachlab/templates/tree_page.js`),
in the same `<script>` element, so the page's Content-Security-Policy hash covers both. It reads
the measures `page_data` embeds (`run.measures`, each node's `colors` and `teacher_colors`, each
episode's `colors`) and:

- draws the legend: a radio group "colour by" (task success, items met, satisfaction: the measures
  the run has data for), the scale of the chosen one, what fill and ring mean;
- colours every node's fill and ring, and the chips of the transcripts in the node panel, in the
  chosen measure (`data-measure` on `<body>` names it);
- adds each node's task success and items met, student and teacher, to its tooltip and to the node
  panel, beside the satisfaction means the page shows.

Like the page's script it builds every element with createElement and textContent, and never
parses data as HTML.
"""

from __future__ import annotations

__all__ = ["MEASURE_SCRIPT", "MEASURE_STYLE"]

MEASURE_STYLE = """
#legend .measure-switch { display: flex; flex-wrap: wrap; gap: 2px 10px; align-items: center; margin-bottom: 4px; }
#legend .measure-switch label { white-space: nowrap; cursor: pointer; }
#legend .measure-switch .title { font-weight: 600; }
#legend .measure-title { font-weight: 600; }
#legend .measure-scale { white-space: nowrap; }
#legend .measure-note { color: #9a6700; }
"""
"""CSS for the switch, appended to the page's stylesheet."""

MEASURE_SCRIPT = r"""// coachlab tree page, colour measures (coachlab/viz/measure_switch.py): the fill and ring of every
// node in one measure at a time, switched from the legend. Built with createElement / textContent only.
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("coachlab-data").textContent);
  var view = DATA.view, episodes = DATA.episodes, measures = DATA.run.measures;
  var byKey = {};
  measures.forEach(function (m) { byKey[m.key] = m; });
  var current = DATA.run.measure;
  var legend = document.getElementById("legend");
  var details = document.getElementById("details");

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function chip(color) { var c = el("span", "chip"); c.style.background = color; return c; }
  function figure(key, x) {
    if (x === null || x === undefined) return "n/a";
    return key === "satisfaction" ? Number(x).toFixed(2) : Math.round(100 * x) + "%";
  }
  var rates = measures.filter(function (m) { return m.key !== "satisfaction"; });

  // ---------- legend ----------
  var group = el("div", "measure-switch");
  group.setAttribute("role", "radiogroup");
  group.setAttribute("aria-label", "Colour nodes by");
  add(group, el("span", "title", "colour by"));
  measures.forEach(function (m) {
    var input = el("input");
    input.type = "radio";
    input.name = "measure";
    input.value = m.key;
    input.setAttribute("data-measure", m.key);
    input.checked = m.key === current;
    input.addEventListener("change", function () { if (input.checked) show(m.key); });
    add(group, add(el("label"), input, document.createTextNode(" " + m.name)));
  });
  group.hidden = measures.length < 2;  // one measure: nothing to switch, the title says which
  var title = el("div", "measure-title"), low = el("span"), bar = el("span", "bar"), high = el("span");
  var note = el("div", "measure-note", DATA.run.measure_note || null);
  while (legend.firstChild) legend.removeChild(legend.firstChild);
  add(legend, group, title, add(el("div", "measure-scale"), low, bar, high),
    el("div", null, "fill = student \u00b7 ring = teacher \u00b7 grey = no data (not rolled out, no checklist)"),
    el("div", null, "size = student trials \u00b7 blue badge = admitted strategies \u00b7 edge = mutation"));
  if (DATA.run.measure_note) add(legend, note);

  // ---------- nodes ----------
  var dots = {}, rings = {};
  Array.prototype.forEach.call(document.querySelectorAll("#nodes g.node"), function (g) {
    var id = g.getAttribute("data-id"), v = view[id];
    if (!v) return;
    dots[id] = g.querySelector("circle.dot");
    rings[id] = g.querySelector("circle.ring");
    var tip = g.querySelector(":scope > title");
    if (tip && rates.length) {
      tip.textContent += "\n" + rates.map(function (m) {
        return m.name + ": student " + figure(m.key, v.scores[m.key]) +
          ", teacher " + figure(m.key, v.teacher_scores[m.key]);
      }).join(" \u00b7 ");
    }
  });

  function recolourEpisodes() {
    Array.prototype.forEach.call(details.querySelectorAll("details.episode"), function (box) {
      var ep = episodes[box.getAttribute("data-episode")], c = box.querySelector("summary .chip");
      if (ep && c) c.style.background = ep.colors[current];
    });
  }

  function show(key) {
    var m = byKey[key];
    if (!m) return;
    current = key;
    title.textContent = m.label;
    low.textContent = m.low;
    high.textContent = m.high;
    bar.style.background = "linear-gradient(to right, " + m.scale.map(function (s) { return s[1]; }).join(", ") + ")";
    note.hidden = key !== DATA.run.measure;
    Object.keys(dots).forEach(function (id) {
      if (dots[id]) dots[id].setAttribute("fill", view[id].colors[key]);
      if (rings[id]) rings[id].setAttribute("stroke", view[id].teacher_colors[key]);
    });
    recolourEpisodes();
    document.body.setAttribute("data-measure", key);
  }

  // ---------- node panel: task success and items met beside the satisfaction means ----------
  function augment() {
    var code = details.querySelector("h2 + div > code");
    var v = code ? view[code.textContent] : null;
    if (!v || details.querySelector("[data-measures]") || !rates.length) return;
    var dl = el("dl", "kv");
    dl.setAttribute("data-measures", "true");
    rates.forEach(function (m) {
      var dd = add(el("dd"), chip(v.colors[m.key]),
        document.createTextNode(figure(m.key, v.scores[m.key]) + " \u00b7 teacher "),
        chip(v.teacher_colors[m.key]), document.createTextNode(figure(m.key, v.teacher_scores[m.key])));
      dd.setAttribute("data-measure", m.key);
      add(dl, el("dt", null, m.name), dd);
    });
    var scores = details.querySelector("dl.kv");
    if (scores) details.insertBefore(dl, scores);
    else details.appendChild(dl);
  }
  new MutationObserver(function () { augment(); recolourEpisodes(); }).observe(details, { childList: true });

  show(current);
  augment();
})();
"""
"""The switch's script, run after the page's own (module doc)."""
