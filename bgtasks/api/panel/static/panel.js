// Built from clients/typescript/panel/ by make panel: edit the source, not this file.
var __defProp = Object.defineProperty;
var __typeError = (msg) => {
  throw TypeError(msg);
};
var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);
var __accessCheck = (obj, member, msg) => member.has(obj) || __typeError("Cannot " + msg);
var __privateGet = (obj, member, getter) => (__accessCheck(obj, member, "read from private field"), getter ? getter.call(obj) : member.get(obj));
var __privateAdd = (obj, member, value) => member.has(obj) ? __typeError("Cannot add the same private member more than once") : member instanceof WeakSet ? member.add(obj) : member.set(obj, value);
var __privateSet = (obj, member, value, setter) => (__accessCheck(obj, member, "write to private field"), setter ? setter.call(obj, value) : member.set(obj, value), value);
var __privateMethod = (obj, member, method) => (__accessCheck(obj, member, "access private method"), method);

// src/client.ts
var ROUTES = {
  createTask: ["post", "/tasks"],
  listTasks: ["get", "/tasks"],
  getTask: ["get", "/tasks/{task_id}"],
  deleteTask: ["delete", "/tasks/{task_id}"],
  taskHistory: ["get", "/tasks/{task_id}/history"],
  taskResult: ["get", "/tasks/{task_id}/result"],
  runTask: ["post", "/tasks/{task_id}/run"],
  pauseTask: ["post", "/tasks/{task_id}/pause"],
  resumeTask: ["post", "/tasks/{task_id}/resume"],
  cancelTask: ["post", "/tasks/{task_id}/cancel"]
};
var PROBLEM_TITLE_NO_RESULT = "No result yet";
var BgtasksError = class extends Error {
  constructor(problem) {
    super(`${problem.status} ${problem.title}${problem.detail ? `: ${problem.detail}` : ""}`);
    __publicField(this, "name", "BgtasksError");
    /** HTTP status (422 invalid input, 404 not found, 409 conflict, 401/403 auth...). */
    __publicField(this, "status");
    __publicField(this, "title");
    __publicField(this, "detail");
    /** One entry per invalid field (422); empty otherwise. */
    __publicField(this, "errors");
    __publicField(this, "problem");
    this.problem = problem;
    this.status = problem.status;
    this.title = problem.title;
    this.detail = problem.detail;
    this.errors = problem.errors ?? [];
  }
  /** The error naming `field` (its JSON path, e.g. "priority" or "schedule.interval"), if any. */
  fieldError(field) {
    return this.errors.find((e) => e.field === field);
  }
};
var _token, _fetch, _BgtasksClient_instances, request_fn;
var BgtasksClient = class {
  constructor(options) {
    __privateAdd(this, _BgtasksClient_instances);
    __publicField(this, "baseUrl");
    __privateAdd(this, _token);
    __privateAdd(this, _fetch);
    if (!options || typeof options.baseUrl !== "string" || !options.baseUrl) {
      throw new TypeError('BgtasksClient: baseUrl is required (e.g. "http://127.0.0.1:4300")');
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    __privateSet(this, _token, options.token || void 0);
    __privateSet(this, _fetch, options.fetch);
  }
  // ---- the spec's functions ----------------------------------------------------
  /** Create a task; resolves to its id (the spec's `createBackgroundTask`). */
  async createBackgroundTask(options) {
    return (await this.createTask(options)).id;
  }
  /** The task, or null when there is no task with this id. */
  async getBackgroundTask(id) {
    const raw = await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.getTask, { id, nullOn404: true });
    return raw === null ? null : toTask(raw);
  }
  /** All tasks, optionally filtered; ordered by priority then next run unless `sort` says otherwise. */
  async listBackgroundTasks(filter2 = {}) {
    const query = {
      status: filter2.status,
      type: filter2.type,
      priority: filter2.priority,
      sort: filter2.sort
    };
    const raw = await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.listTasks, { query });
    return raw.map(toTask);
  }
  /** Stop the task for good: no further runs; pending runs are cancelled, running ones stopped. */
  async cancelBackgroundTask(id) {
    await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.cancelTask, { id });
  }
  /**
   * Run the task once, `delaySeconds` (a whole number, 0..86400) from now,
   * whatever its schedule (the spec's `executeDemoTask`). Use `getTaskResult`
   * to see the outcome. A paused or cancelled task answers 409.
   */
  async executeDemoTask(id, delaySeconds) {
    const body = { delaySeconds };
    await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.runTask, { id, body });
  }
  // ---- the rest of the API ------------------------------------------------------
  /** Create a task; resolves to the created task. */
  async createTask(options) {
    return toTask(await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.createTask, { body: options }));
  }
  /** No scheduled or queued run starts until `resumeBackgroundTask`. */
  async pauseBackgroundTask(id) {
    return toTask(await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.pauseTask, { id }));
  }
  async resumeBackgroundTask(id) {
    return toTask(await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.resumeTask, { id }));
  }
  /** Start a run now; resolves to the run's id. */
  async runBackgroundTask(id) {
    return (await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.runTask, { id })).runId;
  }
  /** Remove the task (its pending runs are cancelled, running ones stopped). */
  async deleteBackgroundTask(id) {
    await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.deleteTask, { id });
  }
  /** The task's runs that have started, newest first (at most `limit`, 1..200, default 50). */
  async getTaskHistory(id, limit) {
    const query = { limit: limit === void 0 ? void 0 : String(limit) };
    const raw = await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.taskHistory, { id, query });
    return raw.map(toRun);
  }
  /**
   * The outcome of the task's latest finished run, or null while no run has
   * finished. Throws `BgtasksError` (404) when there is no such task.
   */
  async getTaskResult(id) {
    const raw = await __privateMethod(this, _BgtasksClient_instances, request_fn).call(this, ROUTES.taskResult, {
      id,
      nullOn404: (p) => p.title === PROBLEM_TITLE_NO_RESULT
    });
    return raw === null ? null : toResult(raw);
  }
};
_token = new WeakMap();
_fetch = new WeakMap();
_BgtasksClient_instances = new WeakSet();
request_fn = async function([method, template], opts = {}) {
  let path = template;
  if (template.includes("{task_id}")) {
    if (typeof opts.id !== "string" || !opts.id) throw new TypeError("a task id is required");
    path = template.replace("{task_id}", encodeURIComponent(opts.id));
  }
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== void 0) params.set(k, v);
  const qs = params.toString();
  const url = `${this.baseUrl}${path}${qs ? `?${qs}` : ""}`;
  const headers = { Accept: "application/json, application/problem+json" };
  if (__privateGet(this, _token)) headers["Authorization"] = `Bearer ${__privateGet(this, _token)}`;
  const init = { method: method.toUpperCase(), headers };
  if (opts.body !== void 0) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(opts.body);
  }
  const response = __privateGet(this, _fetch) ? await __privateGet(this, _fetch).call(this, url, init) : await fetch(url, init);
  const text = await response.text();
  if (!response.ok) {
    const problem = toProblem(response, text);
    const nullOn404 = opts.nullOn404;
    if (response.status === 404 && (nullOn404 === true || typeof nullOn404 === "function" && nullOn404(problem))) {
      return null;
    }
    throw new BgtasksError(problem);
  }
  if (!text) return void 0;
  return JSON.parse(text);
};
function toProblem(response, text) {
  let body;
  try {
    body = text ? JSON.parse(text) : void 0;
  } catch {
    body = void 0;
  }
  const fallback = response.statusText || `HTTP ${response.status}`;
  if (body && typeof body === "object" && !Array.isArray(body)) {
    const b = body;
    let errors;
    if (Array.isArray(b["errors"])) {
      errors = b["errors"].map((e) => ({
        field: String(e?.["field"] ?? ""),
        message: String(e?.["message"] ?? "")
      }));
    } else if (Array.isArray(b["detail"])) {
      errors = b["detail"].map((e) => ({
        field: Array.isArray(e?.["loc"]) ? e["loc"].filter((p) => !["body", "query", "path"].includes(String(p))).join(".") : "",
        message: String(e?.["msg"] ?? "")
      }));
    }
    const detail = typeof b["detail"] === "string" ? b["detail"] : errors ? errors.map((e) => e.field ? `${e.field}: ${e.message}` : e.message).join("; ") : "";
    const problem = {
      type: typeof b["type"] === "string" ? b["type"] : "about:blank",
      title: typeof b["title"] === "string" ? b["title"] : fallback,
      status: typeof b["status"] === "number" ? b["status"] : response.status,
      detail
    };
    if (errors) problem.errors = errors;
    return problem;
  }
  return { type: "about:blank", title: fallback, status: response.status, detail: text.slice(0, 500) };
}
function withDates(raw, fields) {
  const out = { ...raw };
  for (const f of fields) {
    const v = out[f];
    if (typeof v === "string") out[f] = new Date(v);
  }
  return out;
}
function toSchedule(raw) {
  return withDates(raw, ["startTime", "endTime"]);
}
function toResult(raw) {
  return withDates(raw, ["executedAt"]);
}
function toTask(raw) {
  const task = withDates(raw, ["createdAt", "scheduledFor", "lastRun", "nextRun"]);
  if (raw.result) task.result = toResult(raw.result);
  if (raw.schedule) task.schedule = toSchedule(raw.schedule);
  if (raw.waiting) task.waiting = raw.waiting.map((w) => withDates(w, ["since"]));
  if (task.paused === void 0) task.paused = false;
  return task;
}
function toRun(raw) {
  const run = withDates(raw, ["scheduledFor", "startedAt", "endedAt"]);
  if (raw.result) run.result = toResult(raw.result);
  return run;
}

