// Shared by the session browser's pages: the bearer token (asked once, kept in sessionStorage) and fetch
// with it. Model text is only ever set with textContent.
"use strict";
const TR = (() => {
  const KEY = "trigreason.token";
  let waiting = null;
  function token() { return sessionStorage.getItem(KEY) || ""; }
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token()) h["Authorization"] = "Bearer " + token();
    return h;
  }
  // Resolves once the user has entered a token in the page's auth form.
  function askToken(message) {
    const form = document.getElementById("auth");
    document.getElementById("auth-error").textContent = message || "";
    form.hidden = false;
    if (!waiting) {
      waiting = new Promise((resolve) => {
        form.addEventListener("submit", (e) => {
          e.preventDefault();
          sessionStorage.setItem(KEY, document.getElementById("token").value.trim());
          form.hidden = true;
          waiting = null;
          showAuth();
          resolve();
        }, { once: true });
      });
    }
    return waiting;
  }
  function showAuth() {
    const el = document.getElementById("auth-state");
    if (el) el.textContent = token() ? "token set" : "";
  }
  // fetch with the token; a 401 asks for one and tries again.
  async function api(path, init) {
    for (;;) {
      const opts = Object.assign({}, init || {});
      opts.headers = headers(opts.headers);
      const resp = await fetch(path, opts);
      if (resp.status !== 401) return resp;
      await askToken(token() ? "that token was refused" : "this gateway needs a bearer token");
    }
  }
  async function errorText(resp) {
    try { const body = await resp.json(); return body.error.code + ": " + body.error.message; }
    catch (_) { return "HTTP " + resp.status; }
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function age(seconds) {
    if (seconds < 60) return Math.max(0, Math.round(seconds)) + " s";
    if (seconds < 3600) return Math.round(seconds / 60) + " min";
    if (seconds < 86400) return Math.round(seconds / 3600) + " h";
    return Math.round(seconds / 86400) + " d";
  }
  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %"; }
  document.addEventListener("DOMContentLoaded", showAuth);
  return { api, errorText, el, age, pct, token };
})();
