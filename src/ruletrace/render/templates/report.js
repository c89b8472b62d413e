/* ruletrace report: renders the packet list, diagram paths, hit map and ruleset from #report-data.
   Every piece of data goes into the page with textContent / setAttribute, never as markup. */
(function () {
  "use strict";
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message || e));
    document.body.setAttribute("data-errors", errors.join(" | "));
  });

  var D = JSON.parse(document.getElementById("report-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var PAGE = D.page_size || 200;
  var HM_PAGE = 100, RS_PAGE_RULES = 600, STRIP_MAX = 240;
  var P = D.packets;
  // packet row columns
  var ID = 0, FATE = 1, PATH = 2, PROTO = 3, SRC = 4, SPORT = 5, DST = 6, DPORT = 7, IN = 8, OUT = 9, FLAGS = 10, DEC = 11, EXTRA = 12, NAT = 13;
  var byId = {};
  for (var i = 0; i < P.length; i++) byId[String(P[i][ID])] = i;

  var state = { fate: "", q: "", rule: -1, page: 0, a: D.defaults.a, b: D.defaults.b, open: null,
                hmEntered: D.chains.length > 300, hmQ: "", hmPage: 0, rsPage: 0 };

  // ------------------------------------------------------------------ helpers
  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs) if (Object.prototype.hasOwnProperty.call(attrs, k)) e.setAttribute(k, String(attrs[k]));
    return e;
  }
  function str(i) { return i === null || i === undefined || i < 0 ? "" : D.strings[i]; }
  function stepOf(sid) { return D.steps[sid]; }
  function placeOf(sid) { return D.places[D.steps[sid][0]]; }
  function pathOf(p) { return D.paths[p[PATH]]; }
  function extraOf(p) { return p[EXTRA] >= 0 ? D.extras[p[EXTRA]] : {}; }
  // NAT rewrites of a packet; an old value of 0 means the packet's own first address:port
  function natOf(p) {
    return (p[NAT] || []).map(function (c) {
      var old = c[1] === 0 ? (c[0] === "SRC" ? endpoint(p[SRC], p[SPORT]) : endpoint(p[DST], p[DPORT])) : c[1];
      return [c[0], old, c[2], c[3]];
    });
  }
  function endpoint(a, port) {
    if (!a) return "?";
    var s = String(a);
    if (port === null || port === undefined) return s;
    return s.indexOf(":") >= 0 ? "[" + s + "]:" + port : s + ":" + port;
  }
  function tuple(p) { return (p[PROTO] || "?") + " " + endpoint(p[SRC], p[SPORT]) + " \u2192 " + endpoint(p[DST], p[DPORT]) + (p[FLAGS] ? " [" + p[FLAGS] + "]" : ""); }
  function placeText(pl) {
    var n = pl[3] === null ? "?" : pl[3];
    return pl[0] + ":" + pl[1] + (pl[2] === "rule" ? " rule " + n : " " + pl[2] + " " + n);
  }
  function ruleKey(ri) {
    var c = chainOfRule(ri);
    return c ? c[1] + ":" + c[2] + ":" + (ri - c[4] + 1) : String(ri);
  }
  var chainStarts = D.chains.map(function (c) { return c[4]; });
  function chainIndexOfRule(ri) {
    var lo = 0, hi = D.chains.length - 1, ans = -1;
    while (lo <= hi) { var mid = (lo + hi) >> 1; if (chainStarts[mid] <= ri) { ans = mid; lo = mid + 1; } else hi = mid - 1; }
    while (ans >= 0 && D.chains[ans][5] === 0) ans--; // empty chains share the start of the next one
    return ans;
  }
  function chainOfRule(ri) { var k = chainIndexOfRule(ri); return k >= 0 ? D.chains[k] : null; }
  var ruleByKey = null;
  function ruleFromKey(key) {
    if (/^\d+$/.test(key)) return parseInt(key, 10);
    if (!ruleByKey) {
      ruleByKey = {};
      D.chains.forEach(function (c) { for (var n = 1; n <= c[5]; n++) { var k = c[1] + ":" + c[2] + ":" + n; if (!(k in ruleByKey)) ruleByKey[k] = c[4] + n - 1; } });
    }
    return key in ruleByKey ? ruleByKey[key] : -1;
  }
  function decidedText(p) {
    var path = pathOf(p), k = p[DEC];
    if (k < 0 || k >= path.length) {
      var e = extraOf(p);
      return e.last !== undefined ? "trace ends at " + str(e.last) : "nothing decided";
    }
    var s = stepOf(path[k]), pl = D.places[s[0]];
    var what = pl[2] === "rule" ? " rule " + pl[3] : " policy " + (s[4] || "");
    return pl[0] + ":" + pl[1] + what + (s[2] && pl[2] === "rule" ? " (" + s[2] + ")" : "");
  }

  // hooks of a path: [{hook, table, first step index}], as the diagram shows it
  var HOOKS = D.hooks;
  function visits(path) {
    var out = [], hook = null, last = "";
    for (var k = 0; k < path.length; k++) {
      var pl = placeOf(path[k]), up = String(pl[1]).toUpperCase();
      if (HOOKS[up] && HOOKS[up].indexOf(pl[0]) >= 0) hook = up;
      if (!hook || HOOKS[hook].indexOf(pl[0]) < 0) continue;
      var key = hook + "/" + pl[0];
      if (key !== last) { out.push({ hook: hook, table: pl[0], step: k }); last = key; }
    }
    return out;
  }
  function hookAt(path, k) {
    for (var j = k; j >= 0; j--) { var up = String(placeOf(path[j])[1]).toUpperCase(); if (HOOKS[up]) return up; }
    return null;
  }

  // ------------------------------------------------------------------ state <-> URL
  function readHash() {
    var h = (location.hash || "").replace(/^#/, "");
    var q = (location.search || "").replace(/^\?/, "");
    var parts = (q ? q + "&" : "") + h;
    if (!parts || parts.indexOf("=") < 0) return false;
    var st = { fate: "", q: "", rule: -1, page: 0 };
    parts.split("&").forEach(function (kv) {
      var i = kv.indexOf("="); if (i < 0) return;
      var k = kv.slice(0, i), v = decodeURIComponent(kv.slice(i + 1).replace(/\+/g, " "));
      if (k === "fate") st.fate = D.fates.indexOf(v) >= 0 ? v : "";
      else if (k === "q") st.q = v;
      else if (k === "rule") st.rule = ruleFromKey(v);
      else if (k === "page") st.page = Math.max(0, (parseInt(v, 10) || 1) - 1);
      else if (k === "a" && v in byId) st.a = P[byId[v]][ID];
      else if (k === "b" && v in byId) st.b = P[byId[v]][ID];
      else if (k === "packet" && v in byId) { st.open = P[byId[v]][ID]; st.a = st.open; }
    });
    for (var k in st) if (Object.prototype.hasOwnProperty.call(st, k)) state[k] = st[k];
    return true;
  }
  var writing = false;
  function writeHash() {
    var parts = [];
    if (state.fate) parts.push("fate=" + encodeURIComponent(state.fate));
    if (state.q) parts.push("q=" + encodeURIComponent(state.q));
    if (state.rule >= 0) parts.push("rule=" + encodeURIComponent(ruleKey(state.rule)));
    if (state.page) parts.push("page=" + (state.page + 1));
    var h = parts.length ? "#" + parts.join("&") : " ";
    try { history.replaceState(null, "", h === " " ? location.pathname + location.search : h); }
    catch (e) { writing = true; location.hash = parts.join("&"); }
  }

  // ------------------------------------------------------------------ filtering
  var searchCache = {};
  function pathSearch(pi) {
    var s = searchCache[pi];
    if (s === undefined) {
      var seen = {}, bits = [];
      D.paths[pi].forEach(function (sid) {
        var pl = placeOf(sid), c = pl[0] + ":" + pl[1];
        if (!seen[c]) { seen[c] = 1; bits.push(c); }
        if (pl[4] >= 0 && D.rules[pl[4]][0]) bits.push(D.rules[pl[4]][0]);
      });
      s = searchCache[pi] = bits.join(" ").toLowerCase();
    }
    return s;
  }
  var ruleCache = {};
  function pathsWithRule(ri) {
    var m = ruleCache[ri];
    if (!m) {
      m = ruleCache[ri] = {};
      for (var pi = 0; pi < D.paths.length; pi++) {
        var path = D.paths[pi];
        for (var k = 0; k < path.length; k++) if (placeOf(path[k])[4] === ri) { m[pi] = 1; break; }
      }
    }
    return m;
  }
  function packetText(p) {
    return ("#" + p[ID] + " " + D.fates[p[FATE]] + " " + tuple(p) + " " + (p[IN] || "") + " " + (p[OUT] || "") + " " + decidedText(p)).toLowerCase();
  }
  function filtered() {
    var fi = state.fate ? D.fates.indexOf(state.fate) : -1;
    var terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    var rm = state.rule >= 0 ? pathsWithRule(state.rule) : null;
    var out = [];
    for (var i = 0; i < P.length; i++) {
      var p = P[i];
      if (fi >= 0 && p[FATE] !== fi) continue;
      if (rm && !rm[p[PATH]]) continue;
      if (terms.length) {
        var t = packetText(p), ps = null, ok = true;
        for (var j = 0; j < terms.length && ok; j++) {
          if (t.indexOf(terms[j]) >= 0) continue;
          if (ps === null) ps = pathSearch(p[PATH]);
          ok = ps.indexOf(terms[j]) >= 0;
        }
        if (!ok) continue;
      }
      out.push(i);
    }
    return out;
  }

  // ------------------------------------------------------------------ packet list
  function renderChips() {
    var box = $("fate-chips"); box.textContent = "";
    var counts = D.fates.map(function () { return 0; });
    P.forEach(function (p) { counts[p[FATE]]++; });
    var all = el("button", "chip" + (state.fate ? "" : " on"), "all");
    all.appendChild(el("span", "n", P.length));
    all.setAttribute("data-fate", "");
    box.appendChild(all);
    D.fates.forEach(function (f, k) {
      if (!counts[k]) return;
      var b = el("button", "chip" + (state.fate === f ? " on" : ""), f);
      b.appendChild(el("span", "n", counts[k]));
      b.setAttribute("data-fate", f);
      box.appendChild(b);
    });
  }
  function pager(box, page, pages, total, noun, go) {
    box.textContent = "";
    if (total === 0) return;
    var prev = el("button", "", "\u2039 prev"), next = el("button", "", "next \u203a");
    prev.disabled = page <= 0; next.disabled = page >= pages - 1;
    prev.onclick = function () { go(page - 1); };
    next.onclick = function () { go(page + 1); };
    box.appendChild(prev);
    box.appendChild(el("span", "", "page " + (page + 1) + " of " + pages + " \u00b7 " + total + " " + noun));
    box.appendChild(next);
  }
  function renderPackets() {
    renderChips();
    var rf = $("rule-filter");
    if (state.rule >= 0) {
      rf.hidden = false;
      var r = D.rules[state.rule];
      $("rule-filter-text").textContent = "hit " + ruleKey(state.rule).replace(/:(\d+)$/, " rule $1") + (r && r[0] ? ": " + r[0] : "");
    } else rf.hidden = true;
    if ($("search").value !== state.q) $("search").value = state.q;
    var idx = filtered();
    var pages = Math.max(1, Math.ceil(idx.length / PAGE));
    if (state.page >= pages) state.page = pages - 1;
    var list = $("packet-list"); list.textContent = "";
    var from = state.page * PAGE, to = Math.min(idx.length, from + PAGE);
    var frag = document.createDocumentFragment();
    for (var k = from; k < to; k++) frag.appendChild(packetRow(P[idx[k]]));
    list.appendChild(frag);
    if (!idx.length) list.appendChild(el("li", "empty", "no packet matches these filters"));
    var go = function (n) { state.page = n; writeHash(); renderPackets(); };
    pager($("pager-top"), state.page, pages, idx.length, "packets", go);
    pager($("pager-bottom"), state.page, pages, idx.length, "packets", go);
    list.setAttribute("data-count", String(idx.length));
  }
  function packetRow(p) {
    var fate = D.fates[p[FATE]];
    var li = el("li", "pkt fate-" + fate);
    li.setAttribute("data-id", String(p[ID]));
    li.setAttribute("data-fate", fate);
    if (p[ID] === state.a) li.classList.add("sel-a");
    if (p[ID] === state.b) li.classList.add("sel-b");
    var row = el("div", "row");
    row.appendChild(el("span", "tw", "\u25b6"));
    row.appendChild(el("span", "pid", "#" + p[ID]));
    var fb = el("span", "fate fate-" + fate, fate); row.appendChild(el("span")).appendChild(fb);
    row.appendChild(el("span", "tuple", tuple(p)));
    row.appendChild(el("span", "iface", (p[IN] || "") + (p[OUT] ? " \u2192 " + p[OUT] : p[IN] ? " \u2192" : "")));
    row.appendChild(el("span", "dec", decidedText(p)));
    var ab = el("span", "ab");
    ["a", "b"].forEach(function (w) {
      var b = el("button", state[w] === p[ID] ? "on-" + w : "", w.toUpperCase());
      b.title = "show as " + w.toUpperCase() + " on the diagram";
      b.onclick = function (ev) { ev.stopPropagation(); state[w] = state[w] === p[ID] ? null : p[ID]; drawDiagram(); renderPackets(); };
      ab.appendChild(b);
    });
    row.appendChild(ab);
    row.onclick = function () {
      if (li.classList.contains("open")) { li.classList.remove("open"); var d = li.querySelector(".detail"); if (d) d.remove(); state.open = null; return; }
      li.classList.add("open"); state.open = p[ID];
      li.appendChild(detail(p));
    };
    li.appendChild(row);
    if (state.open === p[ID]) { li.classList.add("open"); li.appendChild(detail(p)); }
    return li;
  }
  function detail(p) {
    var box = el("div", "detail"), e = extraOf(p), path = pathOf(p);
    var why = el("div", "why");
    why.appendChild(el("b", "", D.fates[p[FATE]].toUpperCase()));
    why.appendChild(document.createTextNode(" " + (e.why !== undefined ? str(e.why) : decidedText(p))));
    box.appendChild(why);
    if (e.cause) {
      var ul = el("ul", "cause");
      e.cause.forEach(function (c) { ul.appendChild(el("li", "", str(c[0]) + ": " + str(c[1]))); });
      box.appendChild(ul);
    }
    var ann = {};
    function add(k, cls, text) { (ann[k] = ann[k] || []).push([cls, text]); }
    natOf(p).forEach(function (c) { add(c[3], "ann", c[0] + " " + (c[1] || "?") + " \u2192 " + (c[2] || "?")); });
    (e.marks || []).forEach(function (c) { add(c[3], "ann mark", c[0] + " " + (c[1] || "0x0") + " \u2192 " + (c[2] || "?")); });
    (e.sw || []).forEach(function (c) { add(c[0], "warnl", "! " + str(c[1])); });
    (e.sn || []).forEach(function (c) { add(c[0], "note", str(c[1])); });
    var ol = el("ol", "steps"), hook = null;
    for (var k = 0; k < path.length; k++) {
      var s = stepOf(path[k]), pl = D.places[s[0]], h = hookAt(path, k);
      if (h !== hook) { hook = h; ol.appendChild(el("li", "hk", h || "?")); }
      var li = el("li", "st" + (k === p[DEC] ? " decisive" : ""));
      li.style.paddingLeft = (Math.min(s[1], 10) * 16 + 8) + "px";
      li.appendChild(el("span", "where", pl[0] + ":" + pl[1]));
      li.appendChild(el("span", "k", pl[2] === "rule" ? " rule " + pl[3] : " " + pl[2] + " " + pl[3]));
      var text = pl[4] >= 0 ? D.rules[pl[4]][0] : null;
      if (pl[2] === "rule" && text) li.appendChild(el("span", "txt", "  " + text));
      if (pl[2] !== "rule" && s[4]) li.appendChild(el("span", "txt", "  " + s[4]));
      if (s[3]) li.appendChild(el("span", "txt", "  \u2192 " + s[3]));
      if (s[2] && (k === p[DEC] || s[2] === "drop" || s[2] === "reject")) li.appendChild(el("span", "act act-" + s[2], "  \u21d2 " + s[2].toUpperCase()));
      ol.appendChild(li);
      (ann[k] || []).forEach(function (a) {
        var x = el("li", a[0], a[1]); x.style.paddingLeft = (Math.min(s[1], 10) * 16 + 40) + "px"; ol.appendChild(x);
      });
    }
    box.appendChild(ol);
    (e.warn || []).forEach(function (w) { box.appendChild(el("div", "warnl", "warning: " + str(w))); });
    (e.notes || []).forEach(function (w) { box.appendChild(el("div", "note", str(w))); });
    return box;
  }

  // ------------------------------------------------------------------ diagram
  function drawDiagram() {
    var overlay = $("overlay"), labels = $("labels"), notes = $("flow-notes");
    overlay.textContent = ""; labels.textContent = ""; notes.textContent = "";
    var tbls = document.querySelectorAll("#diagram .tbl");
    for (var i = 0; i < tbls.length; i++) {
      tbls[i].classList.remove("visited-a", "visited-b", "decided");
      tbls[i].querySelector(".badges").textContent = "";
    }
    ["in", "out", "local"].forEach(function (n) { var x = $("node-" + n); x.classList.remove("on-a", "on-b"); });
    var labelLines = {};
    ["a", "b"].forEach(function (w, wi) {
      var id = state[w], leg = $("legend-" + w);
      if (id === null || id === undefined || !(String(id) in byId)) { leg.textContent = "none"; return; }
      var p = P[byId[String(id)]], path = pathOf(p), vs = visits(path), fate = D.fates[p[FATE]];
      leg.textContent = "#" + p[ID] + " " + tuple(p) + " \u2014 " + fate + ", " + decidedText(p);
      var hops = [], prev = null;
      if (vs.length && vs[0].hook === "PREROUTING") prev = "in";
      if (vs.length && vs[0].hook === "OUTPUT") { prev = "local"; $("node-local").classList.add("on-" + w); }
      vs.forEach(function (v, k) {
        var g = $("tbl-" + v.hook + "-" + v.table);
        if (!g) return;
        g.classList.add("visited-" + w);
        var b = g.querySelector(".badges");
        var bx = parseFloat(b.getAttribute("data-x")) + wi * 22, by = parseFloat(b.getAttribute("data-y"));
        var badge = svg("g", { "class": "badge" });
        badge.appendChild(svg("circle", { cx: bx, cy: by, r: 8, fill: w === "a" ? "#1f6feb" : "#e8590c" }));
        var t = svg("text", { x: bx, y: by + 3.5, "text-anchor": "middle" }); t.textContent = String(k + 1);
        badge.appendChild(t);
        b.appendChild(badge);
        var hook = v.hook;
        if (prev !== hook) { if (prev) hops.push(prev + ">" + hook); prev = hook; }
      });
      var last = vs.length ? vs[vs.length - 1].hook : null;
      if (last === "INPUT" && fate === "delivered") { hops.push("INPUT>local"); $("node-local").classList.add("on-" + w); }
      if (last === "POSTROUTING" && (fate === "forwarded" || fate === "sent")) { hops.push("POSTROUTING>out"); $("node-out").classList.add("on-" + w); }
      if (vs.length && vs[0].hook === "PREROUTING") $("node-in").classList.add("on-" + w);
      var off = wi === 0 ? -3 : 3;
      hops.forEach(function (hop) {
        (D.hops[hop] || []).forEach(function (eid) {
          var src = $(eid); if (!src) return;
          var pth = svg("path", { d: src.getAttribute("d"), "class": "path-" + w, "marker-end": "url(#arr-" + w + ")",
                                  transform: "translate(" + off + "," + off + ")" });
          overlay.appendChild(pth);
        });
      });
      // the deciding table of a dropped / rejected packet gets a cross
      if ((fate === "dropped" || fate === "rejected") && p[DEC] >= 0) {
        var dh = hookAt(path, p[DEC]), dt = placeOf(path[p[DEC]])[0], g2 = $("tbl-" + dh + "-" + dt);
        if (g2) {
          g2.classList.add("decided");
          var r = g2.querySelector(".tblbox"), x = parseFloat(r.getAttribute("x")) + parseFloat(r.getAttribute("width")) + 8,
              y = parseFloat(r.getAttribute("y")) + 4 + wi * 3;
          overlay.appendChild(svg("path", { d: "M" + x + "," + y + " l12,12 m0,-12 l-12,12", "class": "xmark" }));
        }
      }
      // NAT rewrites and mark changes: labelled next to their hook, and listed under the diagram
      var e = extraOf(p), changes = [];
      natOf(p).forEach(function (c) { changes.push(["nat", c]); });
      (e.marks || []).forEach(function (c) { changes.push(["mark", c]); });
      changes.forEach(function (ch) {
        var c = ch[1], k = c[3], h = k !== null && k !== undefined ? hookAt(path, k) : null;
        var pl = k !== null && k !== undefined && k < path.length ? placeOf(path[k]) : null;
        var full = c[0] + " " + (c[1] || (ch[0] === "mark" ? "0x0" : "?")) + " \u2192 " + (c[2] || "?");
        var text = w.toUpperCase() + ": " + shortChange(c[0], c[1], c[2], ch[0]);
        var li = el("li", "", w.toUpperCase() + ": " + full + (pl ? "  (" + placeText(pl) + ")" : ""));
        li.style.color = w === "a" ? "#164fb0" : "#b0430a";
        notes.appendChild(li);
        var at = h && D.labels[h];
        if (!at) return;
        var n = labelLines[h] = (labelLines[h] || 0) + 1;
        var tx = svg("text", { x: at[0], y: at[1] + (n - 1) * at[3], "text-anchor": at[2], "class": "lbl lbl-" + w });
        tx.textContent = text + (pl ? " @" + pl[0] : "");
        labels.appendChild(tx);
      });
    });
    $("diagram").setAttribute("data-a", state.a === null || state.a === undefined ? "" : String(state.a));
    $("diagram").setAttribute("data-b", state.b === null || state.b === undefined ? "" : String(state.b));
  }

  // "DST 10.0.0.1:80 -> 10.0.0.1:8080" is shown on the diagram as "DPT 80 -> 8080"
  function shortChange(what, a, b, kind) {
    a = a || (kind === "mark" ? "0x0" : "?"); b = b || "?";
    var m1 = /^(.*):(\d+)$/.exec(a), m2 = /^(.*):(\d+)$/.exec(b);
    if (m1 && m2 && (what === "DST" || what === "SRC")) {
      var port = what === "DST" ? "DPT" : "SPT";
      if (m1[1] === m2[1]) return port + " " + m1[2] + " \u2192 " + m2[2];
      if (m1[2] === m2[2]) return what + " " + m1[1] + " \u2192 " + m2[1];
    }
    return what + " " + a + " \u2192 " + b;
  }

  // ------------------------------------------------------------------ hit map
  var TCOLOR = { raw: "#8a8f98", mangle: "#9b59b6", nat: "#2f7ed8", filter: "#e0782f", security: "#16a085" };
  function hmChains() {
    var q = state.hmQ.toLowerCase(), out = [];
    for (var i = 0; i < D.chains.length; i++) {
      var c = D.chains[i];
      if (state.hmEntered && !c[6]) continue;
      if (q && (c[1] + ":" + c[2]).toLowerCase().indexOf(q) < 0) continue;
      out.push(i);
    }
    return out;
  }
  function hitColor(h, maxh) {
    var f = Math.log(1 + h) / Math.log(1 + Math.max(maxh, 1));
    var l = 78 - Math.round(f * 40);
    return "hsl(214, 72%, " + l + "%)";
  }
  function renderHitmap() {
    $("hm-entered").checked = state.hmEntered;
    var idx = hmChains(), pages = Math.max(1, Math.ceil(idx.length / HM_PAGE));
    if (state.hmPage >= pages) state.hmPage = pages - 1;
    var body = $("hitmap-list"); body.textContent = "";
    var maxh = 0;
    D.rules.forEach(function (r) { if (r[1] > maxh) maxh = r[1]; });
    var frag = document.createDocumentFragment();
    idx.slice(state.hmPage * HM_PAGE, (state.hmPage + 1) * HM_PAGE).forEach(function (ci) {
      var c = D.chains[ci], tr = el("tr", c[6] ? "" : "idle"), hit = 0, unreached = 0;
      for (var r = c[4]; r < c[4] + c[5]; r++) { if (D.rules[r][1]) hit++; if (!D.rules[r][2]) unreached++; }
      var td = el("td", "cn");
      var tag = el("span", "tbltag", c[1]); tag.style.background = TCOLOR[c[1]] || "#888";
      td.appendChild(tag);
      var a = el("a", "", c[2]); a.href = "#ruleset"; a.onclick = function (ev) { ev.preventDefault(); gotoChain(ci, -1); };
      td.appendChild(a);
      if (c[3]) td.appendChild(el("span", "count", " " + c[3]));
      tr.appendChild(td);
      tr.appendChild(el("td", "num", c[5]));
      tr.appendChild(el("td", "num", c[6]));
      tr.appendChild(el("td", "num", hit));
      tr.appendChild(el("td", "num", unreached));
      var strip = el("div", "strip"), std = el("td");
      var n = c[5], per = Math.max(1, Math.ceil(n / STRIP_MAX));
      for (var s = 0; s < n; s += per) {
        var h = 0, ev = 0, first = c[4] + s;
        for (var r2 = first; r2 < Math.min(c[4] + n, first + per); r2++) { h += D.rules[r2][1]; ev = Math.max(ev, D.rules[r2][2]); }
        var cell = el("span", "cell " + (h ? "hit" : ev ? "miss" : "unreached"));
        if (h) cell.style.background = hitColor(h, maxh);
        cell.title = c[2] + " rule " + (s + 1) + (per > 1 ? "\u2013" + Math.min(n, s + per) : "") + ": " + h + " packet(s) matched, " + ev + " got there";
        cell.setAttribute("data-rule", String(first));
        strip.appendChild(cell);
      }
      strip.onclick = function (ev2) { var t = ev2.target; if (t.hasAttribute && t.hasAttribute("data-rule")) gotoChain(ci, parseInt(t.getAttribute("data-rule"), 10)); };
      std.appendChild(strip);
      tr.appendChild(std);
      frag.appendChild(tr);
    });
    body.appendChild(frag);
    $("hm-count").textContent = idx.length + " of " + D.chains.length + " chains";
    pager($("hm-pager"), state.hmPage, pages, idx.length, "chains", function (k) { state.hmPage = k; renderHitmap(); });
  }

  // ------------------------------------------------------------------ ruleset
  var rsPages = null;
  function rulesetPages() {
    if (rsPages) return rsPages;
    rsPages = []; var cur = [], n = 0;
    D.chains.forEach(function (c, i) {
      cur.push(i); n += c[5] + 1;
      if (n >= RS_PAGE_RULES) { rsPages.push(cur); cur = []; n = 0; }
    });
    if (cur.length) rsPages.push(cur);
    return rsPages;
  }
  function renderRuleset(flash) {
    var pages = rulesetPages(), box = $("ruleset-list"); box.textContent = "";
    if (!pages.length) { box.appendChild(el("div", "empty", "no ruleset")); return; }
    if (state.rsPage >= pages.length) state.rsPage = pages.length - 1;
    var frag = document.createDocumentFragment(), lastTable = null, lastRs = null;
    pages[state.rsPage].forEach(function (ci) {
      var c = D.chains[ci];
      if (c[1] !== lastTable || c[0] !== lastRs) {
        frag.appendChild(el("div", "tb", (D.rulesets.length > 1 ? "# " + D.rulesets[c[0]] + "\n" : "") + "*" + c[1]));
        lastTable = c[1]; lastRs = c[0];
      }
      var head = el("div", "ch", ":" + c[2] + " " + (c[3] || "-"));
      head.id = "chain-" + ci;
      head.appendChild(el("span", "meta2", c[6] ? c[6] + " packet(s) entered" + (c[7] ? ", " + c[7] + " reached the end" : "") : "no traced packet entered"));
      frag.appendChild(head);
      for (var r = c[4]; r < c[4] + c[5]; r++) {
        var rule = D.rules[r], row = el("div", "r" + (rule[2] ? (rule[1] ? "" : " miss") : " unreached"));
        row.id = "rule-" + r;
        row.appendChild(el("span", "n", r - c[4] + 1));
        var h = el("span", "h");
        if (rule[1]) {
          var b = el("button", "", rule[1] + "/" + rule[2]);
          b.title = "list the packets that matched this rule";
          b.setAttribute("data-rule", String(r));
          b.onclick = function (ev) { state.rule = parseInt(ev.currentTarget.getAttribute("data-rule"), 10); state.page = 0; writeHash(); renderPackets(); $("packets").scrollIntoView(); };
          h.appendChild(b);
        } else h.appendChild(el("span", "z", rule[2] ? "0/" + rule[2] : "\u2013"));
        row.appendChild(h);
        row.appendChild(el("span", "txt", (rule[0] === null ? "(rule text unknown: no ruleset given)" : "-A " + c[2] + " " + rule[0]) + (rule[2] ? "" : "   # not reached")));
        frag.appendChild(row);
      }
    });
    box.appendChild(frag);
    pager($("rs-pager"), state.rsPage, pages.length, D.chains.length, "chains", function (k) { state.rsPage = k; renderRuleset(); });
    if (flash !== undefined && flash !== null) {
      var t = $(flash);
      if (t) { t.classList.add("flash"); t.scrollIntoView({ block: "center" }); }
    }
  }
  function gotoChain(ci, ri) {
    var pages = rulesetPages();
    for (var k = 0; k < pages.length; k++) if (pages[k].indexOf(ci) >= 0) { state.rsPage = k; break; }
    renderRuleset(ri >= 0 ? "rule-" + ri : "chain-" + ci);
  }

  // ------------------------------------------------------------------ wiring
  function applyState() { renderPackets(); drawDiagram(); }
  $("fate-chips").addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("button") : null;
    if (!b) return;
    state.fate = b.getAttribute("data-fate") || ""; state.page = 0; writeHash(); renderPackets();
  });
  var timer = null;
  $("search").addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { state.q = $("search").value; state.page = 0; writeHash(); renderPackets(); }, 150);
  });
  $("rule-filter-clear").addEventListener("click", function () { state.rule = -1; state.page = 0; writeHash(); renderPackets(); });
  $("hm-entered").addEventListener("change", function () { state.hmEntered = $("hm-entered").checked; state.hmPage = 0; renderHitmap(); });
  var hmTimer = null;
  $("hm-search").addEventListener("input", function () {
    clearTimeout(hmTimer);
    hmTimer = setTimeout(function () { state.hmQ = $("hm-search").value; state.hmPage = 0; renderHitmap(); }, 150);
  });
  window.addEventListener("hashchange", function () {
    if (writing) { writing = false; return; }
    if (readHash()) { applyState(); if (location.hash.indexOf("rule=") >= 0 || location.hash.indexOf("fate=") >= 0) $("packets").scrollIntoView(); }
  });

  readHash();
  applyState();
  renderHitmap();
  renderRuleset();
  document.body.setAttribute("data-state", "ready");
})();
