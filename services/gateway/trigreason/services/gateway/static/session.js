// GET /sessions/{id}: the session's events (GET /v1/sessions/{id}/events) read with fetch streaming, so
// the bearer token goes in a header; after a dropped connection it resumes with Last-Event-ID. Each step
// index is drawn once (the gateway sends each once; the page keys steps by index as well).
"use strict";
(() => {
  const sessionId = decodeURIComponent(location.pathname.split("/").pop());
  const $ = (id) => document.getElementById(id);
  const state = {
    lastId: "", ended: false, requestedAt: 0, params: null, hesitation: null, policies: {},
    steps: new Map(),       // index -> <li>
    accepted: new Map(),    // step index -> accepted verdict
    drafts: new Map(),      // step index -> [replace verdicts]
    tokens: { srm: 0, lrm: 0 }, lrmCalls: 0, wasted: 0, lastAt: 0,
  };
  $("session-id").textContent = sessionId;
  document.title = "TrigReason session " + sessionId;

  function setStatus(s) { const el = $("status"); el.textContent = s; el.className = "status " + s; }

  function hesitationRegex() {
    if (state.hesitation !== null) return state.hesitation;
    const words = ((state.params && state.params.hesitation) || []).map((w) => w.trim()).filter(Boolean);
    words.sort((a, b) => b.length - a.length);
    const esc = (w) => w.split(/\s+/).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("\\s+");
    state.hesitation = words.length ? new RegExp("(?<![\\p{L}\\p{N}_])(?:" + words.map(esc).join("|") + ")(?![\\p{L}\\p{N}_])", "giu") : null;
    return state.hesitation;
  }

  // text with the hesitation words in <mark>: text nodes only, never HTML.
  function textWithMarks(parent, text, highlight) {
    const re = highlight ? hesitationRegex() : null;
    if (!re) { parent.append(document.createTextNode(text)); return; }
    let last = 0;
    for (const m of text.matchAll(re)) {
      parent.append(document.createTextNode(text.slice(last, m.index)));
      parent.append(TR.el("mark", "hes", m[0]));
      last = m.index + m[0].length;
    }
    parent.append(document.createTextNode(text.slice(last)));
  }

  function badge(kind, text, title) {
    const b = TR.el("span", "badge " + kind, text);
    b.dataset.badge = kind;
    if (title) b.title = title;
    return b;
  }

  function runOf(v) {
    const ctx = v.candidate.context;
    const before = ctx ? ctx.hesitation_run || 0 : 0;
    return v.hesitates ? before + 1 : 0;
  }

  // The likelihood policy's statistic of the LRM's log-probabilities against its threshold.
  function scoreText(v, verdict) {
    const p = state.params || {};
    const stat = v.score_stat <= -1e8 ? "-∞" : v.score_stat.toFixed(p.statistic === "low_share" ? 2 : 3);
    const above = p.statistic === "low_share";
    const op = verdict === "unlikely" ? (above ? " > " : " < ") : (above ? " ≤ " : " ≥ ");
    return "LRM " + (p.statistic || "score") + " " + stat + op + v.score_threshold + (verdict === "unlikely" ? ": unlikely" : "");
  }

  // Badge texts are the policy registry's templates (GET /v1/policies): "{name}" or "{name:.2f}" of the
  // verdict's fields (r_s, judge_score, run) and the session's parameters.
  function fill(template, v) {
    const values = Object.assign({}, state.params || {}, { r_s: v.r_s, judge_score: v.judge_score, run: runOf(v) });
    return template.replace(/\{(\w+)(?::\.(\d+)f)?\}/g, (_m, name, digits) => {
      const x = values[name];
      if (x === undefined || x === null) return "?";
      if (name === "judge_score" && x < 0) return "no score";
      return digits !== undefined && typeof x === "number" ? x.toFixed(Number(digits)) : String(x);
    });
  }

  function policyInfo() {
    return (state.params && state.policies[state.params.policy]) || {};
  }

  // The badge that says why a verdict replaced an SRM draft.
  function reasonBadge(v) {
    const template = (policyInfo().badges || {})[v.reason];
    if (template) return badge(String(v.reason), fill(template, v));
    if (v.score_stat !== null && v.score_stat !== undefined) {  // a scoring policy's statistic
      return badge(String(v.reason), scoreText(v, "unlikely"), "LRM log-probabilities of the step's " + v.scored_tokens + " tokens");
    }
    return badge(String(v.reason), String(v.reason));
  }

  function heatStrip(candidate) {
    const lps = candidate.step.token_logprobs || [];
    const texts = candidate.step.token_texts || [];
    const strip = TR.el("div", "heat");
    strip.title = "per-token perplexity";
    lps.forEach((lp, i) => {
      const ppl = Math.exp(-lp);
      const cell = TR.el("span", "tok");
      // green (perplexity 1) to red (perplexity 10 or more), on a log scale
      const x = Math.min(1, Math.max(0, Math.log(Math.max(ppl, 1)) / Math.log(10)));
      cell.style.background = "hsl(" + Math.round(120 * (1 - x)) + ", 70%, 45%)";
      cell.dataset.ppl = ppl.toFixed(3);
      cell.title = JSON.stringify(texts[i] === undefined ? "" : texts[i]) + " perplexity " + ppl.toFixed(2);
      strip.append(cell);
    });
    return strip;
  }

  function draftBox(v) {
    const d = TR.el("div", "draft");
    d.dataset.stepIndex = v.step_index;
    const meta = TR.el("div", "meta");
    meta.append(reasonBadge(v));
    d.append(meta);
    const body = TR.el("del");
    textWithMarks(body, v.candidate.step.text, v.hesitates);
    d.append(body);
    return d;
  }

  function onCommitted(c) {
    if (state.steps.has(c.index)) return;  // a step is drawn once
    state.tokens[c.role] += c.tokens;
    const li = TR.el("li", "step " + c.role);
    li.dataset.index = c.index;
    li.dataset.role = c.role;
    const body = TR.el("div", "body");
    const meta = TR.el("div", "meta", "#" + c.index + " " + c.role.toUpperCase() + " · " + c.tokens + " tokens ");
    if (c.trigger === "priming") meta.append(badge("priming", "priming"));
    // The SRM wrote this step because the cloud did not answer (on_cloud_unavailable=srm).
    if (c.trigger === "cloud_unavailable") meta.append(badge("cloud_unavailable", "SRM alone: cloud unreachable"));
    const v = state.accepted.get(c.index);
    const drafts = state.drafts.get(c.index) || [];
    if (c.role === "lrm" && c.trigger && c.trigger !== "priming" && !drafts.length) {
      meta.append(badge(c.trigger, c.trigger));  // the later steps of an LRM run
    }
    if (c.role === "srm" && v) {
      const accept = policyInfo().accept_badge;
      if (accept) meta.append(badge(accept[0], fill(accept[1], v)));
      if (v.score_stat !== null && v.score_stat !== undefined) {
        meta.append(badge("likely", scoreText(v, "likely"), "LRM log-probabilities of the step's " + v.scored_tokens + " tokens"));
      }
      if (v.hesitates) meta.append(badge("rs", "hesitation run " + runOf(v)));
    }
    body.append(meta);
    const text = TR.el("div", "text");
    textWithMarks(text, c.text, c.role === "srm" && v && v.hesitates);
    body.append(text);
    if (c.role === "srm" && v) body.append(heatStrip(v.candidate));
    li.append(body);
    if (drafts.length) {
      const side = TR.el("div", "drafts");
      for (const d of drafts) {
        const box = draftBox(d);
        box.append(heatStrip(d.candidate));
        side.append(box);
      }
      li.append(side);
    }
    // in index order, whatever order they come in
    let before = null;
    for (const [i, other] of state.steps) if (i > c.index && (!before || i < Number(before.dataset.index))) before = other;
    $("steps").insertBefore(li, before);
    state.steps.set(c.index, li);
    $("pending").textContent = "";
    totals();
  }

  function totals(stats) {
    const committed = state.tokens.srm + state.tokens.lrm;
    if (stats) {
      $("t-ratio").textContent = TR.pct(stats.srm_token_ratio);
      $("t-lrm-calls").textContent = stats.lrm_calls;
      $("t-wasted").textContent = stats.srm_wasted_tokens;
      $("t-wall").textContent = stats.wall_s.toFixed(1) + " s";
      return;
    }
    $("t-ratio").textContent = committed ? TR.pct(state.tokens.srm / committed) : "–";
    $("t-lrm-calls").textContent = state.lrmCalls;
    $("t-wasted").textContent = state.wasted;
    if (state.requestedAt && state.lastAt) $("t-wall").textContent = Math.max(0, state.lastAt - state.requestedAt).toFixed(1) + " s";
  }

  function onEvent(kind, data) {
    if (typeof data.at === "number") state.lastAt = Math.max(state.lastAt, data.at);
    switch (kind) {
      case "requested":
        // Flat, as in v1: the common parameters and the policy's own (policy_params).
        state.params = Object.assign({}, data.params || {}, (data.params || {}).policy_params || {});
        state.requestedAt = data.requested_at || 0;
        $("question").textContent = data.question;
        // The conversation before the question: context the models read, apart from the steps.
        (data.messages || []).forEach((t) => {
          const li = TR.el("li", "turn " + t.role);
          li.append(TR.el("span", "turn-role", t.role), TR.el("div", "turn-text", t.content));
          $("conversation").append(li);
        });
        $("conversation").hidden = !(data.messages || []).length;
        $("policy").textContent = "policy " + state.params.policy;
        // The policy's own parameters, as the registry lists them.
        $("params").textContent = ((policyInfo().params) || [])
          .filter((p) => !Array.isArray(state.params[p.name]))
          .map((p) => "· " + p.name + " " + state.params[p.name]).join(" ");
        setStatus("queued");
        break;
      case "srm_step":
        setStatus("running");
        $("pending").textContent = "SRM wrote step " + data.step_index + "; waiting for its verdict…";
        break;
      case "lrm_step":
        setStatus("running");
        state.lrmCalls += 1;
        break;
      case "judged":
        state.lrmCalls += 1;
        break;
      case "verdict":
        if (data.decision === "replace") {
          const list = state.drafts.get(data.step_index) || [];
          list.push(data);
          state.drafts.set(data.step_index, list);
          state.wasted += (data.candidate.step.token_logprobs || []).length;
          $("pending").textContent = "step " + data.step_index + " goes to the LRM (" + data.reason + ")…";
        } else {
          state.accepted.set(data.step_index, data);
        }
        break;
      case "committed":
        setStatus("running");
        onCommitted(data);
        break;
      case "finished":
      case "failed":
        state.ended = true;
        setStatus(kind);
        $("end").hidden = false;
        if (kind === "finished") {
          $("answer").textContent = data.answer === null ? "(no answer)" : data.answer;
          $("end-reason").textContent = data.reason + " after " + data.steps + " steps";
        } else {
          $("answer").textContent = "failed";
          $("end-reason").textContent = data.code + ": " + data.message;
        }
        $("pending").textContent = "";
        totals(data.stats);
        return;
      default:
        break;
    }
    totals();
  }

  // One SSE connection; returns when the stream ends.
  async function stream() {
    const headers = { Accept: "text/event-stream" };
    if (state.lastId) headers["Last-Event-ID"] = state.lastId;
    const resp = await TR.api("/v1/sessions/" + encodeURIComponent(sessionId) + "/events", { headers });
    if (!resp.ok) {
      const msg = await TR.errorText(resp);
      if (resp.status === 404 || resp.status === 400) { state.ended = true; setStatus("unknown"); }
      throw new Error(msg);
    }
    $("stream-error").textContent = "";
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let ev = { id: "", event: "message", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, "");
        buf = buf.slice(nl + 1);
        if (line === "") {
          if (ev.data.length) {
            onEvent(ev.event, JSON.parse(ev.data.join("\n")));
            if (ev.id) state.lastId = ev.id;  // after drawing it: a reconnect resumes after this one
          }
          ev = { id: "", event: "message", data: [] };
        } else if (!line.startsWith(":")) {
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i);
          const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (field === "data") ev.data.push(val);
          else if (field === "id") ev.id = val;
          else if (field === "event") ev.event = val;
        }
      }
    }
  }

  async function run() {
    while (!state.ended) {
      try { await stream(); }
      catch (err) { $("stream-error").textContent = "stream: " + err.message + (state.ended ? "" : "; reconnecting"); }
      if (!state.ended) await new Promise((r) => setTimeout(r, 1000));
    }
  }

  async function trace() {
    const resp = await TR.api("/v1/sessions/" + encodeURIComponent(sessionId) + "/trace");
    if (!resp.ok) return;
    const t = await resp.json();
    if (t.url) { const a = $("trace"); a.href = t.url; a.title = "trace " + t.trace_id; a.hidden = false; }
  }

  async function policies() {
    const resp = await TR.api("/v1/policies");
    if (!resp.ok) return;
    for (const p of (await resp.json()).policies) state.policies[p.name] = p;
  }

  setInterval(() => { if (!state.ended && state.requestedAt) { state.lastAt = Math.max(state.lastAt, Date.now() / 1000); totals(); } }, 1000);
  policies().finally(run);  // the badges need the registry's templates before the first event
  trace();
})();