// panel/main.ts
var SLOW_REFRESH_MS = 3e4;
var ICONS = {
  pending: "M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18M12 7v5l3 2",
  running: "M8 5v14l11-7z",
  completed: "M4 12l5 5L20 6",
  failed: "M6 6l12 12M18 6L6 18",
  cancelled: "M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18M6 6l12 12",
  paused: "M8 5v14M16 5v14"
};
function icon(kind) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", ICONS[kind]);
  svg.append(path);
  return svg;
}
var session = null;
var client = null;
var tasks = [];
var selected = null;
var events = null;
var refreshTimer;
var slowTimer;
var $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el;
};
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== void 0) el.append(c);
  return el;
}
var canWrite = () => !!session && session.scopes.includes("tasks:write");
async function api(path, init = {}) {
  return fetch(path, { credentials: "same-origin", ...init });
}
async function readSession() {
  const r = await api("/ui/session");
  return r.ok ? await r.json() : null;
}
async function login(token) {
  const r = await api("/ui/session", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token })
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.errors?.[0]?.message ? `The token ${body.errors[0].message}` : body.detail ?? r.statusText);
  session = body;
}
function makeClient(s) {
  const withCsrf = (input2, init = {}) => {
    const headers = new Headers(init.headers);
    if (s.csrf) headers.set("X-CSRF-Token", s.csrf);
    return fetch(input2, { ...init, headers, credentials: "same-origin" });
  };
  return new BgtasksClient({ baseUrl: location.origin, fetch: withCsrf });
}
async function start() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) {
    history.replaceState(null, "", location.pathname);
    try {
      await login(token);
    } catch (e) {
      log(false, `Login link refused: ${e.message}`);
    }
  }
  session ?? (session = await readSession());
  if (!session) {
    showLogin();
    return;
  }
  showApp();
}
function showLogin() {
  $("app-view").hidden = true;
  $("logout").hidden = true;
  $("login-view").hidden = false;
  $("whoami").textContent = "";
  $("login-token").focus();
}
function showApp() {
  if (!session) return;
  client = makeClient(session);
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("logout").hidden = !session.auth;
  $("whoami").textContent = session.auth ? `${session.name} (${canWrite() ? "read and write" : "read only"})` : "no authentication";
  $("prefect-link").href = session.prefectUi;
  for (const el of document.querySelectorAll(".write")) el.hidden = !canWrite();
  listen();
  void refresh();
  const fragment = new URLSearchParams(location.hash.slice(1));
  const byId = fragment.get("task");
  const byName = fragment.get("task-name");
  if (byId) void openDetails(byId);
  else if (byName) void openByName(byName);
}
function listen() {
  events?.close();
  events = new EventSource("/tasks/events");
  const live = $("live");
  events.onopen = () => {
    window.clearInterval(slowTimer);
    slowTimer = void 0;
    live.textContent = "● live";
    live.title = "Updates arrive as runs and tasks change";
  };
  events.onerror = () => {
    live.textContent = "○ reconnecting";
    live.title = "The event stream is reconnecting; meanwhile the list is read every 30 s";
    if (slowTimer === void 0) slowTimer = window.setInterval(() => void refresh(), SLOW_REFRESH_MS);
  };
  const changed = (e) => {
    const m = JSON.parse(e.data);
    scheduleRefresh(m.kind === "resync" || m.taskId !== void 0 && m.taskId === selected);
  };
  for (const kind of ["run", "task", "resync"]) events.addEventListener(kind, changed);
}
var detailsDirty = false;
function scheduleRefresh(details) {
  detailsDirty || (detailsDirty = details);
  window.clearTimeout(refreshTimer);
  refreshTimer = window.setTimeout(() => {
    const withDetails = detailsDirty;
    detailsDirty = false;
    void refresh(withDetails);
  }, 250);
}
function filter() {
  const f = { sort: $("sort").value };
  const status = $("filter-status").value;
  const type = $("filter-type").value;
  if (status) f.status = status;
  if (type) f.type = type;
  return f;
}
var listReads = 0;
async function refresh(withDetails = true) {
  if (!client) return;
  const read = ++listReads;
  try {
    const got = await client.listBackgroundTasks(filter());
    if (read !== listReads) return;
    tasks = got;
    renderList();
    if (withDetails && selected) await openDetails(selected, false);
  } catch (e) {
    if (e instanceof BgtasksError && e.status === 401) return loggedOut();
    log(false, `Could not read the tasks: ${message(e)}`);
  }
}
function when(d) {
  return d ? d.toLocaleString([], { dateStyle: "short", timeStyle: "medium" }) : "—";
}
function resultText(r) {
  if (!r) return "—";
  const took = `${(r.duration / 1e3).toFixed(1)} s`;
  return r.success ? `✔ succeeded (${took})` : `✖ ${r.error ?? "failed"}`;
}
function waitingFor(reason) {
  const names = reason.match(/\b(requires\w+|networkType=[\w-]+)/g);
  return names ? [...new Set(names)].join(", ") : reason;
}
function statusCell(t) {
  const waiting = t.waiting?.[0];
  const label = `${t.paused ? "paused, " : ""}${t.status}${waiting ? ` (waiting: ${waitingFor(waiting.reason)})` : ""}`;
  return h(
    "span",
    { class: `status s-${t.status}`, title: waiting ? waiting.reason : label },
    icon(t.paused ? "paused" : t.status),
    ` ${label}`
  );
}
function renderList() {
  const body = $("task-table").querySelector("tbody");
  body.replaceChildren();
  for (const t of tasks) {
    const actions = h("div", { class: "actions" });
    actions.append(button("Details", () => void openDetails(t.id), `Details of ${t.name}`));
    if (canWrite() && t.status !== "cancelled") {
      actions.append(button("Run now", () => void runNow(t), `Run ${t.name} now`));
      actions.append(t.paused ? button("Resume", () => void act("Resumed", t, (c) => c.resumeBackgroundTask(t.id)), `Resume ${t.name}`) : button("Pause", () => void act("Paused", t, (c) => c.pauseBackgroundTask(t.id)), `Pause ${t.name}`));
      actions.append(button(
        "Cancel",
        () => void act("Cancelled", t, (c) => c.cancelBackgroundTask(t.id)),
        `Cancel ${t.name}`
      ));
    }
    const row = h(
      "tr",
      { "data-task-id": t.id, ...t.id === selected ? { "aria-current": "true" } : {} },
      h("td", {}, statusCell(t)),
      h("td", {}, h("a", { href: `#task=${t.id}` }, t.name)),
      h("td", {}, t.type),
      h("td", {}, h("span", { class: `prio p-${t.priority}` }, t.priority)),
      h("td", { class: "next-run" }, when(t.nextRun)),
      h("td", { class: "last-result" }, resultText(t.result)),
      h("td", {}, actions)
    );
    body.append(row);
  }
  $("empty").hidden = tasks.length > 0;
  $("demo-run").disabled = !selected;
}
function button(label, onClick, aria) {
  const b = h("button", { type: "button", ...aria ? { "aria-label": aria } : {} }, label);
  b.addEventListener("click", onClick);
  return b;
}
async function openByName(name) {
  const all = await client.listBackgroundTasks({ sort: "name" });
  const t = all.find((x) => x.name === name);
  if (t) await openDetails(t.id);
  else log(false, `No task named ${name}`);
}
var detailReads = 0;
async function openDetails(id, focus = true) {
  if (!client || !session) return;
  const read = ++detailReads;
  let task;
  let runs;
  try {
    ;
    [task, runs] = await Promise.all([client.getBackgroundTask(id), client.getTaskHistory(id, 50)]);
    if (read !== detailReads) return;
  } catch (e) {
    if (!(e instanceof BgtasksError && e.status === 404)) return log(false, `Could not read the task: ${message(e)}`);
    task = null;
    runs = [];
  }
  const section = $("details");
  if (!task) {
    if (selected === id) closeDetails();
    return;
  }
  selected = id;
  $("demo-run").disabled = false;
  for (const tr of document.querySelectorAll("#task-table tbody tr")) {
    if (tr.dataset["taskId"] === id) tr.setAttribute("aria-current", "true");
    else tr.removeAttribute("aria-current");
  }
  $("details-title").textContent = task.name;
  $("details-body").replaceChildren(...detailsOf(task, runs, session.prefectUi));
  section.hidden = false;
  if (focus) section.focus();
}
function closeDetails() {
  selected = null;
  $("details").hidden = true;
  $("demo-run").disabled = true;
  if (location.hash) history.replaceState(null, "", location.pathname);
}
function dl(rows) {
  const list = h("dl", { class: "facts" });
  for (const [k, v] of rows) list.append(h("dt", {}, k), h("dd", {}, v));
  return list;
}
function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}
function ms(n) {
  if (n === void 0) return "—";
  if (n % 36e5 === 0) return `${n / 36e5} h`;
  if (n % 6e4 === 0) return `${n / 6e4} min`;
  return n % 1e3 === 0 ? `${n / 1e3} s` : `${n} ms`;
}
function scheduleText(t) {
  const s = t.schedule;
  if (!s) return t.type;
  if (t.type === "triggered" && t.trigger) {
    return `on ${t.trigger.on}${t.trigger.path ? ` in ${t.trigger.path}` : ""}${t.trigger.pattern ? ` (${t.trigger.pattern})` : ""}`;
  }
  if (s.cron) return `cron ${s.cron} (${s.timezone ?? "UTC"})`;
  if (s.interval) return `every ${ms(s.interval)} from ${when(s.startTime)}${s.endTime ? ` until ${when(s.endTime)}` : ""}`;
  return `once at ${when(s.startTime)}`;
}
function constraintsText(c) {
  const on = Object.entries(c ?? {}).filter(([, v]) => v === true).map(([k]) => k);
  return on.length ? on.join(", ") : "none";
}
function retryText(p) {
  if (!p || p.maxRetries === 0) return "none";
  return `${p.maxRetries} retries, backoff ${ms(p.initialBackoffMs)} ×${p.backoffMultiplier ?? 2} up to ${ms(p.maxBackoffMs)}`;
}
function detailsOf(t, runs, prefectUi) {
  const out = [];
  out.push(h(
    "p",
    {},
    statusCell(t),
    " · ",
    h(
      "a",
      { href: `${prefectUi}/deployments/deployment/${t.id}`, target: "_blank", rel: "noopener" },
      "Open in the Prefect UI"
    )
  ));
  out.push(dl([
    ["Id", t.id],
    ["Description", t.description ?? "—"],
    ["Type", t.type],
    ["Priority", t.priority],
    ["Handler", t.handler ?? "—"],
    ["Schedule", scheduleText(t)],
    ["Constraints", constraintsText(t.constraints)],
    ["Retry policy", retryText(t.retryPolicy)],
    ["Timeout", ms(t.timeoutMs)],
    ["Created", when(t.createdAt)],
    ["Scheduled for", when(t.scheduledFor)],
    ["Last run", when(t.lastRun)],
    ["Next run", when(t.nextRun)],
    ["Paused", t.paused ? "yes" : "no"]
  ]));
  if (t.waiting?.length) {
    out.push(h("h3", {}, "Waiting for constraints"));
    const ul = h("ul", { class: "waiting" });
    for (const w of t.waiting) ul.append(h("li", {}, `Run ${w.runId.slice(0, 8)}: ${w.reason} (since ${when(w.since)})`));
    out.push(ul);
  }
  if (t.target) out.push(h("h3", {}, "Devices"), json(t.target));
  if (t.data !== void 0 && t.data !== null) out.push(h("h3", {}, "Data"), json(t.data));
  out.push(h("h3", {}, "Last result"));
  if (t.result) {
    out.push(dl([
      ["Outcome", resultText(t.result)],
      ["State", t.result.state ?? "—"],
      ["Attempts", String(t.result.attempts ?? "—")],
      ["Executed at", when(t.result.executedAt)],
      ["Duration", `${t.result.duration} ms`]
    ]));
    if (t.result.error) out.push(h("p", { class: "error-text" }, t.result.error));
    if (t.result.data !== void 0) out.push(json(t.result.data));
  } else out.push(h("p", { class: "muted" }, "No run has finished yet."));
  out.push(h("h3", {}, "History"));
  if (!runs.length) {
    out.push(h("p", { class: "muted" }, "No runs yet."));
    return out;
  }
  const table = h(
    "table",
    { class: "history" },
    h("caption", { class: "sr-only" }, "Runs, newest first"),
    h("thead", {}, h("tr", {}, ...["Run", "State", "Scheduled", "Started", "Ended", "Attempts", "Outcome"].map((c) => h("th", { scope: "col" }, c))))
  );
  const tbody = h("tbody");
  for (const r of runs) {
    const outcome = h("td", {});
    if (r.result) {
      outcome.append(resultText(r.result));
      const devices = deviceRows(r.result);
      if (devices) outcome.append(devices);
      else if (r.result.data !== void 0) outcome.append(h("details", {}, h("summary", {}, "data"), json(r.result.data)));
    } else if (r.message) outcome.append(r.message);
    tbody.append(h(
      "tr",
      {},
      h("td", {}, h("a", {
        href: `${prefectUi}/runs/flow-run/${r.id}`,
        target: "_blank",
        rel: "noopener",
        "aria-label": `Run ${r.id} in the Prefect UI`
      }, r.id.slice(0, 8))),
      h("td", {}, r.state),
      h("td", {}, when(r.scheduledFor)),
      h("td", {}, when(r.startedAt)),
      h("td", {}, when(r.endedAt)),
      h("td", {}, String(r.attempts ?? "—")),
      outcome
    ));
  }
  table.append(tbody);
  out.push(h("div", { class: "table-wrap" }, table));
  return out;
}
function deviceRows(r) {
  const data = r.data;
  if (!data || !Array.isArray(data.devices)) return null;
  const ul = h("ul", { class: "devices" });
  for (const d of data.devices) {
    const pushed = d["delivery"];
    const delivery = pushed ? `push ${pushed.outcome}${pushed.heldUntil ? ` until ${when(new Date(pushed.heldUntil))}` : ""}${pushed.reason ? ` (${pushed.reason})` : ""}` : "not pushed";
    const rep = d["report"];
    const report = rep ? `report ${rep.state}${rep.stopReason ? ` (${rep.stopReason})` : ""}${rep.error ? `: ${rep.error}` : ""}` : "no report";
    ul.append(h("li", {}, `${d["deviceId"]} (${d["platform"]}, ${d["transport"]}): ${delivery}; ${report}`));
  }
  return h("details", { open: "" }, h("summary", {}, `${data.devices.length} devices`), ul);
}
async function act(done, t, op) {
  try {
    await op(client);
    log(true, `${done} ${t.name}`);
  } catch (e) {
    log(false, `${t.name}: ${message(e)}`);
  }
  await refresh();
}
async function runNow(t) {
  try {
    const runId = await client.runBackgroundTask(t.id);
    log(true, `Started a run of ${t.name} (${runId.slice(0, 8)})`);
  } catch (e) {
    log(false, `${t.name}: ${message(e)}`);
  }
  await refresh();
}
function stamp() {
  return (/* @__PURE__ */ new Date()).toISOString().replace(/[-:T]/g, "").slice(0, 14);
}
async function demo(kind) {
  const options = kind === "quick" ? {
    name: `demo-${stamp()}`,
    handler: "demo",
    schedule: { type: "one-time" },
    data: { sleepSeconds: 2, message: "Hello from the panel" }
  } : {
    name: `fail-${stamp()}`,
    handler: "demo",
    schedule: { type: "one-time" },
    data: { fail: true, errorMessage: "Simulated failure" },
    retryPolicy: { maxRetries: 2, initialBackoffMs: 1e3, backoffMultiplier: 2 }
  };
  await create(options);
}
async function clearCompleted() {
  const done = await client.listBackgroundTasks({ status: "completed", type: "one-time" });
  let n = 0;
  for (const t of done) {
    try {
      await client.deleteBackgroundTask(t.id);
      n++;
    } catch (e) {
      log(false, `${t.name}: ${message(e)}`);
    }
  }
  log(true, `Cleared ${n} completed task${n === 1 ? "" : "s"}`);
  if (selected && done.some((t) => t.id === selected)) closeDetails();
  await refresh();
}
async function create(options) {
  try {
    const t = await client.createTask(options);
    $("create-form").reset();
    syncFormType();
    log(true, `Created ${t.name} (${t.type}, next run ${when(t.nextRun)})`);
    for (const w of t.warnings ?? []) log(false, `${t.name}: ${w}`);
    await refresh(false);
    await openDetails(t.id, false);
    return true;
  } catch (e) {
    log(false, `Create ${options.name}: ${message(e)}`);
    if (e instanceof BgtasksError) showFieldErrors(e);
    return false;
  }
}
function input(name) {
  return $("create-form").querySelector(`[name="${name}"]`);
}
function localDate(value) {
  return value ? new Date(value) : void 0;
}
function number(name) {
  const v = input(name).value.trim();
  return v === "" ? void 0 : Number(v);
}
function formOptions() {
  const type = input("type").value;
  const options = {
    name: input("name").value.trim(),
    schedule: { type },
    priority: input("priority").value
  };
  const description = input("description").value.trim();
  if (description) options.description = description;
  const start2 = localDate(input("startTime").value);
  if (start2 && type !== "triggered") options.schedule.startTime = start2;
  if (type === "periodic") {
    const cron = input("cron").value.trim();
    const every = number("every");
    if (cron) options.schedule.cron = cron;
    else if (every !== void 0) options.schedule.interval = every * Number(input("everyUnit").value);
    const end = localDate(input("endTime").value);
    if (end) options.schedule.endTime = end;
  }
  if (type === "triggered") {
    const on = input("on").value;
    options.trigger = { on };
    if (on.startsWith("file.")) {
      const path = input("path").value.trim();
      const pattern = input("pattern").value.trim();
      if (path) options.trigger.path = path;
      if (pattern) options.trigger.pattern = pattern;
    }
  }
  const constraints = {};
  for (const key of [
    "requiresNetwork",
    "requiresWifi",
    "requiresCharging",
    "requiresBatteryNotLow",
    "requiresDeviceIdle",
    "requiresStorageNotLow"
  ]) {
    if (input(key).checked) constraints[key] = true;
  }
  if (Object.keys(constraints).length) options.constraints = constraints;
  const retries = number("maxRetries");
  if (retries) {
    options.retryPolicy = { maxRetries: retries };
    const initial = number("initialBackoffMs");
    const multiplier = number("backoffMultiplier");
    const max = number("maxBackoffMs");
    if (initial !== void 0) options.retryPolicy.initialBackoffMs = initial;
    if (multiplier !== void 0) options.retryPolicy.backoffMultiplier = multiplier;
    if (max !== void 0) options.retryPolicy.maxBackoffMs = max;
  }
  const handler = input("handler").value.trim();
  if (handler) options.handler = handler;
  const timeout = number("timeout");
  if (timeout !== void 0) options.timeoutMs = timeout * 1e3;
  const data = input("data").value.trim();
  if (data) {
    try {
      options.data = JSON.parse(data);
    } catch (e) {
      setFieldError("data", `is not JSON: ${e.message}`);
      return null;
    }
  }
  return options;
}
function clearFieldErrors() {
  for (const p of document.querySelectorAll("#create-form .field-error")) p.textContent = "";
  for (const el of document.querySelectorAll("#create-form [aria-invalid]")) el.removeAttribute("aria-invalid");
}
function setFieldError(field, text) {
  let path = field;
  let target = null;
  while (path && !(target = document.getElementById(`err-${path}`))) path = path.includes(".") ? path.slice(0, path.lastIndexOf(".")) : "";
  target ?? (target = $("err-form"));
  target.textContent = target.textContent ? `${target.textContent} ${field}: ${text}` : `${field}: ${text}`;
  const control = document.querySelector(`#create-form [aria-describedby~="${target.id}"]`);
  control?.setAttribute("aria-invalid", "true");
}
function showFieldErrors(e) {
  if (!e.errors.length) setFieldError("form", e.detail || e.title);
  for (const fe of e.errors) setFieldError(fe.field, fe.message);
  document.querySelector('#create-form [aria-invalid="true"]')?.focus();
}
function syncFormType() {
  const type = input("type").value;
  $("fs-schedule").hidden = type === "triggered";
  for (const el of document.querySelectorAll(".periodic-only")) el.hidden = type !== "periodic";
  $("fs-trigger").hidden = type !== "triggered";
  for (const el of document.querySelectorAll(".file-only")) el.hidden = !input("on").value.startsWith("file.");
}
function message(e) {
  if (e instanceof BgtasksError) {
    const fields = e.errors.map((f) => `${f.field} ${f.message}`).join("; ");
    return fields || e.detail || e.title;
  }
  return e instanceof Error ? e.message : String(e);
}
function log(ok, text) {
  const at = /* @__PURE__ */ new Date();
  const item = h(
    "li",
    { class: ok ? "ok" : "err" },
    h("span", { class: "icon", role: "img", "aria-label": ok ? "success" : "error" }, ok ? "✔" : "✖"),
    h("time", { datetime: at.toISOString() }, at.toLocaleTimeString()),
    h("span", { class: "text" }, text)
  );
  $("output-log").prepend(item);
}
function loggedOut() {
  events?.close();
  window.clearInterval(slowTimer);
  slowTimer = void 0;
  session = null;
  client = null;
  log(false, "The session ended: log in again");
  showLogin();
}
function wire() {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const field = $("login-token");
    const err = $("login-error");
    err.textContent = "";
    field.removeAttribute("aria-invalid");
    try {
      await login(field.value.trim());
      field.value = "";
      log(true, `Logged in as ${session?.name}`);
      showApp();
    } catch (e) {
      err.textContent = e.message;
      field.setAttribute("aria-invalid", "true");
      field.focus();
    }
  });
  $("logout").addEventListener("click", async () => {
    await api("/ui/session", { method: "DELETE" });
    events?.close();
    window.clearInterval(slowTimer);
    slowTimer = void 0;
    session = null;
    client = null;
    showLogin();
  });
  for (const id of ["filter-status", "filter-type", "sort"]) $(id).addEventListener("change", () => void refresh(false));
  $("refresh").addEventListener("click", () => void refresh());
  $("details-close").addEventListener("click", closeDetails);
  $("demo-quick").addEventListener("click", () => void demo("quick"));
  $("demo-fail").addEventListener("click", () => void demo("fail"));
  $("demo-clear").addEventListener("click", () => void clearCompleted());
  $("demo-run").addEventListener("click", () => {
    const t = tasks.find((x) => x.id === selected);
    if (t) void runNow(t);
  });
  $("output-clear").addEventListener("click", () => $("output-log").replaceChildren());
  input("type").addEventListener("change", syncFormType);
  input("on").addEventListener("change", syncFormType);
  syncFormType();
  $("create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    clearFieldErrors();
    const options = formOptions();
    if (options) await create(options);
  });
  window.addEventListener("hashchange", () => {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const id = fragment.get("task");
    if (id && session) void openDetails(id);
  });
}
wire();
void start();
