// coachlab tree page: draws the embedded scenario tree with SVG, no library, no network.
// Every element is built with createElement / textContent: data is never parsed as HTML.
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("coachlab-data").textContent);
  var SVG_NS = "http://www.w3.org/2000/svg";
  // Small trees get room for the mutation labels; big ones stay compact (labels show when zoomed in).
  var X_GAP = DATA.run.layout.width <= 40 ? 170 : 46, Y_GAP = 130, MARGIN = 100, FAR_ZOOM = 0.55, MIN_FIT = 0.3;
  var STATUSES = ["frontier", "passed", "failed", "expanded"];

  var records = {};
  var order = [];
  DATA.tree.nodes.forEach(function (n) {
    records[String(n.id)] = n.record;
    order.push(String(n.id));
  });
  var view = DATA.view;
  var nodeEls = {};
  var edgeEls = {};  // target id -> [path, label]
  var selected = null;
  var zoom = { k: 1, x: 0, y: 0 };

  // ---------- small DOM helpers ----------
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svgEl(tag, attrs) {
    var e = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
    return parent;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function fmt(x, digits) { return x === null || x === undefined ? "n/a" : Number(x).toFixed(digits === undefined ? 1 : digits); }
  function kv(pairs) {
    var dl = el("dl", "kv");
    pairs.forEach(function (p) {
      if (p[1] === null || p[1] === undefined || p[1] === "") return;
      add(dl, el("dt", null, p[0]), p[1] instanceof Node ? add(el("dd"), p[1]) : el("dd", null, p[1]));
    });
    return dl;
  }
  function pill(text, cls) { return el("span", "pill " + (cls || text), text); }
  function chip(color) { var c = el("span", "chip"); c.style.background = color; return c; }
  function short(text, n) { text = String(text || ""); return text.length > n ? text.slice(0, n - 1) + "\u2026" : text; }
  function px(id) { return MARGIN + view[id].x * X_GAP; }
  function py(id) { return MARGIN + view[id].y * Y_GAP; }
  function nodeLink(id) {
    var a = el("a", "node-link", id);
    a.addEventListener("click", function () { select(id, true); });
    return a;
  }

  // ---------- header, legend, notes ----------
  document.getElementById("run-name").textContent = DATA.run.name;
  document.getElementById("run-meta").textContent =
    order.length + " nodes \u00b7 library v" + DATA.run.library_version + " \u00b7 " + DATA.run.folder +
    " \u00b7 coachlab " + DATA.run.coachlab_version;
  if (DATA.run.dry_run) {
    var dry = document.getElementById("dry-run");
    dry.textContent = DATA.run.dry_run;
    dry.hidden = false;
  }
  var notes = document.getElementById("notes");
  DATA.run.notes.forEach(function (n) { add(notes, el("div", null, n)); });

  var legend = document.getElementById("legend");
  var bar = el("span", "bar");
  bar.style.background = "linear-gradient(to right, " + DATA.run.scale.map(function (s) { return s[1]; }).join(", ") + ")";
  add(legend,
    add(el("div"), el("span", null, "student satisfaction 1"), bar, el("span", null, "10")),
    el("div", null, "fill = student mean \u00b7 ring = teacher mean \u00b7 grey = not rolled out"),
    el("div", null, "size = student trials \u00b7 blue badge = admitted strategies \u00b7 edge = mutation"));

  // ---------- drawing ----------
  var svg = document.getElementById("tree");
  var viewport = document.getElementById("viewport");
  var edgesG = document.getElementById("edges");
  var nodesG = document.getElementById("nodes");

  DATA.tree.edges.forEach(function (e) {
    var s = String(e.source), t = String(e.target);
    var x1 = px(s), y1 = py(s), x2 = px(t), y2 = py(t), my = (y1 + y2) / 2;
    var path = svgEl("path", { d: "M" + x1 + "," + y1 + " C" + x1 + "," + my + " " + x2 + "," + my + " " + x2 + "," + y2 });
    path.setAttribute("data-target", t);
    var label = svgEl("text", { x: x2, y: y2 - view[t].r - 12, "text-anchor": "middle" });
    label.textContent = short(e.mutation, 26);
    var tip = svgEl("title");
    tip.textContent = e.mutation || "";
    add(label, tip);
    add(edgesG, path);
    edgeEls[t] = [path, label];
  });
  // labels above every path
  order.forEach(function (id) { if (edgeEls[id]) add(edgesG, edgeEls[id][1]); });

  order.forEach(function (id) {
    var r = records[id], v = view[id];
    var g = svgEl("g", { "class": "node", transform: "translate(" + px(id) + "," + py(id) + ")" });
    g.setAttribute("data-id", id);
    g.setAttribute("data-status", r.status);
    add(g,
      svgEl("circle", { "class": "ring", r: v.r + 3, stroke: v.teacher_color }),
      svgEl("circle", { "class": "dot", r: v.r, fill: v.color }));
    var label = svgEl("text", { "class": "label", y: v.r + 16 });
    label.textContent = v.parent === null ? short(id, 24) : id.slice(v.parent.length);
    add(g, label);
    if (v.admitted > 0) {
      var badge = svgEl("g", { "class": "badge", transform: "translate(" + (v.r * 0.8) + "," + (-v.r * 0.8) + ")" });
      var bt = svgEl("text");
      bt.textContent = String(v.admitted);
      add(badge, svgEl("circle", { r: 8 }), bt);
      add(g, badge);
    }
    var tip = svgEl("title");
    tip.textContent = id + " \u2014 " + r.scenario.title + "\nstatus " + r.status + " \u00b7 student " +
      fmt(r.student_mean) + " \u00b7 teacher " + fmt(r.teacher_mean) + " \u00b7 " + v.trials + " trials";
    add(g, tip);
    g.setAttribute("tabindex", "0");
    g.setAttribute("role", "button");
    g.setAttribute("aria-label", id + ": " + r.scenario.title);
    g.addEventListener("click", function (ev) { ev.stopPropagation(); if (!moved) select(id, false); });
    g.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); select(id, false); } });
    add(nodesG, g);
    nodeEls[id] = g;
  });

  // ---------- pan and zoom ----------
  function apply() {
    viewport.setAttribute("transform", "translate(" + zoom.x + "," + zoom.y + ") scale(" + zoom.k + ")");
    svg.classList.toggle("far", zoom.k < FAR_ZOOM);
  }
  function zoomAt(factor, cx, cy) {
    var k = Math.min(Math.max(zoom.k * factor, 0.05), 4);
    zoom.x = cx - (cx - zoom.x) * (k / zoom.k);
    zoom.y = cy - (cy - zoom.y) * (k / zoom.k);
    zoom.k = k;
    apply();
  }
  // Fit the whole tree; a tree too wide to show readably starts at its left end, at a zoom where
  // nodes can still be clicked (pan, zoom, search or the depth filter reach the rest).
  function fit() {
    var w = svg.clientWidth || 800, h = svg.clientHeight || 600;
    var tw = Math.max(DATA.run.layout.width - 1, 0) * X_GAP + 2 * MARGIN;
    var th = DATA.run.layout.depth * Y_GAP + 2 * MARGIN;
    zoom.k = Math.min(Math.min(w / tw, h / th), 1.5);
    if (zoom.k < MIN_FIT) {
      zoom.k = MIN_FIT;
      zoom.x = 0;
    } else {
      zoom.x = (w - tw * zoom.k) / 2;
    }
    zoom.y = Math.max((h - th * zoom.k) / 2, 0);
    apply();
  }
  function centerOn(id) {
    var w = svg.clientWidth || 800, h = svg.clientHeight || 600;
    if (zoom.k < 0.8) zoom.k = 0.8;
    zoom.x = w / 2 - px(id) * zoom.k;
    zoom.y = h / 3 - py(id) * zoom.k;
    apply();
  }
  svg.addEventListener("wheel", function (ev) {
    ev.preventDefault();
    var box = svg.getBoundingClientRect();
    zoomAt(Math.exp(-ev.deltaY * 0.0015), ev.clientX - box.left, ev.clientY - box.top);
  }, { passive: false });
  var drag = null, moved = false;
  svg.addEventListener("pointerdown", function (ev) {
    drag = { x: ev.clientX, y: ev.clientY, zx: zoom.x, zy: zoom.y };
    moved = false;
  });
  window.addEventListener("pointermove", function (ev) {
    if (!drag) return;
    var dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
    if (!moved && Math.abs(dx) + Math.abs(dy) < 4) return;
    moved = true;
    svg.classList.add("panning");
    zoom.x = drag.zx + dx;
    zoom.y = drag.zy + dy;
    apply();
  });
  window.addEventListener("pointerup", function () { drag = null; svg.classList.remove("panning"); });
  document.getElementById("zoom-in").addEventListener("click", function () { zoomAt(1.25, svg.clientWidth / 2, svg.clientHeight / 2); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoomAt(0.8, svg.clientWidth / 2, svg.clientHeight / 2); });
  document.getElementById("zoom-fit").addEventListener("click", fit);

  // ---------- filters ----------
  var search = document.getElementById("search");
  var statusBox = document.getElementById("status-filter");
  var depthSel = document.getElementById("depth-filter");
  var admittedBox = document.getElementById("admitted-filter");
  var statusInputs = {};
  STATUSES.forEach(function (s) {
    var count = order.filter(function (id) { return records[id].status === s; }).length;
    var input = el("input");
    input.type = "checkbox";
    input.checked = true;
    input.value = s;
    input.setAttribute("data-status", s);
    input.addEventListener("change", applyFilters);
    statusInputs[s] = input;
    add(statusBox, add(el("label"), input, document.createTextNode(" " + s + " (" + count + ")")));
  });
  for (var d = 0; d <= DATA.run.layout.depth; d++) {
    var opt = el("option", null, String(d));
    opt.value = String(d);
    add(depthSel, opt);
  }
  depthSel.value = String(DATA.run.layout.depth);
  depthSel.addEventListener("change", applyFilters);
  admittedBox.addEventListener("change", applyFilters);
  search.addEventListener("input", applyFilters);
  document.getElementById("filters").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var first = order.filter(function (id) { return !nodeEls[id].classList.contains("dim") && !nodeEls[id].classList.contains("hidden"); })[0];
    if (first) select(first, true);
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "/" && document.activeElement !== search) { ev.preventDefault(); search.focus(); }
    if (ev.key === "Escape") { search.value = ""; applyFilters(); }
  });

  var haystack = {};
  order.forEach(function (id) {
    var r = records[id], p = r.scenario.persona;
    var parts = [id, r.scenario.title, r.scenario.id, r.mutation || "", p.name, p.id, r.scenario.domain];
    r.strategy_ids.forEach(function (sid) {
      var s = DATA.strategies[sid];
      if (s) parts.push(sid, s.situation, s.guidance);
    });
    haystack[id] = parts.join("\n").toLowerCase();
  });

  function applyFilters() {
    var q = search.value.trim().toLowerCase();
    var maxDepth = Number(depthSel.value);
    var onlyAdmitted = admittedBox.checked;
    var shown = 0, visible = 0;
    order.forEach(function (id) {
      var r = records[id];
      var hidden = r.depth > maxDepth;
      var match = statusInputs[r.status] ? statusInputs[r.status].checked : true;
      match = match && (!q || haystack[id].indexOf(q) >= 0) && (!onlyAdmitted || view[id].admitted > 0);
      nodeEls[id].classList.toggle("hidden", hidden);
      nodeEls[id].classList.toggle("dim", !hidden && !match);
      if (edgeEls[id]) edgeEls[id].forEach(function (e) { e.classList.toggle("hidden", hidden); e.classList.toggle("dim", !hidden && !match); });
      if (!hidden) visible++;
      if (!hidden && match) shown++;
    });
    document.getElementById("match-count").textContent = shown + " of " + visible + " nodes match";
  }

  // ---------- details ----------
  var details = document.getElementById("details");
  var library = document.getElementById("library");

  function copyButton(text) {
    var b = el("button", "copy", "copy");
    b.type = "button";
    b.addEventListener("click", function () {
      function done() { b.textContent = "copied"; setTimeout(function () { b.textContent = "copy"; }, 1200); }
      function fallback() {
        var t = el("textarea");
        t.value = text;
        document.body.appendChild(t);
        t.select();
        try { document.execCommand("copy"); done(); } catch (e) { b.textContent = "select and copy"; }
        document.body.removeChild(t);
      }
      if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, fallback);
      else fallback();
    });
    return b;
  }

  function strategyCard(s) {
    var card = el("div", "card strategy");
    card.setAttribute("data-strategy", s.id);
    add(card, add(el("div"), pill(s.status), el("code", null, s.id)));
    add(card, el("div", "situation", s.situation), el("div", "guidance", s.guidance));
    var ev = s.evidence;
    if (ev) {
      var uplift = s.uplift === null ? "n/a" : (s.uplift >= 0 ? "+" : "") + fmt(s.uplift, 2) +
        (ev.uplift_low !== null && ev.uplift_low !== undefined ? " [" + fmt(ev.uplift_low, 2) + ", " + fmt(ev.uplift_high, 2) + "]" : "");
      var rows = [["criterion", ev.criterion], ["trials", ev.trials], ["without \u2192 with", fmt(ev.mean_without, 2) + " \u2192 " + fmt(ev.mean_with, 2)],
        ["uplift (CI)", uplift]];
      Object.keys(ev).forEach(function (k) {
        if (["criterion", "trials", "mean_without", "mean_with", "uplift_low", "uplift_high", "note"].indexOf(k) < 0 && ev[k] !== null)
          rows.push([k.replace(/_/g, " "), typeof ev[k] === "number" ? fmt(ev[k], 2) : String(ev[k])]);
      });
      rows.push(["note", ev.note]);
      add(card, el("div", "muted", "evidence"), kv(rows));
    }
    var pv = s.provenance;
    if (pv) {
      add(card, el("div", "muted", "provenance"), kv([
        ["node", pv.node_id && records[pv.node_id] ? nodeLink(pv.node_id) : pv.node_id],
        ["episode", pv.episode_id], ["failure turn", pv.failure_turn], ["teacher", pv.teacher_model], ["iteration", pv.iteration]]));
    }
    if (s.audit && s.audit.length) {
      var ul = el("ul", "plain audit");
      s.audit.forEach(function (a) {
        add(ul, el("li", null, a.status + " by " + a.by + " at " + a.at.replace("T", " ").slice(0, 19) + (a.why ? ": " + a.why : "")));
      });
      add(card, el("div", "muted", "audit trail"), ul);
    }
    add(card, el("div", "muted", "review (replace NAME and the reason)"));
    ["approve", "reject", "edit"].forEach(function (action) {
      var cmd = s.commands[action];
      add(card, add(el("div", "cmd"), el("code", "command " + action, cmd), copyButton(cmd)));
    });
    return card;
  }

  function episodeBlock(eid, open) {
    var ep = DATA.episodes[eid];
    var box = el("details", "episode");
    box.setAttribute("data-episode", eid);
    if (!ep) {
      add(box, el("summary", null, eid + " (not in train/episodes.jsonl)"));
      return box;
    }
    box.open = open;
    var v = ep.verdict;
    var outcome = v ? (v.task_success === true ? "task success \u00b7 " : v.task_success === false ? "task failed \u00b7 " : "") +
      "satisfaction " + v.satisfaction + "/10" : (ep.simulator_fault ? "simulator fault" : "no verdict");
    var head = (ep.condition === "teacher" ? "teacher" : ep.agent_model) + " \u00b7 trial " + ep.trial + " \u00b7 " +
      outcome + " \u00b7 " + ep.termination.replace(/_/g, " ");
    var summary = el("summary");
    if (v) add(summary, chip(ep.color));
    add(summary, document.createTextNode(head));
    add(box, summary);
    var body = el("div", "body");
    if (v) {
      add(body, kv([["verdict", v.rationale], ["resolved", v.resolved ? "yes" : "no"], ["policy followed", v.policy_followed ? "yes" : "no"],
        ["failure turn", v.failure_turn === null ? "none" : "agent turn " + v.failure_turn], ["customer in role", v.customer_in_role ? "yes" : "no"]]));
      if (v.criteria && v.criteria.length) {
        var list = el("ul", "plain checklist");
        v.criteria.forEach(function (r) {
          var mark = r.status === "met" ? "\u2713" : r.status === "not_met" ? "\u2717" : "\u2013";
          var votes = r.votes > 1 ? " (" + r.votes_met + "/" + r.votes + " votes)" : "";
          var quote = r.quote ? " \u2014 agent turn " + r.turn + ": \u201c" + r.quote + "\u201d" : "";
          add(list, el("li", "item " + r.status, mark + " " + r.id + votes + quote));
        });
        add(body, el("div", "muted", "checklist"), list);
      }
    } else if (ep.simulator_fault) {
      add(body, kv([["simulator fault (not scored)", ep.simulator_fault]]));
    } else if (ep.judge_error) {
      add(body, kv([["judge error", ep.judge_error]]));
    }
    ep.lines.forEach(function (line) {
      var row = el("div", "line " + line.who);
      if (line.who === "note") {
        row.textContent = line.text;
      } else {
        var who = line.who === "agent" ? "Agent [" + line.turn + "]" : "Customer";
        if (line.origin && line.origin !== "model") who += " (" + line.origin + ")";
        add(row, el("span", "who", who), el("span", "text", line.text));
        if (line.who === "agent" && line.turn === ep.failure_turn) {
          row.classList.add("failure");
          add(row, el("span", "flag", "\u2691 failure turn"));
        }
      }
      add(body, row);
    });
    if (ep.termination_detail) add(body, el("div", "line note", "ended: " + ep.termination_detail));
    add(box, body);
    return box;
  }

  function scenarioBlock(sc) {
    var p = sc.persona;
    var box = el("div");
    add(box, kv([["company", sc.company], ["domain", sc.domain], ["issue", sc.issue], ["opening line", sc.opening_line],
      ["difficulty", sc.difficulty], ["tags", (sc.tags || []).join(", ")]]));
    add(box, el("div", "muted", "persona (private fields included)"), kv([
      ["who", p.name + " \u2014 " + p.description], ["mood / patience", p.mood + " / " + p.patience], ["traits", (p.traits || []).join(", ")],
      ["style", p.style], ["goal", p.goal], ["hidden", (p.hidden_constraints || []).join(" \u00b7 ")], ["satisfied when", p.satisfied_when],
      ["gives up when", p.gives_up_when]]));
    var policy = el("ol", "plain");
    sc.policy.forEach(function (rule) { add(policy, el("li", null, rule)); });
    add(box, el("div", "muted", "policy"), policy);
    var facts = Object.keys(sc.facts || {}).map(function (k) {
      var val = sc.facts[k];
      return [k, typeof val === "string" ? val : JSON.stringify(val)];
    });
    if (facts.length) add(box, el("div", "muted", "facts"), kv(facts));
    if (sc.success_criteria && sc.success_criteria.length) {
      var items = el("ol", "plain checklist");
      sc.success_criteria.forEach(function (c) {
        var tags = [c.level || "must"];
        if (c.forbidden) tags.push("must not");
        if (c.policy) tags.push("policy");
        add(items, el("li", null, (c.forbidden ? "never: " : "") + c.text + " [" + tags.join(", ") + "]" +
          (c.example ? " — e.g. “" + c.example + "”" : "")));
      });
      add(box, el("div", "muted", "checklist (success criteria; edit the scenario file or <run>/criteria/)"), items);
    }
    if (sc.prefix && sc.prefix.length) {
      add(box, el("div", "muted", "dialogue prefix (the failure point it starts from)"));
      sc.prefix.forEach(function (t) {
        add(box, add(el("div", "line " + t.role), el("span", "who", t.role === "agent" ? "Agent" : "Customer"), el("span", "text", t.text)));
      });
    }
    return box;
  }

  function showNode(id) {
    var r = records[id], v = view[id];
    clear(details);
    add(details, el("h2", null, r.scenario.title));
    add(details, add(el("div"), pill(r.status), el("code", null, id), el("span", "muted", " depth " + r.depth + " \u00b7 iteration " + r.iteration)));
    var scores = kv([
      ["student mean", add(el("span"), chip(v.color), document.createTextNode(fmt(r.student_mean, 2) + " over " + v.trials + " trials"))],
      ["teacher mean", add(el("span"), chip(v.teacher_color), document.createTextNode(fmt(r.teacher_mean, 2)))],
      ["failure turn", r.failure_turn === null ? "none" : "agent turn " + r.failure_turn],
      ["mutation", r.mutation], ["parent", v.parent ? nodeLink(v.parent) : null],
      ["tokens", v.tokens.toLocaleString("en-US")]]);
    add(details, scores);
    if (v.children.length) {
      var kids = el("div");
      v.children.forEach(function (c, i) { if (i) add(kids, document.createTextNode(", ")); add(kids, nodeLink(c)); });
      add(details, kv([["children", kids]]));
    }
    add(details, el("h3", null, "Strategies (" + r.strategy_ids.length + ")"));
    if (!r.strategy_ids.length) add(details, el("div", "muted", "This node produced no strategies."));
    r.strategy_ids.forEach(function (sid) {
      if (DATA.strategies[sid]) add(details, strategyCard(DATA.strategies[sid]));
      else add(details, el("div", "muted", sid + " (not in the latest library version)"));
    });
    add(details, el("h3", null, "Transcripts (" + r.episode_ids.length + ")"));
    r.episode_ids.forEach(function (eid, i) { add(details, episodeBlock(eid, i === 0)); });
    add(details, el("h3", null, "Scenario"), scenarioBlock(r.scenario));
  }

  function showLibrary() {
    clear(library);
    var ids = Object.keys(DATA.strategies);
    var counts = {};
    ids.forEach(function (sid) { var st = DATA.strategies[sid].status; counts[st] = (counts[st] || 0) + 1; });
    add(library, el("h2", null, "Library v" + DATA.run.library_version + " (" + ids.length + " strategies)"));
    add(library, el("div", "muted", Object.keys(counts).map(function (k) { return counts[k] + " " + k; }).join(" \u00b7 ")));
    if (!ids.length) add(library, el("div", "empty", "No strategies yet."));
    ["proposed", "approved", "rejected"].forEach(function (status) {
      var group = ids.filter(function (sid) { return DATA.strategies[sid].status === status; });
      if (!group.length) return;
      add(library, el("h3", null, status + " (" + group.length + ")"));
      group.forEach(function (sid) { add(library, strategyCard(DATA.strategies[sid])); });
    });
  }

  function tab(which) {
    var isNode = which === "node";
    document.getElementById("tab-node").classList.toggle("active", isNode);
    document.getElementById("tab-library").classList.toggle("active", !isNode);
    details.hidden = !isNode;
    library.hidden = isNode;
  }
  document.getElementById("tab-node").addEventListener("click", function () { tab("node"); });
  document.getElementById("tab-library").addEventListener("click", function () { tab("library"); });

  function select(id, center) {
    if (!records[id]) return;
    if (selected && nodeEls[selected]) nodeEls[selected].classList.remove("selected");
    selected = id;
    nodeEls[id].classList.add("selected");
    showNode(id);
    tab("node");
    if (center) centerOn(id);
    try { history.replaceState(null, "", "#" + encodeURIComponent(id)); } catch (e) { /* some file:// setups refuse */ }
  }

  showLibrary();
  applyFilters();
  fit();
  var start = decodeURIComponent(location.hash.slice(1));
  if (start && records[start]) select(start, true);
  else if (order.length) {
    add(clear(details), el("div", "empty", "Click a node to see its scenario, transcripts, verdicts and strategies."));
  } else {
    add(clear(details), el("div", "empty", "The tree is empty: coachlab train has not rolled out any node yet."));
  }
  document.body.setAttribute("data-ready", "true");
})();
