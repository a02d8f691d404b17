// GET /: the recent sessions, and a form that starts one.
"use strict";
(() => {
  const form = document.getElementById("start");
  let loaded = false;

  async function refresh() {
    const resp = await TR.api("/v1/sessions?limit=50");
    const errorEl = document.getElementById("list-error");
    if (!resp.ok) { errorEl.textContent = await TR.errorText(resp); return; }
    errorEl.textContent = "";
    const data = await resp.json();
    if (!loaded) {
      loaded = true;
      const select = document.getElementById("policy");
      for (const p of data.policies) select.append(new Option(p, p, false, p === data.default_params.policy));
      const params = Object.assign({}, data.default_params);
      delete params.policy;
      document.getElementById("params").value = JSON.stringify(params, null, 2);
      document.getElementById("profile").value = data.profile || "none: the built-in defaults";
    }
    const tbody = document.querySelector("#sessions tbody");
    const rows = data.sessions.map((s) => {
      const tr = TR.el("tr");
      tr.dataset.sessionId = s.session_id;
      const q = TR.el("td", "question");
      const a = TR.el("a", null, s.question);
      a.href = "/sessions/" + encodeURIComponent(s.session_id);
      a.title = s.question;
      q.append(a);
      const st = TR.el("td");
      st.append(TR.el("span", "status " + s.status, s.status));
      tr.append(q, TR.el("td", null, s.policy), st, TR.el("td", "ratio", TR.pct(s.srm_token_ratio)),
        TR.el("td", "age", s.requested_at ? TR.age(data.now - s.requested_at) : "–"));
      return tr;
    });
    tbody.replaceChildren(...rows);
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const errorEl = document.getElementById("start-error");
    errorEl.textContent = "";
    let params;
    try { params = JSON.parse(document.getElementById("params").value || "{}"); }
    catch (err) { errorEl.textContent = "parameters: " + err.message; return; }
    const body = {
      question: document.getElementById("question").value,
      policy: document.getElementById("policy").value,
      params: params,
    };
    const resp = await TR.api("/v1/sessions", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (resp.status !== 202) { errorEl.textContent = await TR.errorText(resp); return; }
    const { session_id } = await resp.json();
    location.href = "/sessions/" + encodeURIComponent(session_id);
  });

  refresh();
  setInterval(refresh, 3000);
})();
