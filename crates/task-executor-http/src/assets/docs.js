// Renders /api/v1/openapi.json as a list of operations. Every text from the
// document goes in through textContent: nothing is parsed as HTML.
"use strict";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function resolve(doc, schema) {
  if (schema && typeof schema.$ref === "string" && schema.$ref.startsWith("#/components/schemas/")) {
    const name = schema.$ref.slice("#/components/schemas/".length);
    return { name: name, schema: (doc.components && doc.components.schemas || {})[name] };
  }
  return { name: null, schema: schema };
}

function schemaBlock(doc, schema) {
  const r = resolve(doc, schema);
  const box = el("details", "schema");
  box.appendChild(el("summary", null, r.name ? "schema " + r.name : "schema"));
  box.appendChild(el("pre", null, JSON.stringify(r.schema, null, 2)));
  return box;
}

function operation(doc, path, method, op) {
  const box = el("section", "op");
  const head = el("h3");
  head.appendChild(el("span", "method " + method, method.toUpperCase()));
  head.appendChild(el("code", "path", path));
  box.appendChild(head);
  if (op.summary) box.appendChild(el("p", "summary", op.summary));
  if (op.description) box.appendChild(el("p", "description", op.description));
  const params = op.parameters || [];
  if (params.length) {
    const list = el("ul", "params");
    for (const p of params) {
      const item = el("li");
      item.appendChild(el("code", null, p.name));
      item.appendChild(document.createTextNode(" (" + p.in + (p.required ? ", required" : "") + ")" + (p.description ? ": " + p.description : "")));
      list.appendChild(item);
    }
    box.appendChild(list);
  }
  const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  if (body && body.schema) {
    box.appendChild(el("h4", null, "Request body"));
    box.appendChild(schemaBlock(doc, body.schema));
  }
  const responses = op.responses || {};
  for (const code of Object.keys(responses).sort()) {
    const r = responses[code];
    box.appendChild(el("h4", null, code + (r.description ? " — " + r.description : "")));
    const c = r.content && r.content["application/json"];
    if (c && c.schema) box.appendChild(schemaBlock(doc, c.schema));
  }
  return box;
}

async function main() {
  const main = document.getElementById("paths");
  try {
    // The web page's token (same origin, same tab), once signed in there.
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem("task-executor.token");
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch("/api/v1/openapi.json", { headers });
    if (res.status === 401) {
      throw new Error("this server needs a token: sign in on the web page (/) in this tab, then come back");
    }
    if (!res.ok) throw new Error("HTTP " + res.status);
    const doc = await res.json();
    document.getElementById("title").textContent = doc.info.title + " " + doc.info.version;
    document.getElementById("description").textContent = doc.info.description || "";
    main.replaceChildren();
    for (const path of Object.keys(doc.paths || {})) {
      const item = doc.paths[path];
      for (const method of ["get", "post", "put", "patch", "delete"]) {
        if (item[method]) main.appendChild(operation(doc, path, method, item[method]));
      }
    }
  } catch (e) {
    main.replaceChildren(el("p", "error", "Cannot load the API document: " + e.message));
  }
}

document.addEventListener("DOMContentLoaded", main);
