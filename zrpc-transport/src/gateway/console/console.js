// The zrpc console: everything it shows comes from the gateway that serves it. Paths are
// relative, so the console also works when the gateway is nested under a prefix ("/rpc/").
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// POST a zrpc call through the gateway; the HTTP answer as {http, text}.
async function call(service, method, body, headers = {}) {
  const response = await fetch(`${encodeURIComponent(service)}/${encodeURIComponent(method)}`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
    body,
  });
  return { http: response.status, text: await response.text() };
}

// ---- services and methods, from zrpc.Reflection.list ----

async function loadServices() {
  const nav = $("#services");
  let answer;
  try {
    answer = await call("zrpc.Reflection", "list", "{}");
  } catch (e) {
    nav.replaceChildren(el("p", { class: "muted", text: `cannot reach the gateway: ${e}` }));
    return;
  }
  if (answer.http !== 200) {
    nav.replaceChildren(el("p", { class: "muted", text: `reflection answered ${answer.http}: ${answer.text}` }));
    return;
  }
  const services = JSON.parse(answer.text);
  nav.replaceChildren();
  for (const service of services) {
    nav.append(el("h2", { text: service.name, title: service.docs || service.rust_name }));
    const list = el("ul");
    for (const method of service.methods) {
      const button = el("button", { type: "button", "data-method": `${service.name}.${method.name}`, text: method.name });
      button.addEventListener("click", () => {
        for (const other of nav.querySelectorAll("button[aria-current]")) other.removeAttribute("aria-current");
        button.setAttribute("aria-current", "true");
        showMethod(service, method);
      });
      list.append(el("li", {}, button));
    }
    nav.append(list);
  }
}

// ---- a form per method, from its arguments' JSON Schemas ----

// A schema with its $ref resolved against the root schema's $defs (schemars' layout).
function resolve(schema, root) {
  let seen = 0;
  while (schema && typeof schema.$ref === "string" && seen++ < 16) {
    const name = schema.$ref.replace(/^#\/(\$defs|definitions)\//, "");
    const defs = (root && (root.$defs || root.definitions)) || {};
    schema = defs[name];
  }
  return schema || {};
}

// The schema's type, and whether null is allowed: "integer", ["string","null"], anyOf [T, null].
function typeOf(schema, root) {
  let types = schema.type;
  let nullable = false;
  if (!types && Array.isArray(schema.anyOf) && schema.anyOf.length === 2) {
    const other = schema.anyOf.find((s) => s.type !== "null");
    if (other && schema.anyOf.some((s) => s.type === "null")) {
      return { ...typeOf(resolve(other, root), root), nullable: true, schema: resolve(other, root) };
    }
  }
  if (Array.isArray(types)) {
    nullable = types.includes("null");
    types = types.filter((t) => t !== "null");
    types = types.length === 1 ? types[0] : undefined;
  }
  return { type: types, nullable, schema };
}

// One input for a value of `schema`: {node, read} where read() gives the value's JSON text.
function field(id, label, schema, root, rustType) {
  schema = resolve(schema, root);
  const { type, nullable, schema: inner } = typeOf(schema, root);
  const caption = el("span", { text: label }, rustType ? el("code", { text: ` ${rustType}` }) : null);
  const empty = (text) => text === "" && nullable;

  if (type === "object" && inner.properties) {
    const set = el("fieldset", { id }, el("legend", { text: label }));
    const parts = Object.entries(inner.properties).map(([key, sub]) => {
      const resolved = resolve(sub, root);
      const part = field(`${id}-${key}`, key, sub, root, [].concat(resolved.type || []).join(" | ") || undefined);
      set.append(part.node);
      return [key, part];
    });
    return { node: set, read: () => `{${parts.map(([key, part]) => `${JSON.stringify(key)}:${part.read()}`).join(",")}}` };
  }
  if (type === "boolean") {
    const box = el("input", { id, type: "checkbox" });
    return { node: el("label", { class: "check" }, caption, box), read: () => (box.checked ? "true" : "false") };
  }
  if (type === "string" && Array.isArray(inner.enum)) {
    const select = el("select", { id }, ...inner.enum.map((v) => el("option", { value: v, text: v })));
    return { node: el("label", {}, caption, select), read: () => JSON.stringify(select.value) };
  }
  if (type === "string") {
    const input = el("input", { id, type: "text", placeholder: nullable ? "empty for null" : "" });
    return { node: el("label", {}, caption, input), read: () => (empty(input.value) ? "null" : JSON.stringify(input.value)) };
  }
  if (type === "integer" || type === "number") {
    // Text, not a number input: integers past 2^53 are sent as typed, digit for digit.
    const input = el("input", { id, type: "text", inputmode: "decimal", placeholder: type });
    return { node: el("label", {}, caption, input), read: () => (empty(input.value.trim()) ? "null" : input.value.trim() || "0") };
  }
  // No schema, or one a form does not fit: the value's JSON, as typed.
  const area = el("textarea", { id, placeholder: rustType ? `JSON of ${rustType}` : "JSON", spellcheck: "false" });
  return { node: el("label", {}, caption, area), read: () => area.value.trim() || "null" };
}

let calls = 0;

function showMethod(service, method) {
  const section = $("#method");
  const flags = [method.oneway && "oneway", method.idempotent && "idempotent", method.errors !== "none" && `errors: ${method.errors}`]
    .filter(Boolean)
    .map((flag) => el("span", { class: "flag", text: flag }));
  const title = el("h2", {}, el("code", { text: `${service.name}.${method.name}` }), ...flags);
  const parts = method.args.map((arg) => [arg.name, field(`arg-${arg.name}`, arg.name, arg.type.schema || {}, arg.type.schema, arg.type.rust)]);
  const form = el("form", { id: "call-form" });
  if (parts.length === 0) form.append(el("p", { class: "muted", text: "No arguments." }));
  for (const [, part] of parts) form.append(part.node);
  const timeout = el("input", { id: "timeout", type: "text", placeholder: "10s", size: 6 });
  form.append(el("div", { class: "row" }, el("label", {}, el("span", { text: "timeout" }), timeout), el("button", { id: "call", class: "call", type: "submit", text: "Call" })));
  const outcome = el("div", { id: "outcome" });
  const answer = el("pre", { id: "answer" });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const number = ++calls;
    outcome.setAttribute("data-call", String(number));
    outcome.setAttribute("data-state", "pending");
    outcome.textContent = "calling…";
    answer.textContent = "";
    const body = `{${parts.map(([name, part]) => `${JSON.stringify(name)}:${part.read()}`).join(",")}}`;
    const headers = timeout.value.trim() ? { "zrpc-timeout": timeout.value.trim() } : {};
    let result;
    try {
      result = await call(service.name, method.name, body, headers);
    } catch (e) {
      result = { http: 0, text: String(e) };
    }
    if (number !== calls) return;
    show(outcome, answer, result);
  });
  const docs = method.docs ? [el("p", { class: "docs", text: method.docs })] : [];
  section.replaceChildren(title, ...docs, form, outcome, answer);
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

