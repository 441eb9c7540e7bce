// The web page of `manage_tasks serve`: a single-page app over /api/v1.
//
// Pages (hash routes): #/tasks, #/tasks/<name> (a form made from the task's
// input schema), #/runs/<id> (live state and log), #/runs?task=&state=&since=
// (history with bulk cancel and retry).
//
// Everything a task prints or returns is untrusted: the DOM is built with
// createElement and textContent only, never from HTML strings, and names and
// ids put in URLs are encodeURIComponent'ed. The server's CSP allows no
// inline script or style and no eval.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "task-executor.token";
const STATES = ["queued", "running", "completed", "failed", "cancelled"];
const ENDED = new Set(["completed", "failed", "cancelled"]);

// ---------------------------------------------------------------- DOM

// h("div", {class: "x", text: "y", onclick: fn}, child, "text", …)
function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = String(v);
    else if (k === "value") e.value = v;
    else if (k === "checked") e.checked = !!v;
    else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else e.setAttribute(k, String(v));
  }
  append(e, children);
  return e;
}

function append(parent, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    parent.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return parent;
}

function clear(e) {
  while (e.firstChild) e.removeChild(e.firstChild);
  return e;
}

function enc(s) {
  return encodeURIComponent(String(s));
}

function pretty(v) {
  return JSON.stringify(v, null, 2);
}

function shortId(id) {
  return String(id).slice(0, 8);
}

function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (isNaN(d)) return String(iso);
  const now = new Date();
  const sameDay = d.toDateString() === now.toDateString();
  return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
}

function ago(iso) {
  if (!iso) return "";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  if (!isFinite(s)) return "";
  if (s < 5) return "just now";
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s";
  const m = Math.floor(ms / 60000);
  const s = Math.round((ms % 60000) / 1000);
  return m + " min " + s + " s";
}

function timeEl(iso) {
  return h("time", { datetime: iso || null, title: iso || null, text: time(iso) });
}

function badge(run) {
  const cls = "badge state-" + run.state + (run.state === "completed" && !run.success ? " unsuccessful" : "");
  let label = run.state;
  if (run.state === "completed" && !run.success && run.status !== null && run.status !== undefined) {
    label = "completed · status " + run.status;
  }
  if (run.cancel_requested && !ENDED.has(run.state)) label += " · cancelling";
  return h("span", { class: cls, "data-state": run.state, text: label });
}

function notice(kind, ...children) {
  return h("div", { class: "notice " + kind, role: kind === "error" ? "alert" : "status" }, ...children);
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : "HTTP " + status);
    this.status = status;
    this.kind = (error && error.kind) || "http_" + status;
    this.violations = (error && error.violations) || [];
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers(extra) {
  const hs = Object.assign({ Accept: "application/json" }, extra || {});
  const t = token();
  if (t) hs.Authorization = "Bearer " + t;
  return hs;
}

// Calls the API; resolves to the JSON body, rejects with an ApiError.
async function api(method, path, body, signal) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(API + path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, { kind: "network", message: "the server cannot be reached (" + e.message + ")" });
  }
  const text = await r.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = { error: { kind: "bad_response", message: text.slice(0, 300) } };
    }
  }
  if (r.status === 401) needToken(data && data.error);
  if (!r.ok) throw new ApiError(r.status, data && data.error);
  return data;
}

function errorText(e) {
  if (e instanceof ApiError) return e.kind + ": " + e.message;
  return String(e && e.message ? e.message : e);
}

function errorNotice(e) {
  const box = notice("error", errorText(e));
  if (e instanceof ApiError && e.violations.length) {
    box.appendChild(h("ul", null, e.violations.map((v) => h("li", { text: (v.pointer || "/") + ": " + v.message }))));
  }
  return box;
}

// Reads a server-sent event stream with fetch (EventSource cannot send an
// Authorization header), calling onEvent({event, data, id}) per event and
// resuming with Last-Event-ID after a dropped connection, until the signal
// aborts or onEvent returns "stop". onStatus(text) tells how it is going.
async function follow(path, signal, onEvent, onStatus) {
  let lastId = null;
  let failures = 0;
  while (!signal.aborted) {
    const extra = { Accept: "text/event-stream" };
    if (lastId !== null) extra["Last-Event-ID"] = lastId;
    let stopped = false;
    try {
      const r = await fetch(API + path, { headers: headers(extra), signal, cache: "no-store" });
      if (r.status === 401) {
        const data = await r.json().catch(() => null);
        needToken(data && data.error);
        onStatus("sign in to follow");
        return;
      }
      if (!r.ok) {
        const data = await r.json().catch(() => null);
        throw new ApiError(r.status, data && data.error);
      }
      failures = 0;
      onStatus("live");
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      let ev = { event: "message", data: [], id: null };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + (buf[nl] === "\r" && buf[nl + 1] === "\n" ? 2 : 1));
          if (line === "") {
            if (ev.data.length) {
              if (ev.id !== null) lastId = ev.id;
              if (onEvent({ event: ev.event, data: ev.data.join("\n"), id: ev.id }) === "stop") {
                stopped = true;
                reader.cancel().catch(() => {});
                break;
              }
            }
            ev = { event: "message", data: [], id: null };
            continue;
          }
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let val = colon < 0 ? "" : line.slice(colon + 1);
          if (val.startsWith(" ")) val = val.slice(1);
          if (field === "event") ev.event = val;
          else if (field === "data") ev.data.push(val);
          else if (field === "id") ev.id = val;
        }
        if (stopped) break;
      }
    } catch (e) {
      if (signal.aborted || e.name === "AbortError") return;
      if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
        onStatus(errorText(e));
        return;
      }
      failures += 1;
    }
    if (stopped || signal.aborted) return;
    onStatus("reconnecting…");
    await sleep(Math.min(500 * 2 ** Math.min(failures, 4), 8000), signal);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    if (signal) signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}

// ---------------------------------------------------------------- auth

function needToken(error) {
  const box = document.getElementById("auth");
  const msg = document.getElementById("auth-message");
  msg.textContent = token()
    ? "The server refused the token (" + ((error && error.kind) || "unauthorized") + "): " + ((error && error.message) || "") + " Give another."
    : "This server needs an API token.";
  box.hidden = false;
  renderAuthStatus();
}

