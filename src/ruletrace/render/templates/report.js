/* ruletrace report: renders the packet list, diagram paths, hit map and ruleset from #report-data.
   Every piece of data goes into the page with textContent / setAttribute, never as markup.
   The document is compact (see render/html.py and docs/report.md): packets are columns, each
   points at a variant (path, fate, deciding step, details) stored once; rule text sits in
   #report-text and is parsed the first time some text is shown. */
(function () {
  "use strict";
  var errors = [];
  window.addEventListener("error", function (e) {
    errors.push(String(e.message || e));
    document.body.setAttribute("data-errors", errors.join(" | "));
  });

  // a document element holds JSON, or gzip+base64 JSON when large (decoded asynchronously)
  function gunzip(el, done, fail) {
    if (typeof DecompressionStream === "undefined") return fail("needs a newer browser (DecompressionStream)");
    var bin = atob(el.textContent.replace(/\s+/g, "")), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    new Response(new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"))).text().then(function (t) {
      done(JSON.parse(t));
    }, function (err) { fail("could not be decoded: " + err); });
  }
  function readDoc(el, done, fail) {
    if (el.getAttribute("data-encoding") === "gzip+base64") gunzip(el, done, fail);
    else done(JSON.parse(el.textContent));
  }
  readDoc(document.getElementById("report-data"), start, function (why) {
    var box = document.getElementById("packet-list");
    box.textContent = "";
    var li = document.createElement("li"); li.className = "empty"; li.textContent = "the report data " + why; box.appendChild(li);
    document.body.setAttribute("data-state", "failed");
  });

  function start(D) {
  var SVGNS = "http://www.w3.org/2000/svg";
  var PAGE = D.page_size || 200;
  var HM_PAGE = 100, RS_PAGE_RULES = 600, STRIP_MAX = 240;

  // ------------------------------------------------------------------ the compact document
  var PK = D.packets, N = PK.v.length, IDS = PK.id;
  if (PK.id_delta) { IDS = new Array(N); var acc = 0; for (var q0 = 0; q0 < N; q0++) { acc += PK.id[q0]; IDS[q0] = acc; } }
  function str(i) { return i === null || i === undefined || i < 0 ? "" : D.strings[i]; }
  function strOrNull(i) { return i === null || i === undefined || i < 0 ? null : D.strings[i]; }
  function addr(i) { return i < 0 ? null : D.addrs[i]; }
  // rows leave out trailing "nothing" (-1 or null); padded back with -1
  function untrim(row, n) { var r = row.slice(); while (r.length < n) r.push(-1); return r; }

  // a table name two families' tables share is shown with its family ("ip same"): D.table_labels
  var TLABELS = D.table_labels || {};
  function tableLabel(rs, t) { return TLABELS[rs + "/" + t] || D.tables[t]; }
  var chains = D.chains.map(function (c, i) {
    return { i: i, rs: c[0], table: D.tables[c[1]], label: tableLabel(c[0], c[1]), name: c[2], n: c[3], policy: c.length > 4 ? c[4] : null,
             entered: c[5] || 0, fell: c[6] || 0, hits: c[7] || [], deep: c[8] || [], first: 0 };
  });
  var RULES = 0;
  chains.forEach(function (c) { c.first = RULES; RULES += c.n; });
  function chainRef(ci) {
    if (ci >= 0) return chains[ci];
    var x = D.xchains[-1 - ci];
    return { i: ci, rs: x[0], table: D.tables[x[1]], label: tableLabel(x[0], x[1]), name: x[2], n: 0, policy: null, entered: 0, fell: 0, hits: [], deep: [], first: -1 };
  }
  // per-chain rule counts, built the first time a chain is shown: hits[num], evaluated[num]
  var countCache = {};
  function countsOf(c) {
    var k = countCache[c.i];
    if (k) return k;
    var h = new Array(c.n + 2), e = new Array(c.n + 2), deep = new Array(c.n + 2), j;
    for (j = 0; j < c.n + 2; j++) { h[j] = 0; e[j] = 0; deep[j] = 0; }
    for (j = 0; j < c.hits.length; j += 2) if (c.hits[j] <= c.n) h[c.hits[j]] = c.hits[j + 1];
    for (j = 0; j < c.deep.length; j += 2) deep[Math.min(c.deep[j], c.n + 1)] += c.deep[j + 1];
    // evaluated(k) = packets whose deepest rule number in the chain is >= k
    for (var run = 0, m = c.n + 1; m >= 1; m--) { run += deep[m]; e[m] = run; }
    return (countCache[c.i] = { h: h, e: e });
  }
  var MAXH = 0;
  chains.forEach(function (c) { for (var j = 1; j < c.hits.length; j += 2) if (c.hits[j] > MAXH) MAXH = c.hits[j]; });
  // rule texts: plain JSON is parsed the first time a text is shown; gzip+base64 (large rulesets)
  // is decoded after the first render, and what shows rule text is drawn again when it is there
  var TEXT = null, TEXT_EL = document.getElementById("report-text");
  var TEXT_ASYNC = TEXT_EL.getAttribute("data-encoding") === "gzip+base64", TEXT_NOTE = "";
  function setTexts(list) { TEXT = {}; list.forEach(function (t) { TEXT[t[0]] = t[1]; }); }
  function texts() {
    if (TEXT) return TEXT;
    if (TEXT_ASYNC) return {};
    setTexts(JSON.parse(TEXT_EL.textContent));
    return TEXT;
  }
  function loadTexts(done) {
    gunzip(TEXT_EL, function (list) { setTexts(list); done(); },
           function (why) { TEXT = {}; TEXT_NOTE = "rule text " + why; done(); });
  }
  // a rule is its global index ri (chain.first + num - 1), as links and the URL name it
  var starts = chains.map(function (c) { return c.first; });
  function chainIndexOfRule(ri) {
    var lo = 0, hi = chains.length - 1, ans = -1;
    while (lo <= hi) { var mid = (lo + hi) >> 1; if (starts[mid] <= ri) { ans = mid; lo = mid + 1; } else hi = mid - 1; }
    while (ans >= 0 && chains[ans].n === 0) ans--; // empty chains share the start of the next one
    return ans;
  }
  function chainOfRule(ri) { var k = chainIndexOfRule(ri); return k >= 0 ? chains[k] : null; }
  function ruleNum(ri) { var c = chainOfRule(ri); return c ? ri - c.first + 1 : 0; }
  function ruleHits(ri) { var c = chainOfRule(ri); return c && c.entered ? countsOf(c).h[ri - c.first + 1] : 0; }
  function ruleEval(ri) { var c = chainOfRule(ri); return c && c.entered ? countsOf(c).e[ri - c.first + 1] : 0; }
  function ruleText(ri) {
    var c = chainOfRule(ri); if (!c || !c.entered) return null;
    var t = texts()[c.i]; return t ? t[ri - c.first] : null;
  }
  var placeCache = [];
  function placeAt(id) {
    var pl = placeCache[id];
    if (!pl) {
      var r = D.places[id], c = chainRef(r[0]), num = r[2], kind = D.kinds[r[1]];
      var ri = c.first >= 0 && kind === "rule" && num !== null && num >= 1 && num <= c.n ? c.first + num - 1 : -1;
      pl = placeCache[id] = { table: c.table, label: c.label, chain: c.name, kind: kind, num: num, ri: ri };
    }
    return pl;
  }
  var stepCache = [];
  function stepOf(sid) {
    var s = stepCache[sid];
    if (!s) {
      var r = untrim(D.steps[sid], 7);
      s = stepCache[sid] = { place: r[0], depth: r[1], action: str(r[2]), returned: str(r[3]), policy: str(r[4]),
                             warning: strOrNull(r[5]), note: strOrNull(r[6]) };
    }
    return s;
  }
  function placeOf(sid) { return placeAt(stepOf(sid).place); }
  var variantCache = [];
  function variant(v) {
    var x = variantCache[v];
    if (!x) {
      var r = untrim(D.variants[v], 11);
      x = variantCache[v] = { path: r[0], fate: r[1], dec: r[2], extra: r[3] >= 0 ? D.extras[r[3]] : {},
                              proto: strOrNull(r[4]), inif: strOrNull(r[5]), outif: strOrNull(r[6]), flags: strOrNull(r[7]),
                              nat: r[8] === -1 || !r[8] ? [] : r[8], physin: strOrNull(r[9]), physout: strOrNull(r[10]) };
    }
    return x;
  }
  // packet i of the list as an object (made when shown)
  function pk(i) {
    var v = variant(PK.v[i]);
    return { i: i, id: IDS[i], v: v, path: D.paths[v.path], pathId: v.path, fate: v.fate, dec: v.dec, e: v.extra,
             proto: v.proto, src: addr(PK.src[i]), sport: PK.sport[i], dst: addr(PK.dst[i]), dport: PK.dport[i],
             inif: v.inif, outif: v.outif, flags: v.flags, physin: v.physin, physout: v.physout };
  }
  var byId = null;
  function find(id) {
    if (!byId) { byId = {}; for (var i = 0; i < N; i++) { var k = String(IDS[i]); if (!(k in byId)) byId[k] = i; } }
    var key = String(id);
    return key in byId ? byId[key] : -1;
  }

  var state = { fate: "", q: "", rule: -1, page: 0, a: D.defaults.a, b: D.defaults.b, open: null,
                hmEntered: chains.length > 300, hmQ: "", hmPage: 0, rsPage: 0 };

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
  // NAT rewrites of a packet; an old value of 0 means the packet's own first address:port
  function natOf(p) {
    return p.v.nat.map(function (c) {
      var old = c[1] === 0 ? (c[0] === "SRC" ? endpoint(p.src, p.sport) : endpoint(p.dst, p.dport)) : c[1];
      return [c[0], old, c[2], c[3]];
    });
  }
  function endpoint(a, port) {
    if (!a) return "?";
    var s = String(a);
    if (port === null || port === undefined) return s;
    return s.indexOf(":") >= 0 ? "[" + s + "]:" + port : s + ":" + port;
  }
  // bridged (br_netfilter): both bridge ports known; PHYSIN alone: came in on a bridge port, then routed
  function bridged(p) { return !!(p.physin && p.physout); }
  function ifaces(p) {
    var t = (p.inif || "") + (p.outif ? " \u2192 " + p.outif : p.inif ? " \u2192" : "");
    if (bridged(p)) return "bridged " + p.physin + " \u2192 " + p.physout + (p.inif ? " (" + p.inif + ")" : "");
    if (p.physin) t += " (port " + p.physin + ")";
    else if (p.physout) t += " (port " + p.physout + ")";
    return t;
  }
  function tuple(p) { return (p.proto || "?") + " " + endpoint(p.src, p.sport) + " \u2192 " + endpoint(p.dst, p.dport) + (p.flags ? " [" + p.flags + "]" : ""); }
  function placeText(pl) {
    var n = pl.num === null ? "?" : pl.num;
    return pl.label + ":" + pl.chain + (pl.kind === "rule" ? " rule " + n : " " + pl.kind + " " + n);
  }
  function ruleKey(ri) {
    var c = chainOfRule(ri);
    return c ? c.label + ":" + c.name + ":" + (ri - c.first + 1) : String(ri);
  }
  var ruleByKey = null;
  function ruleFromKey(key) {
    if (/^\d+$/.test(key)) return parseInt(key, 10);
    var m = /^([^:]*):(.*):(\d+)$/.exec(key);
    if (!m) return -1;
    if (!ruleByKey) {  // by the table's label ("ip6 same"), and by its bare name for a link written without
      ruleByKey = {};
      chains.forEach(function (c) { var k = c.label + ":" + c.name; if (!(k in ruleByKey)) ruleByKey[k] = c; });
      chains.forEach(function (c) { var k = c.table + ":" + c.name; if (!(k in ruleByKey)) ruleByKey[k] = c; });
    }
    var c = ruleByKey[m[1] + ":" + m[2]], n = parseInt(m[3], 10);
    return c && n >= 1 && n <= c.n ? c.first + n - 1 : -1;
  }
  var decidedCache = [];
  function decidedText(p) {
    var t = decidedCache[PK.v[p.i]];
    if (t !== undefined) return t;
    var path = p.path, k = p.dec;
    if (k < 0 || k >= path.length) {
      t = p.e.last !== undefined ? "trace ends at " + str(p.e.last) : "nothing decided";
    } else {
      var s = stepOf(path[k]), pl = placeAt(s.place);
      t = pl.label + ":" + pl.chain + decidedWhere(s, pl) + (s.action && pl.kind !== "policy" ? " (" + s.action + ")" : "");
    }
    return (decidedCache[PK.v[p.i]] = t);
  }

  // what decided at a step: a built-in chain's policy, else a rule. A user chain has no policy: the
  // kernel logs its unconditional `-j DROP` as `return N` (legacy ip_tables), and that is rule N
  function decidedWhere(s, pl) {
    return pl.kind === "policy" ? " policy " + (s.policy || String(s.action || "").toUpperCase()) : " rule " + pl.num;
  }

  // the diagram's rows a path passes: [{hook, box, first step index}], repeats folded. Each step's row
  // (D.path_boxes, -1: none) is worked out by report_data.py: a native nf_tables step by its base
  // chain's hook, an iptables step by the built-in chain that names its hook
  var HOOKS = D.hooks, BOXES = D.boxes || [], PBOX = D.path_boxes || [];
  function boxOf(pi, k) { var pb = PBOX[pi]; return pb && k < pb.length ? pb[k] : -1; }
  function boxEl(b) { return b >= 0 ? document.querySelector('#diagram .tbl[data-box="' + b + '"]') : null; }
  function visits(pi) {
    var out = [], last = -1, path = D.paths[pi];
    for (var k = 0; k < path.length; k++) {
      var b = boxOf(pi, k);
      if (b < 0 || b === last) continue;
      out.push({ hook: BOXES[b][0], box: b, step: k }); last = b;
    }
    return out;
  }
  function hookAt(pi, k) {
    for (var j = k; j >= 0; j--) {
      var b = boxOf(pi, j); if (b >= 0) return BOXES[b][0];
      var up = String(placeOf(D.paths[pi][j]).chain).toUpperCase(); if (HOOKS[up]) return up;
    }
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
      else if (k === "a" && find(v) >= 0) st.a = IDS[find(v)];
      else if (k === "b" && find(v) >= 0) st.b = IDS[find(v)];
      else if (k === "packet" && find(v) >= 0) { st.open = IDS[find(v)]; st.a = st.open; }
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
        var pl = placeOf(sid), c = pl.label + ":" + pl.chain;
        if (!seen[c]) { seen[c] = 1; bits.push(c); }
        var t = pl.ri >= 0 ? ruleText(pl.ri) : null;
        if (t) bits.push(t);
      });
      s = bits.join(" ").toLowerCase();
      if (TEXT) searchCache[pi] = s;
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
        for (var k = 0; k < path.length; k++) if (placeOf(path[k]).ri === ri) { m[pi] = 1; break; }
      }
    }
    return m;
  }
  function packetText(p) {
    return ("#" + p.id + " " + D.fates[p.fate] + " " + tuple(p) + " " + (p.inif || "") + " " + (p.outif || "") + " " + decidedText(p)).toLowerCase();
  }
  function filtered() {
    var fi = state.fate ? D.fates.indexOf(state.fate) : -1;
    var terms = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    var rm = state.rule >= 0 ? pathsWithRule(state.rule) : null;
    var vfate = D.variants.map(function (v) { return v[1]; }), vpath = D.variants.map(function (v) { return v[0]; });
    var out = [], pv = PK.v;
    for (var i = 0; i < N; i++) {
      var v = pv[i];
      if (fi >= 0 && vfate[v] !== fi) continue;
      if (rm && !rm[vpath[v]]) continue;
      if (terms.length) {
        var p = pk(i), t = packetText(p), ps = null, ok = true;
        for (var j = 0; j < terms.length && ok; j++) {
          if (t.indexOf(terms[j]) >= 0) continue;
          if (ps === null) ps = pathSearch(p.pathId);
          ok = ps.indexOf(terms[j]) >= 0;
        }
        if (!ok) continue;
      }
      out.push(i);
    }
    return out;
  }

  // ------------------------------------------------------------------ packet list
  var fateCounts = null;
  function renderChips() {
    var box = $("fate-chips"); box.textContent = "";
    if (!fateCounts) {
      var perVariant = D.variants.map(function () { return 0; });
      for (var i = 0; i < N; i++) perVariant[PK.v[i]]++;
      fateCounts = D.fates.map(function () { return 0; });
      D.variants.forEach(function (v, k) { fateCounts[v[1]] += perVariant[k]; });
    }
    var all = el("button", "chip" + (state.fate ? "" : " on"), "all");
    all.appendChild(el("span", "n", N));
    all.setAttribute("data-fate", "");
    box.appendChild(all);
    D.fates.forEach(function (f, k) {
      if (!fateCounts[k]) return;
      var b = el("button", "chip" + (state.fate === f ? " on" : ""), f);
      b.appendChild(el("span", "n", fateCounts[k]));
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
      var t = ruleText(state.rule);
      $("rule-filter-text").textContent = "hit " + ruleKey(state.rule).replace(/:(\d+)$/, " rule $1") + (t ? ": " + t : "");
    } else rf.hidden = true;
    if ($("search").value !== state.q) $("search").value = state.q;
    var idx = filtered();
    var pages = Math.max(1, Math.ceil(idx.length / PAGE));
    if (state.page >= pages) state.page = pages - 1;
    var list = $("packet-list"); list.textContent = "";
    var from = state.page * PAGE, to = Math.min(idx.length, from + PAGE);
    var frag = document.createDocumentFragment();
    for (var k = from; k < to; k++) frag.appendChild(packetRow(pk(idx[k])));
    list.appendChild(frag);
    if (!idx.length) list.appendChild(el("li", "empty", "no packet matches these filters"));
    var go = function (n) { state.page = n; writeHash(); renderPackets(); };
    pager($("pager-top"), state.page, pages, idx.length, "packets", go);
    pager($("pager-bottom"), state.page, pages, idx.length, "packets", go);
    list.setAttribute("data-count", String(idx.length));
  }
  function packetRow(p) {
    var fate = D.fates[p.fate];
    var li = el("li", "pkt fate-" + fate);
    li.setAttribute("data-id", String(p.id));
    li.setAttribute("data-fate", fate);
    if (p.id === state.a) li.classList.add("sel-a");
    if (p.id === state.b) li.classList.add("sel-b");
    var row = el("div", "row");
    row.appendChild(el("span", "tw", "\u25b6"));
    row.appendChild(el("span", "pid", "#" + p.id));
    var fb = el("span", "fate fate-" + fate, fate); fb.title = fate; row.appendChild(el("span", "fcell")).appendChild(fb);
    var tu = el("span", "tuple", tuple(p)); tu.title = tuple(p); row.appendChild(tu);
    var ifs = el("span", "iface", ifaces(p)); ifs.title = ifaces(p); row.appendChild(ifs);
    row.appendChild(el("span", "dec", decidedText(p)));
    var ab = el("span", "ab");
    ["a", "b"].forEach(function (w) {
      var b = el("button", state[w] === p.id ? "on-" + w : "", w.toUpperCase());
      b.title = "show as " + w.toUpperCase() + " on the diagram";
      b.onclick = function (ev) { ev.stopPropagation(); state[w] = state[w] === p.id ? null : p.id; drawDiagram(); renderPackets(); };
      ab.appendChild(b);
    });
    row.appendChild(ab);
    row.onclick = function () {
      if (li.classList.contains("open")) { li.classList.remove("open"); var d = li.querySelector(".detail"); if (d) d.remove(); state.open = null; return; }
      li.classList.add("open"); state.open = p.id;
      li.appendChild(detail(p));
    };
    li.appendChild(row);
    if (state.open === p.id) { li.classList.add("open"); li.appendChild(detail(p)); }
    return li;
  }
  function detail(p) {
    var box = el("div", "detail"), e = p.e, path = p.path;
    var why = el("div", "why");
    why.appendChild(el("b", "fate-word fate-" + D.fates[p.fate], D.fates[p.fate].toUpperCase()));
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
    var ol = el("ol", "steps"), hook = null;
    for (var k = 0; k < path.length; k++) {
      var s = stepOf(path[k]), pl = placeAt(s.place), h = hookAt(p.pathId, k);
      if (s.warning !== null) add(k, "warnl", "! " + s.warning);
      if (s.note !== null) add(k, "note", s.note);
      if (h !== hook) { hook = h; ol.appendChild(el("li", "hk", h || "?")); }
      var li = el("li", "st" + (k === p.dec ? " decisive" : ""));
      li.style.paddingLeft = (Math.min(s.depth, 10) * 16 + 8) + "px";
      li.appendChild(el("span", "where", pl.label + ":" + pl.chain));
      li.appendChild(el("span", "k", pl.kind === "rule" ? " rule " + pl.num : " " + pl.kind + " " + pl.num));
      var text = pl.ri >= 0 ? ruleText(pl.ri) : null;
      if (pl.kind === "rule" && text) li.appendChild(el("span", "txt", "  " + text));
      if (pl.kind !== "rule" && s.policy) li.appendChild(el("span", "txt", "  " + s.policy));
      if (s.returned) li.appendChild(el("span", "txt", "  \u2192 " + s.returned));
      if (s.action && (k === p.dec || s.action === "drop" || s.action === "reject")) li.appendChild(el("span", "act act-" + s.action, "  \u21d2 " + s.action.toUpperCase()));
      ol.appendChild(li);
      (ann[k] || []).forEach(function (a) {
        var x = el("li", a[0], a[1]); x.style.paddingLeft = (Math.min(s.depth, 10) * 16 + 40) + "px"; ol.appendChild(x);
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
    var labelLines = {}, W = $("diagram").viewBox.baseVal.width || 1040;
    ["a", "b"].forEach(function (w, wi) {
      var id = state[w], leg = $("legend-" + w);
      var at0 = id === null || id === undefined ? -1 : find(id);
      if (at0 < 0) { leg.textContent = "none"; return; }
      var p = pk(at0), path = p.path, vs = visits(p.pathId), fate = D.fates[p.fate];
      leg.textContent = "#" + p.id + " " + tuple(p) + " \u2014 ";
      leg.appendChild(el("span", "fate-word fate-" + fate, fate));
      leg.appendChild(document.createTextNode(", " + decidedText(p) + (bridged(p) ? " (bridged)" : "")));
      var hops = [], prev = null;
      if (vs.length && vs[0].hook === "PREROUTING") prev = "in";
      if (vs.length && vs[0].hook === "OUTPUT") { prev = "local"; $("node-local").classList.add("on-" + w); }
      vs.forEach(function (v, k) {
        var g = boxEl(v.box);
        if (!g) return;
        g.classList.add("visited-" + w);
        var b = g.querySelector(".badges");
        // right of the table's name (a long nf_tables name reaches past the usual place)
        var nb = g.querySelector(".tname").getBBox();
        var bx = Math.max(parseFloat(b.getAttribute("data-x")), nb.x + nb.width + 9) + wi * 18, by = parseFloat(b.getAttribute("data-y"));
        var badge = svg("g", { "class": "badge badge-" + w });
        badge.appendChild(svg("circle", { cx: bx, cy: by, r: 7, fill: w === "a" ? "#1f6feb" : "#e8590c" }));
        var t = svg("text", { x: bx, y: by + 3.5, "text-anchor": "middle" }); t.textContent = String(k + 1);
        badge.appendChild(t);
        b.appendChild(badge);
        var hook = v.hook;
        if (prev !== hook) {
          var hop = prev + ">" + hook;
          if (bridged(p) && (hop === "PREROUTING>FORWARD" || hop === "null>FORWARD")) hop = (prev || "in") + ">FORWARD@bridge";
          if (prev || hop.indexOf("@bridge") > 0) hops.push(hop);
          prev = hook;
        }
      });
      var last = vs.length ? vs[vs.length - 1].hook : null;
      if (last === "INPUT" && fate === "delivered") { hops.push("INPUT>local"); $("node-local").classList.add("on-" + w); }
      if (last === "POSTROUTING" && (fate === "forwarded" || fate === "sent")) { hops.push("POSTROUTING>out"); $("node-out").classList.add("on-" + w); }
      if (vs.length && (vs[0].hook === "PREROUTING" || bridged(p))) $("node-in").classList.add("on-" + w);
      var off = wi === 0 ? -3 : 3;
      hops.forEach(function (hop) {
        (D.hops[hop] || []).forEach(function (eid) {
          var src = $(eid); if (!src) return;
          var pth = svg("path", { d: src.getAttribute("d"), "class": "path-" + w + (hop.indexOf("@bridge") > 0 ? " bridged" : ""), "marker-end": "url(#arr-" + w + ")",
                                  transform: "translate(" + off + "," + off + ")" });
          overlay.appendChild(pth);
        });
      });
      if (bridged(p)) {
        // A's label above the bridge edge, B's between the edge and the boxes (above A's it was cut off)
        var bl = D.bridge_label, btx = svg("text", { x: bl[0], y: wi === 0 ? bl[1] : bl[1] + 20, "class": "lbl-bridge lbl-" + w });
        btx.textContent = w.toUpperCase() + ": bridged " + p.physin + " \u2192 " + p.physout + (p.inif ? " on " + p.inif : "");
        labels.appendChild(btx);
        var bli = el("li", "", w.toUpperCase() + ": bridged from port " + p.physin + " to port " + p.physout +
                     (p.inif ? " of " + p.inif : "") + " (br_netfilter: PHYSIN/PHYSOUT), not routed");
        bli.style.color = w === "a" ? "#164fb0" : "#b0430a";
        notes.appendChild(bli);
      }
      // the deciding table of a dropped / rejected packet gets a cross, labelled with the deciding rule
      if ((fate === "dropped" || fate === "rejected") && p.dec >= 0 && p.dec < path.length) {
        var ds = stepOf(path[p.dec]), dpl = placeAt(ds.place);
        var g2 = boxEl(boxOf(p.pathId, p.dec));
        if (g2) {
          g2.classList.add("decided");
          var r = g2.querySelector(".tblbox"), rx = parseFloat(r.getAttribute("x")), rw = parseFloat(r.getAttribute("width")),
              ry = parseFloat(r.getAttribute("y")), rh = parseFloat(r.getAttribute("height"));
          var x = rx + rw + 8, y = ry + 4 + wi * 3;
          overlay.appendChild(svg("path", { d: "M" + x + "," + y + " l12,12 m0,-12 l-12,12", "class": "xmark fate-" + fate }));
          var xl = svg("text", { x: x + 16, y: ry + 15 + wi * 13, "class": "xlabel fate-" + fate + " xlabel-" + w });
          xl.textContent = w.toUpperCase() + ": " + dpl.chain + decidedWhere(ds, dpl);
          var full = svg("title", {}); full.textContent = decidedText(p); xl.appendChild(full);
          labels.appendChild(xl);
          if (xl.getBBox().x + xl.getBBox().width > W - 2) {  // no room on the right: under the table, right-aligned
            xl.setAttribute("x", String(W - 4)); xl.setAttribute("text-anchor", "end");
            xl.setAttribute("y", String(ry + rh + 12 + wi * 13));
          }
        }
      }
      // NAT rewrites and mark changes: labelled next to their hook, and listed under the diagram
      var e = p.e, changes = [];
      natOf(p).forEach(function (c) { changes.push(["nat", c]); });
      (e.marks || []).forEach(function (c) { changes.push(["mark", c]); });
      changes.forEach(function (ch) {
        var c = ch[1], k = c[3], h = k !== null && k !== undefined ? hookAt(p.pathId, k) : null;
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
        tx.textContent = text + (pl ? " @" + pl.label : "");
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
    for (var i = 0; i < chains.length; i++) {
      var c = chains[i];
      if (state.hmEntered && !c.entered) continue;
      if (q && (c.label + ":" + c.name).toLowerCase().indexOf(q) < 0) continue;
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
    var frag = document.createDocumentFragment();
    idx.slice(state.hmPage * HM_PAGE, (state.hmPage + 1) * HM_PAGE).forEach(function (ci) {
      var c = chains[ci], tr = el("tr", c.entered ? "" : "idle"), hit = c.hits.length / 2, unreached = c.n;
      var k = c.entered ? countsOf(c) : null;
      if (k) { unreached = 0; for (var r = 1; r <= c.n; r++) if (!k.e[r]) unreached++; }
      var td = el("td", "cn");
      var tag = el("span", "tbltag", c.label); tag.style.background = TCOLOR[c.table] || "#888";
      td.appendChild(tag);
      var a = el("a", "", c.name); a.href = "#ruleset"; a.onclick = function (ev) { ev.preventDefault(); gotoChain(ci, -1); };
      td.appendChild(a);
      if (c.policy) td.appendChild(el("span", "count", " " + c.policy));
      tr.appendChild(td);
      tr.appendChild(el("td", "num", c.n));
      tr.appendChild(el("td", "num", c.entered));
      tr.appendChild(el("td", "num", hit));
      tr.appendChild(el("td", "num", unreached));
      var strip = el("div", "strip"), std = el("td");
      var n = c.n, per = Math.max(1, Math.ceil(n / STRIP_MAX));
      for (var s = 0; s < n; s += per) {
        var h = 0, ev = 0;
        if (k) for (var r2 = s + 1; r2 <= Math.min(n, s + per); r2++) { h += k.h[r2]; ev = Math.max(ev, k.e[r2]); }
        var cell = el("span", "cell " + (h ? "hit" : ev ? "miss" : "unreached"));
        if (h) cell.style.background = hitColor(h, MAXH);
        cell.title = c.name + " rule " + (s + 1) + (per > 1 ? "\u2013" + Math.min(n, s + per) : "") + ": " + h + " packet(s) matched, " + ev + " got there";
        cell.setAttribute("data-rule", String(c.first + s));
        strip.appendChild(cell);
      }
      strip.onclick = function (ev2) { var t = ev2.target; if (t.hasAttribute && t.hasAttribute("data-rule")) gotoChain(ci, parseInt(t.getAttribute("data-rule"), 10)); };
      std.appendChild(strip);
      tr.appendChild(std);
      frag.appendChild(tr);
    });
    body.appendChild(frag);
    $("hm-count").textContent = idx.length + " of " + chains.length + " chains";
    pager($("hm-pager"), state.hmPage, pages, idx.length, "chains", function (k2) { state.hmPage = k2; renderHitmap(); });
  }

  // ------------------------------------------------------------------ ruleset
  // a chain no packet entered counts one line on a page: its rules are not in the page
  var rsPages = null;
  function rulesetPages() {
    if (rsPages) return rsPages;
    rsPages = []; var cur = [], n = 0;
    chains.forEach(function (c, i) {
      cur.push(i); n += (c.entered ? c.n : 0) + 1;
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
      var c = chains[ci];
      if (c.table !== lastTable || c.rs !== lastRs) {
        frag.appendChild(el("div", "tb", (D.rulesets.length > 1 ? "# " + D.rulesets[c.rs] + "\n" : "") + "*" + c.table));
        lastTable = c.table; lastRs = c.rs;
      }
      var head = el("div", "ch", ":" + c.name + " " + (c.policy || "-"));
      head.id = "chain-" + ci;
      head.appendChild(el("span", "meta2", c.entered ? c.entered + " packet(s) entered" + (c.fell ? ", " + c.fell + " reached the end" : "")
        : c.n + " rule" + (c.n === 1 ? "" : "s") + ": no packet reached this chain (rule text left out of the report)"));
      frag.appendChild(head);
      if (!c.entered) return;
      var k = countsOf(c), tx = texts()[ci] || [];
      for (var num = 1; num <= c.n; num++) {
        var r = c.first + num - 1, hits = k.h[num], ev = k.e[num], text = tx[num - 1];
        var row = el("div", "r" + (ev ? (hits ? "" : " miss") : " unreached"));
        row.id = "rule-" + r;
        row.appendChild(el("span", "n", num));
        var h = el("span", "h");
        if (hits) {
          var b = el("button", "", hits + "/" + ev);
          b.title = "list the packets that matched this rule";
          b.setAttribute("data-rule", String(r));
          b.onclick = function (e2) { state.rule = parseInt(e2.currentTarget.getAttribute("data-rule"), 10); state.page = 0; writeHash(); renderPackets(); $("packets").scrollIntoView(); };
          h.appendChild(b);
        } else h.appendChild(el("span", "z", ev ? "0/" + ev : "\u2013"));
        row.appendChild(h);
        var missing = !TEXT ? "(rule text loading\u2026)" : TEXT_NOTE ? "(" + TEXT_NOTE + ")" : "(rule text unknown: no ruleset given)";
        row.appendChild(el("span", "txt", (text === null || text === undefined ? missing : "-A " + c.name + " " + text) + (ev ? "" : "   # not reached")));
        frag.appendChild(row);
      }
    });
    box.appendChild(frag);
    pager($("rs-pager"), state.rsPage, pages.length, chains.length, "chains", function (k3) { state.rsPage = k3; renderRuleset(); });
    if (flash !== undefined && flash !== null) {
      var t = $(flash);
      if (t) { t.classList.add("flash"); t.scrollIntoView({ block: "center" }); }
    }
  }
  function gotoChain(ci, ri) {
    var pages = rulesetPages();
    for (var k = 0; k < pages.length; k++) if (pages[k].indexOf(ci) >= 0) { state.rsPage = k; break; }
    renderRuleset(ri >= 0 && chains[ci].entered ? "rule-" + ri : "chain-" + ci);
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
  if (TEXT_ASYNC) setTimeout(function () {
    loadTexts(function () {
      renderRuleset(); renderPackets();
      document.body.setAttribute("data-text", TEXT_NOTE ? "failed" : "ready");
    });
  }, 0);
  else document.body.setAttribute("data-text", "ready");
  // milliseconds from navigation start to here (what bench/bench_report.py reads)
  document.body.setAttribute("data-ready-ms", String(Math.round(performance.now())));
  }
})();