function show(outcome, answer, { http, text }) {
  let state = "error";
  let line = `HTTP ${http}`;
  if (http === 200) {
    state = "ok";
    line = "200 OK";
  } else if (http === 202) {
    state = "sent";
    line = "202 Accepted: sent one way, no answer will come";
  } else if (http === 422) {
    state = "application-error";
    line = "422 application error";
  } else {
    try {
      const status = JSON.parse(text);
      line = `${http} ${status.status} (code ${status.code}): ${status.message}`;
    } catch {
      line = `${http}: ${text}`;
    }
  }
  outcome.setAttribute("data-state", state);
  outcome.textContent = line;
  answer.textContent = pretty(text);
}

// ---- live instances and health ----

async function refreshInstances() {
  try {
    const [instances, health] = await Promise.all([fetch("-/instances"), fetch("-/health")]);
    const list = await instances.json();
    const rows = list.endpoints.map((e) => {
      const states = e.connections.map((c) => c.state).join(" ");
      const latency = e.latency_us === null ? "–" : e.latency_us >= 1000 ? `${(e.latency_us / 1000).toFixed(1)} ms` : `${e.latency_us} µs`;
      return el(
        "tr",
        { "data-address": e.address, "data-state": states },
        el("td", { class: "address", text: e.address, title: e.breaker ? `breaker ${e.breaker}, weight ${e.weight}` : `weight ${e.weight}` }),
        el("td", { "data-available": String(e.available), text: states || (e.available ? "available" : "unavailable") }),
        el("td", { text: String(e.in_flight) }),
        el("td", { text: latency }),
      );
    });
    $("#instances tbody").replaceChildren(...rows);
    const h = await health.json();
    const badge = $("#health");
    badge.setAttribute("data-state", h.status);
    badge.textContent = `${h.status}: ${h.available}/${h.endpoints} endpoints available`;
  } catch (e) {
    $("#health").textContent = `gateway unreachable: ${e}`;
  }
}

loadServices();
refreshInstances();
setInterval(refreshInstances, 2000);