function renderAuthStatus() {
  const status = clear(document.getElementById("auth-status"));
  if (token()) {
    append(status, [h("span", { text: "signed in with a token" }), h("button", { type: "button", id: "sign-out", onclick: signOut, text: "Sign out" })]);
  }
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  renderAuthStatus();
  render();
}

function setupAuth() {
  document.getElementById("auth-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("auth-token");
    const t = input.value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    input.value = "";
    document.getElementById("auth").hidden = true;
    renderAuthStatus();
    render();
  });
  renderAuthStatus();
}

// ---------------------------------------------------------------- routing

let current = new AbortController();

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/tasks";
  const [path, query] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch (_) { return p; }
  });
  return { parts, query: new URLSearchParams(query || "") };
}

function render() {
  current.abort();
  current = new AbortController();
  const signal = current.signal;
  const main = clear(document.getElementById("main"));
  main.className = "";
  const { parts, query } = parseHash();
  const section = parts[0] || "tasks";
  document.getElementById("nav-tasks").classList.toggle("active", section === "tasks");
  document.getElementById("nav-runs").classList.toggle("active", section === "runs" && parts.length === 1);
  let page;
  if (section === "tasks" && parts.length === 1) page = tasksPage(main, signal);
  else if (section === "tasks" && parts.length === 2) page = taskPage(main, parts[1], signal);
  else if (section === "runs" && parts.length === 1) page = historyPage(main, query, signal);
  else if (section === "runs" && parts.length === 2) page = runPage(main, parts[1], signal);
  else {
    main.appendChild(notice("error", "No such page. ", h("a", { href: "#/tasks", text: "See the tasks." })));
    return;
  }
  page.catch((e) => {
    if (signal.aborted || e.name === "AbortError") return;
    main.appendChild(errorNotice(e));
  });
}

// ---------------------------------------------------------------- tasks

async function tasksPage(main, signal) {
  document.title = "Tasks · task-executor";
  main.appendChild(h("div", { class: "page-head" },
    h("div", null, h("h1", { text: "Tasks" }), h("p", { class: "muted", text: "Pick a task to run it with a form made from its input schema." })),
    h("div", { class: "actions" }, h("a", { class: "button", href: "#/runs", text: "History" }))));
  const list = await api("GET", "/tasks", undefined, signal);
  if (!list.items.length) {
    main.appendChild(notice("", "No task is registered yet. Register one with ", h("code", { text: "manage_tasks register --name NAME --location PATH" }), "."));
    return;
  }
  const ul = h("ul", { class: "tasks", id: "task-list" });
  main.appendChild(ul);
  for (const t of list.items) {
    const last = h("div", { class: "last" }, h("span", { text: "Last run: …" }));
    ul.appendChild(h("li", { class: "task card", "data-task": t.name },
      h("h3", null, h("a", { href: "#/tasks/" + enc(t.name), text: t.name })),
      h("p", { class: "description", text: t.description || "No description." }),
      last));
    api("GET", "/runs?limit=1&task=" + enc(t.name), undefined, signal).then((page) => {
      clear(last);
      const run = page.items[0];
      if (!run) {
        last.appendChild(h("span", { text: "Never run" }));
        return;
      }
      append(last, [h("span", { text: "Last run:" }), badge(run),
        h("a", { href: "#/runs/" + enc(run.run_id), title: run.queued_at, text: ago(run.finished_at || run.started_at || run.queued_at) })]);
    }).catch((e) => {
      if (e.name === "AbortError") return;
      clear(last).appendChild(h("span", { text: "Last run: " + errorText(e) }));
    });
  }
}

// ---------------------------------------------------------------- a task's form

async function taskPage(main, name, signal) {
  document.title = name + " · task-executor";
  const task = await api("GET", "/tasks/" + enc(name), undefined, signal);
  main.appendChild(h("div", { class: "page-head" },
    h("div", null,
      h("h1", { text: task.name }),
      h("p", { class: "description", text: task.description || "No description." }),
      h("p", { class: "muted small" }, "Executable ", h("code", { text: task.location }),
        task.timeout ? " · timeout " + task.timeout : "",
        task.policy && task.policy.retries ? " · " + task.policy.retries + " retries" : "")),
    h("div", { class: "actions" }, h("a", { class: "button", href: "#/runs?task=" + enc(task.name), text: "Runs of this task" }))));

  const form = h("form", { class: "run-form card", id: "run-form", autocomplete: "off" });
  main.appendChild(form);
  const ctx = { root: task.inputs, fields: new Map(), dynamic: new Map(), seq: 0 };
  const top = buildField(task.inputs, ctx, "", { name: null, required: true, root: true });
  const jsonArea = h("textarea", { id: "args-json", class: "args-json", rows: 14, spellcheck: "false", "aria-label": "Arguments as JSON" });
  const jsonBox = h("div", { class: "field", hidden: true }, h("label", { for: "args-json", text: "Arguments (JSON)" }), jsonArea,
    h("p", { class: "help", text: "The whole arguments object, sent as it is." }));
  const jsonToggle = h("input", { type: "checkbox", id: "json-toggle" });
  const summary = h("div", { id: "form-summary" });
  const submit = h("button", { type: "submit", class: "primary", id: "run-submit", text: "Run" });
  const state = h("span", { class: "muted small", id: "submit-state" });

  append(form, [
    h("div", { class: "form-tools" },
      h("h2", { text: "Arguments" }),
      h("label", { class: "check small" }, jsonToggle, "Edit as JSON")),
    top.el, jsonBox, summary,
    h("div", { class: "submit-row" }, submit, state),
  ]);

  jsonToggle.addEventListener("change", () => {
    clear(summary);
    if (jsonToggle.checked) {
      clearErrors(ctx);
      const got = collect(top, ctx);
      if (got.errors) {
        jsonToggle.checked = false;
        summary.appendChild(notice("error", "Fix the fields marked before switching to JSON."));
        return;
      }
      jsonArea.value = pretty(got.value);
      top.el.hidden = true;
      jsonBox.hidden = false;
    } else {
      let value;
      try {
        value = JSON.parse(jsonArea.value || "{}");
      } catch (e) {
        jsonToggle.checked = true;
        summary.appendChild(notice("error", "The JSON does not parse: " + e.message));
        return;
      }
      top.set(value);
      top.el.hidden = false;
      jsonBox.hidden = true;
    }
  });

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clear(summary);
    clearErrors(ctx);
    let args;
    if (jsonToggle.checked) {
      try {
        args = JSON.parse(jsonArea.value || "{}");
      } catch (e) {
        summary.appendChild(notice("error", "The JSON does not parse: " + e.message));
        return;
      }
    } else {
      const got = collect(top, ctx);
      if (got.errors) {
        summary.appendChild(notice("error", "Fix the fields marked."));
        return;
      }
      args = got.value;
    }
    submit.disabled = true;
    state.textContent = "Queueing…";
    try {
      const run = await api("POST", "/tasks/" + enc(task.name) + "/runs", args, signal);
      location.hash = "#/runs/" + enc(run.run_id);
    } catch (e) {
      if (e.name === "AbortError") return;
      state.textContent = "";
      submit.disabled = false;
      if (e instanceof ApiError && e.violations.length) {
        showViolations(ctx, e, summary, jsonToggle.checked);
      } else {
        summary.appendChild(errorNotice(e));
      }
    }
  });
}

// Collects the form's value: {value, errors}. Registers which field each
// pointer of the value came from, so the server's violations find them.
function collect(top, ctx) {
  ctx.dynamic = new Map();
  ctx.localErrors = 0;
  const got = top.get("");
  return { value: got.set ? got.value : {}, errors: ctx.localErrors > 0 };
}

function clearErrors(ctx) {
  for (const f of new Set([...ctx.fields.values(), ...ctx.dynamic.values()])) f.error(null);
}

function showViolations(ctx, e, summary, jsonMode) {
  const unplaced = [];
  const placed = new Map();
  for (const v of e.violations) {
    let pointer = v.pointer || "";
    // `"name" is a required property` points at the object: name the field.
    const req = /^"((?:[^"\\]|\\.)*)" is a required property/.exec(v.message || "");
    if (req) pointer = pointer + "/" + escapePointer(JSON.parse('"' + req[1] + '"'));
    const field = jsonMode ? null : fieldAt(ctx, pointer);
    if (!field) {
      unplaced.push(v);
      continue;
    }
    if (!placed.has(field)) placed.set(field, []);
    placed.get(field).push(v.message);
  }
  for (const [field, messages] of placed) field.error(messages.join("; "));
  const box = notice("error", "The server refused the arguments: " + e.message);
  if (unplaced.length) {
    box.appendChild(h("ul", null, unplaced.map((v) => h("li", { text: (v.pointer === "" ? "(the arguments)" : v.pointer) + ": " + v.message }))));
  }
  summary.appendChild(box);
  const first = placed.keys().next();
  if (!first.done && first.value.focus) first.value.focus();
}

// The field a pointer names, or the nearest enclosing one that has a field
// of its own (an array for one of its items, a JSON box for what is in it).
function fieldAt(ctx, pointer) {
  let p = pointer;
  for (;;) {
    const f = ctx.dynamic.get(p) || ctx.fields.get(p);
    if (f && (p === pointer || f.claimsBelow)) return f;
    if (p === "") return null;
    p = p.slice(0, p.lastIndexOf("/"));
  }
}

function escapePointer(s) {
  return String(s).replace(/~/g, "~0").replace(/\//g, "~1");
}

// Resolves a local $ref (#/$defs/…, #/definitions/…), keeping the keywords
// beside it; null when it cannot.
function resolveRef(schema, ctx, seen) {
  let s = schema;
  let depth = 0;
  while (s && typeof s === "object" && typeof s.$ref === "string") {
    const ref = s.$ref;
    if (!ref.startsWith("#/") || seen.has(ref) || depth > 8) return null;
    let target = ctx.root;
    for (const raw of ref.slice(2).split("/")) {
      const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
      target = target && typeof target === "object" ? target[key] : undefined;
    }
    if (!target || typeof target !== "object") return null;
    seen = new Set(seen).add(ref);
    const rest = Object.assign({}, s);
    delete rest.$ref;
    s = Object.assign({}, target, rest);
    depth += 1;
  }
  return { schema: s, seen };
}

function typeOf(s) {
  let t = s.type;
  if (Array.isArray(t)) {
    const nonNull = t.filter((x) => x !== "null");
    t = nonNull.length === 1 ? nonNull[0] : null;
  }
  if (typeof t === "string") return t;
  if (t === null && Array.isArray(s.type)) return null;
  if (s.properties) return "object";
  if (s.items) return "array";
  return null;
}

const SCALARS = new Set(["string", "integer", "number", "boolean"]);

function isScalar(s) {
  if (!s || typeof s !== "object") return false;
  if (Array.isArray(s.enum) || "const" in s) return true;
  return SCALARS.has(typeOf(s)) && !s.oneOf && !s.anyOf && !s.allOf && !s.not;
}

// Builds the field for `schema` at `pointer`; opts: {name, required, root}.
// A field is {el, get(pointer) -> {set, value}, set(value), error(text), focus()}.
function buildField(schema, ctx, pointer, opts, seen) {
  const resolved = resolveRef(schema === true ? {} : schema, ctx, seen || new Set());
  if (!resolved) return jsonField(schema, ctx, pointer, opts, "a $ref this form cannot follow");
  const s = resolved.schema;
  seen = resolved.seen;
  if (s === null || typeof s !== "object") return jsonField(s, ctx, pointer, opts, null);
  const type = typeOf(s);
  let field;
  if (Array.isArray(s.enum) || "const" in s) field = choiceField(s, ctx, pointer, opts);
  else if (s.oneOf || s.anyOf || s.allOf || s.not || s.if) field = jsonField(s, ctx, pointer, opts, "one of several shapes: see its schema");
  else if (type === "object") field = objectField(s, ctx, pointer, opts, seen);
  else if (type === "array") field = arrayField(s, ctx, pointer, opts, seen);
  else if (type === "boolean") field = booleanField(s, ctx, pointer, opts);
  else if (type === "integer" || type === "number") field = numberField(s, ctx, pointer, opts, type);
  else if (type === "string") field = stringField(s, ctx, pointer, opts);
  else field = jsonField(s, ctx, pointer, opts, null);
  if (!opts.item) ctx.fields.set(pointer, field);
  return field;
}

function labelText(s, opts) {
  return s.title || opts.name || "";
}

// The frame of a scalar field: label, the control, help, error.
function frame(s, ctx, opts, control, labelFor) {
  const err = h("p", { class: "field-error", role: "alert", hidden: true });
  const box = h("div", { class: "field", "data-pointer": opts.pointer });
  if (!opts.item) {
    box.appendChild(h("label", { for: labelFor },
      labelText(s, opts),
      opts.required ? h("span", { class: "required", title: "required", "aria-label": "required", text: "*" }) : null));
  }
  box.appendChild(control);
  if (s.description && !opts.item) box.appendChild(h("p", { class: "help", text: s.description }));
  box.appendChild(err);
  const error = (text) => {
    err.textContent = text || "";
    err.hidden = !text;
    box.classList.toggle("invalid", !!text);
  };
  return { box, error };
}

function nextId(ctx) {
  ctx.seq += 1;
  return "f" + ctx.seq;
}

function stringField(s, ctx, pointer, opts) {
  const id = nextId(ctx);
  const format = s.format;
  const secret = s.writeOnly === true || format === "password";
  const attrs = { id, name: opts.name || null, required: opts.required && !opts.item ? true : null };
  let kind = "text";
  if (secret) kind = "password";
  else if (format === "email" || format === "idn-email") kind = "email";
  else if (format === "uri" || format === "iri") kind = "url";
  else if (format === "date") kind = "date";
  else if (format === "date-time") kind = "datetime-local";
  attrs.type = kind;
  if (secret) attrs.autocomplete = "new-password";
  if (typeof s.minLength === "number") attrs.minlength = s.minLength;
  if (typeof s.maxLength === "number") attrs.maxlength = s.maxLength;
  if (typeof s.pattern === "string" && (kind === "text" || kind === "password")) {
    // JSON Schema's pattern matches anywhere; HTML's must match the whole value.
    const html = "[\\s\\S]*(?:" + s.pattern + ")[\\s\\S]*";
    try {
      new RegExp(html, "v");
      attrs.pattern = html;
      attrs.title = "must match " + s.pattern;
    } catch (_) {
      // A pattern the browser cannot compile is left to the server.
    }
  }
  if (kind === "datetime-local") attrs.step = "1";
  const placeholders = { time: "HH:MM:SSZ", duration: "P1DT2H", uuid: "xxxxxxxx-xxxx-…", ipv4: "192.0.2.1", ipv6: "2001:db8::1", hostname: "host.example" };
  if (placeholders[format]) attrs.placeholder = placeholders[format];
  else if (Array.isArray(s.examples) && typeof s.examples[0] === "string") attrs.placeholder = s.examples[0];
  const input = h("input", attrs);
  const f = frame(s, ctx, Object.assign({ pointer }, opts), input, id);
  const toInput = (v) => {
    if (v === undefined || v === null) return "";
    if (kind === "datetime-local") {
      const d = new Date(v);
      if (isNaN(d)) return "";
      const p = (n) => String(n).padStart(2, "0");
      return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + "T" + p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
    }
    return typeof v === "string" ? v : JSON.stringify(v);
  };
  const field = {
    el: f.box,
    input,
    error: f.error,
    focus: () => input.focus(),
    set(v) { input.value = toInput(v); },
    get(ptr) {
      ctx.dynamic.set(ptr, field);
      const raw = input.value;
      if (raw === "" && !(opts.required && !opts.item && s.minLength === 0)) {
        return { set: false };
      }
      if (kind === "datetime-local") {
        const d = new Date(raw);
        return { set: true, value: isNaN(d) ? raw : d.toISOString() };
      }
      return { set: true, value: raw };
    },
  };
  field.set(s.default);
  return field;
}

function numberField(s, ctx, pointer, opts, type) {
  const id = nextId(ctx);
  const integer = type === "integer";
  const attrs = { id, type: "number", name: opts.name || null, required: opts.required && !opts.item ? true : null, inputmode: integer ? "numeric" : "decimal" };
  let min = typeof s.minimum === "number" ? s.minimum : null;
  let max = typeof s.maximum === "number" ? s.maximum : null;
  if (typeof s.exclusiveMinimum === "number") min = integer ? Math.floor(s.exclusiveMinimum) + 1 : s.exclusiveMinimum;
  else if (s.exclusiveMinimum === true && min !== null && integer) min = min + 1;
  if (typeof s.exclusiveMaximum === "number") max = integer ? Math.ceil(s.exclusiveMaximum) - 1 : s.exclusiveMaximum;
  else if (s.exclusiveMaximum === true && max !== null && integer) max = max - 1;
  if (min !== null) attrs.min = min;
  if (max !== null) attrs.max = max;
  attrs.step = typeof s.multipleOf === "number" ? s.multipleOf : integer ? "1" : "any";
  const input = h("input", attrs);
  const f = frame(s, ctx, Object.assign({ pointer }, opts), input, id);
  const field = {
    el: f.box,
    input,
    error: f.error,
    focus: () => input.focus(),
    set(v) { input.value = typeof v === "number" ? String(v) : ""; },
    get(ptr) {
      ctx.dynamic.set(ptr, field);
      const raw = input.value.trim();
      if (raw === "") {
        if (input.validity && input.validity.badInput) {
          f.error("not a number");
          ctx.localErrors += 1;
        }
        return { set: false };
      }
      const n = Number(raw);
      if (!isFinite(n) || (integer && !Number.isInteger(n))) {
        f.error(integer ? "must be a whole number" : "must be a number");
        ctx.localErrors += 1;
        return { set: false };
      }
      return { set: true, value: n };
    },
  };
  field.set(s.default);
  return field;
}

function booleanField(s, ctx, pointer, opts) {
  const id = nextId(ctx);
  const input = h("input", { type: "checkbox", id, name: opts.name || null });
  let touched = false;
  input.addEventListener("change", () => { touched = true; });
  const err = h("p", { class: "field-error", role: "alert", hidden: true });
  const box = h("div", { class: "field", "data-pointer": pointer },
    h("label", { class: "check", for: id }, input, opts.item ? "" : labelText(s, opts),
      opts.required && !opts.item ? h("span", { class: "required", title: "required", text: "*" }) : null),
    s.description && !opts.item ? h("p", { class: "help", text: s.description }) : null,
    err);
  const hasDefault = typeof s.default === "boolean";
  const field = {
    el: box,
    input,
    focus: () => input.focus(),
    error(text) {
      err.textContent = text || "";
      err.hidden = !text;
      box.classList.toggle("invalid", !!text);
    },
    set(v) { input.checked = v === true; touched = typeof v === "boolean"; },
    get(ptr) {
      ctx.dynamic.set(ptr, field);
      // An optional checkbox nobody touched (and without a default) is left out.
      if (!opts.required && !opts.item && !hasDefault && !touched) return { set: false };
      return { set: true, value: input.checked };
    },
  };
  input.checked = s.default === true;
  return field;
}

// enum and const: a select; each option's value is its index.
function choiceField(s, ctx, pointer, opts) {
  const id = nextId(ctx);
  const values = Array.isArray(s.enum) ? s.enum : [s.const];
  const labels = Array.isArray(s["x-enumNames"]) ? s["x-enumNames"] : null;
  const select = h("select", { id, name: opts.name || null, required: opts.required && !opts.item ? true : null });
  const optional = !opts.required || opts.item;
  if (optional || !("default" in s)) select.appendChild(h("option", { value: "", text: optional ? "—" : "Choose…" }));
  values.forEach((v, i) => {
    select.appendChild(h("option", { value: String(i), text: labels && labels[i] !== undefined ? labels[i] : typeof v === "string" ? v : JSON.stringify(v) }));
  });
  const f = frame(s, ctx, Object.assign({ pointer }, opts), select, id);
  const index = (v) => values.findIndex((x) => JSON.stringify(x) === JSON.stringify(v));
  const field = {
    el: f.box,
    input: select,
    error: f.error,
    focus: () => select.focus(),
    set(v) {
      const i = v === undefined ? -1 : index(v);
      select.value = i >= 0 ? String(i) : "";
    },
    get(ptr) {
      ctx.dynamic.set(ptr, field);
      if (select.value === "") return { set: false };
      return { set: true, value: values[Number(select.value)] };
    },
  };
  if ("default" in s) field.set(s.default);
  else if (!Array.isArray(s.enum) && !optional) field.set(s.const);
  return field;
}

function objectField(s, ctx, pointer, opts, seen) {
  const props = s.properties && typeof s.properties === "object" ? s.properties : {};
  const required = new Set(Array.isArray(s.required) ? s.required : []);
  // In the order the task's schema lists them (the store keeps it).
  const names = Object.keys(props);
  if (!names.length && s.additionalProperties !== false && !opts.root) {
    return jsonField(s, ctx, pointer, opts, "an object without named properties");
  }
  const children = names.map((name) => ({
    name,
    field: buildField(props[name], ctx, pointer + "/" + escapePointer(name), { name, required: required.has(name) }, seen),
  }));
  // A map of further properties (additionalProperties: a schema) goes in a JSON box.
  const extraSchema = s.additionalProperties && typeof s.additionalProperties === "object" ? s.additionalProperties
    : s.patternProperties ? { patternProperties: s.patternProperties } : null;
  const extra = extraSchema && names.length ? jsonField(extraSchema, ctx, pointer + "/…", { name: "Other properties", required: false, item: false, extra: true }, "more properties, as a JSON object") : null;
  if (!names.length && opts.root && s.additionalProperties !== false) {
    // A root without named properties: the whole arguments as JSON.
    const whole = jsonField(s, ctx, pointer, { name: "Arguments", required: false, root: true }, "an object without named properties");
    return whole;
  }
  let el;
  if (opts.root) {
    el = h("div", { class: "fields" }, children.map((c) => c.field.el), extra ? extra.el : null);
    if (!names.length) el.appendChild(h("p", { class: "muted", text: "This task takes no arguments." }));
  } else {
    el = h("fieldset", { "data-pointer": pointer },
      h("legend", null, labelText(s, opts), opts.required ? h("span", { class: "required", title: "required", text: "*" }) : null),
      s.description ? h("p", { class: "help", text: s.description }) : null,
      children.map((c) => c.field.el), extra ? extra.el : null);
  }
  const err = h("p", { class: "field-error", role: "alert", hidden: true });
  el.appendChild(err);
  const field = {
    el,
    claimsBelow: false,
    focus: () => { const c = children[0]; if (c && c.field.focus) c.field.focus(); },
    error(text) { err.textContent = text || ""; err.hidden = !text; },
    set(v) {
      const obj = v && typeof v === "object" && !Array.isArray(v) ? v : {};
      for (const c of children) c.field.set(obj[c.name]);
      if (extra) {
        const rest = {};
        for (const k of Object.keys(obj)) if (!(k in props)) rest[k] = obj[k];
        extra.set(Object.keys(rest).length ? rest : undefined);
      }
    },
    get(ptr) {
      ctx.dynamic.set(ptr, field);
      const out = {};
      let any = false;
      for (const c of children) {
        const got = c.field.get(ptr + "/" + escapePointer(c.name));
        if (got.set) { out[c.name] = got.value; any = true; }
      }
      if (extra) {
        const got = extra.get(ptr + "/…");
        if (got.set && got.value && typeof got.value === "object" && !Array.isArray(got.value)) {
          for (const [k, v] of Object.entries(got.value)) {
            out[k] = v;
            ctx.dynamic.set(ptr + "/" + escapePointer(k), extra);
            any = true;
          }
        } else if (got.set) {
          extra.error("must be a JSON object");
          ctx.localErrors += 1;
        }
      }
      if (!any && !opts.required && !opts.root) return { set: false };
      return { set: true, value: out };
    },
  };
  return field;
}

function arrayField(s, ctx, pointer, opts, seen) {
  const itemsSchema = Array.isArray(s.items) || s.prefixItems ? null : s.items === undefined ? {} : s.items;
  const resolved = itemsSchema && typeof itemsSchema === "object" ? resolveRef(itemsSchema, ctx, seen) : null;
  if (!resolved || !isScalar(resolved.schema)) {
    return jsonField(s, ctx, pointer, opts, "an array of items that are not simple values");
  }
  const item = resolved.schema;
  const list = h("div", { class: "items" });
  const items = [];
  const max = typeof s.maxItems === "number" ? s.maxItems : Infinity;
  const addButton = h("button", { type: "button", class: "add", text: "+ Add" });
  const label = labelText(s, opts);
  const refresh = () => {
    addButton.disabled = items.length >= max;
  };
  const add = (value) => {
    const f = buildField(item, ctx, pointer + "/-", { name: label, required: true, item: true }, resolved.seen);
    if (value !== undefined) f.set(value);
    const remove = h("button", { type: "button", class: "remove danger", title: "Remove", "aria-label": "Remove", text: "×" });
    const row = h("div", { class: "item" }, f.el, remove);
    const entry = { field: f, row };
    remove.addEventListener("click", () => {
      items.splice(items.indexOf(entry), 1);
      row.remove();
      refresh();
    });
    items.push(entry);
    list.appendChild(row);
    refresh();
    return f;
  };
  addButton.addEventListener("click", () => {
    const f = add(undefined);
    if (f.focus) f.focus();
  });
  const err = h("p", { class: "field-error", role: "alert", hidden: true });
  const box = h("div", { class: "field array", "data-pointer": pointer },
    h("div", { class: "label" }, label, opts.required ? h("span", { class: "required", title: "required", text: "*" }) : null),
    s.description ? h("p", { class: "help", text: s.description }) : null,
    list, addButton, err);
  const field = {
    el: box,
    claimsBelow: true,
    focus: () => { if (items[0] && items[0].field.focus) items[0].field.focus(); else addButton.focus(); },
    error(text) { err.textContent = text || ""; err.hidden = !text; box.classList.toggle("invalid", !!text); },
    set(v) {
      for (const e of items.splice(0)) e.row.remove();
      if (Array.isArray(v)) v.forEach((x) => add(x));
      refresh();
    },
    get(ptr) {
      ctx.dynamic.set(ptr, field);
      const out = [];
      for (const e of items) {
        const got = e.field.get(ptr + "/" + out.length);
        if (got.set) out.push(got.value);
      }
      if (!out.length && !opts.required) return { set: false };
      return { set: true, value: out };
    },
  };
  field.set(Array.isArray(s.default) ? s.default : undefined);
  return field;
}

// What the form cannot render: a JSON box for that part, the schema beside it.
function jsonField(s, ctx, pointer, opts, why) {
  const id = nextId(ctx);
  const schema = s && typeof s === "object" ? s : {};
  const area = h("textarea", { id, rows: 4, spellcheck: "false", class: "json-input", placeholder: "JSON" + (why ? " (" + why + ")" : "") });
  const f = frame(schema, ctx, Object.assign({ pointer }, opts, { name: (opts.name || "Value") + " (JSON)" }), area, id);
  f.box.appendChild(h("details", { class: "schema-hint" }, h("summary", { text: "Schema" }), h("pre", { class: "json", text: pretty(s) })));
  const field = {
    el: f.box,
    claimsBelow: true,
    error: f.error,
    focus: () => area.focus(),
    set(v) { area.value = v === undefined ? "" : pretty(v); },
    get(ptr) {
      ctx.dynamic.set(ptr, field);
      const raw = area.value.trim();
      if (raw === "") return { set: false };
      try {
        return { set: true, value: JSON.parse(raw) };
      } catch (e) {
        f.error("not JSON: " + e.message);
        ctx.localErrors += 1;
        return { set: false };
      }
    },
  };
  field.set(schema.default);
  if (!opts.extra) ctx.fields.set(pointer, field);
  return field;
}

// ---------------------------------------------------------------- a run

async function runPage(main, id, signal) {
  document.title = "Run " + shortId(id) + " · task-executor";
  let run = await api("GET", "/runs/" + enc(id), undefined, signal);
  const head = h("div", { class: "run-head" });
  const actions = h("div", { class: "actions" });
  const msg = h("div", { id: "run-message" });
  const facts = h("dl", { class: "facts card", id: "run-facts" });
  const errorBox = h("div", { id: "run-error" });
  const log = h("div", { class: "log", id: "log", role: "log", "aria-live": "polite" }, h("div", { class: "empty", text: "No log yet." }));
  const live = h("span", { class: "live", id: "live-state" });
  const payload = h("pre", { class: "json", id: "payload" });
  const args = h("pre", { class: "json", id: "args" });
  const result = h("section", { id: "result" }, h("h2", { text: "Result" }), h("p", { id: "reason", class: "muted" }), payload);
  append(main, [
    h("div", { class: "page-head" }, head, actions),
    msg, facts, errorBox,
    h("section", null, h("h2", null, "Log", live), log),
    h("div", { class: "panels" }, result, h("section", null, h("h2", { text: "Arguments" }), args)),
  ]);

  const show = (r) => {
    run = r;
    document.title = r.task + " " + shortId(r.run_id) + " · task-executor";
    append(clear(head), [h("h1", null, "Run ", h("span", { class: "mono", title: r.run_id, text: shortId(r.run_id) })),
      badge(r), h("a", { href: "#/tasks/" + enc(r.task), text: r.task })]);
    clear(actions);
    if (!ENDED.has(r.state)) {
      actions.appendChild(h("button", { type: "button", class: "danger", id: "cancel", disabled: r.cancel_requested, onclick: cancel, text: r.cancel_requested ? "Cancelling…" : "Cancel" }));
    } else {
      actions.appendChild(h("button", { type: "button", id: "retry", onclick: retry, text: "Retry" }));
    }
    actions.appendChild(h("a", { class: "button", href: "#/tasks/" + enc(r.task), text: "Run again…" }));
    const fact = (label, ...value) => h("div", null, h("dt", { text: label }), h("dd", null, ...value));
    append(clear(facts), [
      fact("State", badge(r)),
      fact("Outcome", r.outcome || "—", r.status !== null && r.status !== undefined ? " · status " + r.status : ""),
      fact("Exit", r.exit_code !== null && r.exit_code !== undefined ? "code " + r.exit_code : r.signal ? "signal " + r.signal : "—"),
      fact("Queued", timeEl(r.queued_at)),
      fact("Started", timeEl(r.started_at)),
      fact("Finished", timeEl(r.finished_at)),
      fact("Duration", duration(r.duration_ms)),
      fact("Attempt", r.attempt + " of " + r.max_attempts),
      fact("Worker", r.worker || "—"),
      fact("Caller", r.caller),
      r.schedule ? fact("Schedule", r.schedule) : null,
      fact("Run id", h("span", { class: "mono small", text: r.run_id })),
    ]);
    clear(errorBox);
    if (r.waiting) errorBox.appendChild(notice("", "Waiting: " + r.waiting));
    if (r.error) {
      const e = h("div", { class: "error-box" }, h("strong", { text: r.error.kind }), ": ", r.error.message);
      if (r.error.violations && r.error.violations.length) {
        e.appendChild(h("ul", null, r.error.violations.map((v) => h("li", { text: (v.pointer || "/") + ": " + v.message }))));
      }
      errorBox.appendChild(e);
    }
    const reason = document.getElementById("reason");
    reason.textContent = r.reason ? "Reason: " + r.reason : ENDED.has(r.state) ? "No result." : "No result yet.";
    payload.textContent = r.payload === null || r.payload === undefined ? "null" : pretty(r.payload);
    payload.hidden = !(r.payload !== null && r.payload !== undefined) && !r.reason;
    args.textContent = pretty(r.args);
  };

  async function cancel() {
    clear(msg);
    try {
      const c = await api("POST", "/runs/" + enc(run.run_id) + "/cancel", undefined, signal);
      const res = typeof c.result === "string" ? c.result : "already " + (c.result.already_over || "over");
      msg.appendChild(notice("ok", res === "cancelled" ? "Cancelled." : res === "requested" ? "Cancel requested: the worker stops the task at its next heartbeat." : "The run is " + res + "."));
      show(await api("GET", "/runs/" + enc(run.run_id), undefined, signal));
    } catch (e) {
      if (e.name !== "AbortError") msg.appendChild(errorNotice(e));
    }
  }

  async function retry() {
    clear(msg);
    try {
      const r = await api("POST", "/runs/" + enc(run.run_id) + "/retry", undefined, signal);
      location.hash = "#/runs/" + enc(r.run_id);
    } catch (e) {
      if (e.name !== "AbortError") msg.appendChild(errorNotice(e));
    }
  }

  show(run);
  let lines = 0;
  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 24;
  const add = (node) => {
    const stick = atBottom();
    if (lines === 0) clear(log);
    lines += 1;
    log.appendChild(node);
    if (stick) log.scrollTop = log.scrollHeight;
  };
  let attempt = null;
  await follow("/runs/" + enc(run.run_id) + "/logs", signal, (ev) => {
    let data;
    try { data = JSON.parse(ev.data); } catch (_) { return; }
    if (ev.event === "line") {
      if (attempt !== null && data.attempt !== attempt) add(h("div", { class: "marker", text: "— attempt " + data.attempt + " —" }));
      attempt = data.attempt;
      const stream = data.stream === "stderr" ? "stderr" : "stdout";
      add(h("div", { class: "line " + stream, "data-seq": data.seq },
        h("span", { class: "stream", text: stream === "stderr" ? "err" : "out" }),
        h("span", { class: "text", text: data.text + (data.truncated ? " […line cut]" : "") })));
    } else if (ev.event === "cut") {
      add(h("div", { class: "marker", text: "… " + data.cut.lines + " lines (" + data.cut.bytes + " bytes) cut …" }));
    } else if (ev.event === "attempt") {
      add(h("div", { class: "marker", text: "— attempt " + data.attempt + " starts —" }));
      attempt = data.attempt;
    } else if (ev.event === "store") {
      add(h("div", { class: "marker", text: data.message }));
    } else if (ev.event === "state") {
      show(Object.assign({}, data, { waiting: run.waiting && data.state === "queued" ? run.waiting : null }));
    } else if (ev.event === "end") {
      show(data);
      live.textContent = "ended";
      return "stop";
    } else if (ev.event === "error") {
      live.textContent = (data.kind || "error") + ": " + (data.message || "");
      return "stop";
    }
    return undefined;
  }, (status) => {
    if (live.textContent !== "ended") live.textContent = status;
  });
}

// ---------------------------------------------------------------- history

async function historyPage(main, query, signal) {
  document.title = "History · task-executor";
  main.classList.add("wide");
  const filter = { task: query.get("task") || "", state: query.get("state") || "", since: query.get("since") || "" };
  const taskSelect = h("select", { id: "filter-task", name: "task" }, h("option", { value: "", text: "any task" }));
  const stateSelect = h("select", { id: "filter-state", name: "state" }, h("option", { value: "", text: "any state" }),
    STATES.map((s) => h("option", { value: s, text: s })));
  const sinceInput = h("input", { id: "filter-since", name: "since", list: "since-choices", placeholder: "e.g. 1h, 2d", title: "a duration ago (1h, 2d) or an RFC 3339 time", value: filter.since });
  const sinceChoices = h("datalist", { id: "since-choices" }, ["15m", "1h", "24h", "7d", "30d"].map((v) => h("option", { value: v })));
  stateSelect.value = filter.state;
  // The filter's task at once; the others once the list has come.
  if (filter.task) taskSelect.appendChild(h("option", { value: filter.task, text: filter.task }));
  taskSelect.value = filter.task;
  const filters = h("form", { class: "filters", id: "filters" },
    h("label", null, "Task", taskSelect),
    h("label", null, "State", stateSelect),
    h("label", null, "Queued since", sinceInput, sinceChoices),
    h("button", { type: "submit", text: "Apply" }),
    h("button", { type: "button", class: "link", text: "Clear", onclick: () => { location.hash = "#/runs"; } }));
  filters.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (taskSelect.value) q.set("task", taskSelect.value);
    if (stateSelect.value) q.set("state", stateSelect.value);
    if (sinceInput.value.trim()) q.set("since", sinceInput.value.trim());
    const next = "#/runs" + (q.toString() ? "?" + q.toString() : "");
    if (location.hash === next) render();
    else location.hash = next;
  });
  for (const sel of [taskSelect, stateSelect]) sel.addEventListener("change", () => filters.requestSubmit());

  const selectAll = h("input", { type: "checkbox", id: "select-all", "aria-label": "Select all" });
  const tbody = h("tbody", { id: "runs-body" });
  const count = h("span", { class: "muted small", id: "selected-count", text: "0 selected" });
  const cancelSel = h("button", { type: "button", class: "danger", id: "bulk-cancel", disabled: true, text: "Cancel selected" });
  const retrySel = h("button", { type: "button", id: "bulk-retry", disabled: true, text: "Retry selected" });
  const bulkMsg = h("div", { id: "bulk-message" });
  const more = h("button", { type: "button", id: "more", hidden: true, text: "Load more" });
  const live = h("span", { class: "muted small", id: "history-live" });
  append(main, [
    h("div", { class: "page-head" },
      h("div", null, h("h1", { text: "History" }), h("p", { class: "muted", text: "Every run, newest first." })),
      h("div", { class: "actions" }, live)),
    filters,
    h("div", { class: "bulk" }, count, cancelSel, retrySel),
    bulkMsg,
    h("div", { class: "table-wrap" },
      h("table", { id: "runs-table" },
        h("thead", null, h("tr", null,
          h("th", null, selectAll),
          ["Run", "Task", "State", "Outcome", "Queued", "Started", "Duration", "Attempts", "Worker", "Caller"].map((t) => h("th", { text: t })))),
        tbody)),
    h("div", { class: "more" }, more),
  ]);

  api("GET", "/tasks", undefined, signal).then((list) => {
    for (const t of list.items) {
      if (t.name !== filter.task) taskSelect.appendChild(h("option", { value: t.name, text: t.name }));
    }
    taskSelect.value = filter.task;
  }).catch(() => {});

  const rows = new Map(); // run id -> {tr, box, run}
  const selected = () => [...rows.values()].filter((r) => r.box.checked);
  const updateSelection = () => {
    const all = [...rows.values()];
    const n = selected().length;
    count.textContent = n + " selected";
    cancelSel.disabled = n === 0;
    retrySel.disabled = n === 0;
    selectAll.checked = all.length > 0 && n === all.length;
    selectAll.indeterminate = n > 0 && n < all.length;
    for (const r of all) r.tr.classList.toggle("selected", r.box.checked);
  };
  selectAll.addEventListener("change", () => {
    for (const r of rows.values()) r.box.checked = selectAll.checked;
    updateSelection();
  });

  const cells = (run) => [
    h("td", { class: "id" }, h("a", { href: "#/runs/" + enc(run.run_id), title: run.run_id, text: shortId(run.run_id) })),
    h("td", null, h("a", { href: "#/tasks/" + enc(run.task), text: run.task })),
    h("td", null, badge(run)),
    h("td", { text: (run.outcome || "—") + (run.status !== null && run.status !== undefined && run.status !== 1 ? " (" + run.status + ")" : "") }),
    h("td", null, timeEl(run.queued_at)),
    h("td", null, timeEl(run.started_at)),
    h("td", { text: run.finished_at ? duration(run.duration_ms) : run.started_at ? "running" : "—" }),
    h("td", { text: run.attempt + "/" + run.max_attempts }),
    h("td", { class: "mono small", text: run.worker || "—" }),
    h("td", { text: run.caller }),
  ];
  const row = (run, first) => {
    const known = rows.get(run.run_id);
    if (known) {
      known.run = run;
      while (known.tr.children.length > 1) known.tr.removeChild(known.tr.lastChild);
      append(known.tr, cells(run));
      known.tr.dataset.state = run.state;
      return;
    }
    const box = h("input", { type: "checkbox", class: "select", "aria-label": "Select run " + shortId(run.run_id) });
    box.addEventListener("change", updateSelection);
    const tr = h("tr", { "data-run": run.run_id, "data-state": run.state }, h("td", null, box), cells(run));
    rows.set(run.run_id, { tr, box, run });
    const empty = tbody.querySelector("td.empty");
    if (empty) empty.parentNode.remove();
    if (first && tbody.firstChild) tbody.insertBefore(tr, tbody.firstChild);
    else tbody.appendChild(tr);
  };

  const params = new URLSearchParams();
  if (filter.task) params.set("task", filter.task);
  if (filter.state) params.set("state", filter.state);
  if (filter.since) params.set("since", filter.since);
  params.set("limit", "50");
  let next = null;
  const load = async (after) => {
    const q = new URLSearchParams(params);
    if (after) q.set("after", after);
    const page = await api("GET", "/runs?" + q.toString(), undefined, signal);
    for (const run of page.items) row(run, false);
    next = page.next;
    more.hidden = !next;
    if (!rows.size) tbody.appendChild(h("tr", null, h("td", { class: "empty", colspan: 11, text: "No runs match." })));
    updateSelection();
  };
  more.addEventListener("click", () => {
    more.disabled = true;
    load(next).catch((e) => { if (e.name !== "AbortError") bulkMsg.appendChild(errorNotice(e)); }).finally(() => { more.disabled = false; });
  });

  const bulk = async (action) => {
    const chosen = selected();
    clear(bulkMsg);
    cancelSel.disabled = retrySel.disabled = true;
    const results = await Promise.all(chosen.map(async (r) => {
      try {
        return { run: r.run, ok: true, answer: await api("POST", "/runs/" + enc(r.run.run_id) + "/" + action, undefined, signal) };
      } catch (e) {
        return { run: r.run, ok: false, error: e };
      }
    }));
    if (signal.aborted) return;
    const failed = results.filter((r) => !r.ok);
    const done = results.filter((r) => r.ok);
    if (done.length) {
      const runs = done.length + " run" + (done.length === 1 ? "" : "s");
      const box = notice("ok", action === "retry" ? "Retried " + runs + ": " : "Cancel sent to " + runs + " (a running one stops at its worker's next heartbeat).");
      if (action === "retry") {
        done.forEach((r, i) => {
          if (i) box.appendChild(document.createTextNode(", "));
          box.appendChild(h("a", { href: "#/runs/" + enc(r.answer.run_id), class: "mono", text: shortId(r.answer.run_id) }));
        });
      }
      bulkMsg.appendChild(box);
    }
    if (failed.length) {
      bulkMsg.appendChild(notice("error", failed.length + " failed:",
        h("ul", { id: "bulk-failures" }, failed.map((r) => h("li", null, h("a", { href: "#/runs/" + enc(r.run.run_id), class: "mono", text: shortId(r.run.run_id) }), ": " + errorText(r.error))))));
    }
    // Show the new runs, and the others as they are now.
    for (const r of rows.values()) r.tr.remove();
    rows.clear();
    clear(tbody);
    await load(null).catch((e) => { if (e.name !== "AbortError") bulkMsg.appendChild(errorNotice(e)); });
  };
  cancelSel.addEventListener("click", () => bulk("cancel"));
  retrySel.addEventListener("click", () => bulk("retry"));

  await load(null);

  // Live: every run's changes; a new run matching the filters goes on top.
  const matches = (run) => (!filter.task || run.task === filter.task) && (!filter.state || run.state === filter.state);
  follow("/events", signal, (ev) => {
    if (ev.event !== "run") return undefined;
    let run;
    try { run = JSON.parse(ev.data); } catch (_) { return undefined; }
    if (rows.has(run.run_id)) row(run, false);
    else if (matches(run) && !filter.since) { row(run, true); updateSelection(); }
    return undefined;
  }, (status) => { live.textContent = status === "live" ? "● live" : status; });
}

// ---------------------------------------------------------------- start

setupAuth();
window.addEventListener("hashchange", render);
render();
