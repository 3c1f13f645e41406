/**
 * The bgtasks task panel (served at /ui by the REST API): the module spec's creation
 * form, task list, task details, demo controls and output panel, through the
 * TypeScript client only. Built into bgtasks/api/panel/static/panel.js by `make panel`.
 *
 * Login: the API turns a token into HttpOnly cookies (the page never keeps the token);
 * writes carry the session's CSRF token. Live: server-sent events from /tasks/events
 * (runs and tasks changing, whoever changed them); a slow refresh only while the stream
 * is down.
 */

import { BgtasksClient, BgtasksError } from '../src/client.js'
import type {
  BackgroundTask,
  CreateTaskOptions,
  RetryPolicy,
  TaskConstraints,
  TaskFilter,
  TaskResult,
  TaskRun,
  TaskStatus,
  TaskType,
  TriggerEvent,
} from '../src/types.js'

interface Session {
  name: string | null
  scopes: string[]
  csrf: string
  auth: boolean
  prefectUi: string
}

/** While the event stream is down, read the list this often. */
const SLOW_REFRESH_MS = 30_000
/** Status icons as SVG paths (24x24, stroked): no font or emoji needed. */
const ICONS: Record<TaskStatus | 'paused', string> = {
  pending: 'M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18M12 7v5l3 2',
  running: 'M8 5v14l11-7z',
  completed: 'M4 12l5 5L20 6',
  failed: 'M6 6l12 12M18 6L6 18',
  cancelled: 'M12 3a9 9 0 1 0 0 18a9 9 0 1 0 0-18M6 6l12 12',
  paused: 'M8 5v14M16 5v14',
}

function icon(kind: keyof typeof ICONS): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg'
  const svg = document.createElementNS(ns, 'svg')
  svg.setAttribute('viewBox', '0 0 24 24')
  svg.setAttribute('aria-hidden', 'true')
  svg.setAttribute('class', 'icon')
  const path = document.createElementNS(ns, 'path')
  path.setAttribute('d', ICONS[kind])
  svg.append(path)
  return svg
}

let session: Session | null = null
let client: BgtasksClient | null = null
let tasks: BackgroundTask[] = []
let selected: string | null = null
let events: EventSource | null = null
let refreshTimer: number | undefined
let slowTimer: number | undefined

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => {
  const el = document.getElementById(id)
  if (!el) throw new Error(`#${id} is missing`)
  return el as T
}

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v)
  for (const c of children) if (c !== null && c !== undefined) el.append(c)
  return el
}

const canWrite = (): boolean => !!session && session.scopes.includes('tasks:write')

// ---- session -------------------------------------------------------------------

async function api(path: string, init: RequestInit = {}): Promise<Response> {
  return fetch(path, { credentials: 'same-origin', ...init })
}

async function readSession(): Promise<Session | null> {
  const r = await api('/ui/session')
  return r.ok ? ((await r.json()) as Session) : null
}

async function login(token: string): Promise<void> {
  const r = await api('/ui/session', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ token }),
  })
  const body = await r.json().catch(() => ({}))
  if (!r.ok) throw new Error(body.errors?.[0]?.message ? `The token ${body.errors[0].message}` : body.detail ?? r.statusText)
  session = body as Session
}

function makeClient(s: Session): BgtasksClient {
  // Same-origin requests carry the session cookie; writes add the CSRF token.
  const withCsrf: typeof fetch = (input, init = {}) => {
    const headers = new Headers(init.headers)
    if (s.csrf) headers.set('X-CSRF-Token', s.csrf)
    return fetch(input, { ...init, headers, credentials: 'same-origin' })
  }
  return new BgtasksClient({ baseUrl: location.origin, fetch: withCsrf })
}

async function start(): Promise<void> {
  const fragment = new URLSearchParams(location.hash.slice(1))
  const token = fragment.get('token')
  if (token) {
    // A login link from `bgtasks ui --open`: use the token once, then forget it.
    history.replaceState(null, '', location.pathname)
    try {
      await login(token)
    } catch (e) {
      log(false, `Login link refused: ${(e as Error).message}`)
    }
  }
  session ??= await readSession()
  if (!session) {
    showLogin()
    return
  }
  showApp()
}

function showLogin(): void {
  $('app-view').hidden = true
  $('logout').hidden = true
  $('login-view').hidden = false
  $('whoami').textContent = ''
  $<HTMLInputElement>('login-token').focus()
}

function showApp(): void {
  if (!session) return
  client = makeClient(session)
  $('login-view').hidden = true
  $('app-view').hidden = false
  $('logout').hidden = !session.auth
  $('whoami').textContent = session.auth
    ? `${session.name} (${canWrite() ? 'read and write' : 'read only'})`
    : 'no authentication'
  $<HTMLAnchorElement>('prefect-link').href = session.prefectUi
  for (const el of document.querySelectorAll<HTMLElement>('.write')) el.hidden = !canWrite()
  listen()
  void refresh()
  const fragment = new URLSearchParams(location.hash.slice(1))
  const byId = fragment.get('task')
  const byName = fragment.get('task-name')
  if (byId) void openDetails(byId)
  else if (byName) void openByName(byName)
}

// ---- live ------------------------------------------------------------------------

function listen(): void {
  events?.close()
  events = new EventSource('/tasks/events')
  const live = $('live')
  events.onopen = () => {
    // Live: every change arrives as an event; no polling.
    window.clearInterval(slowTimer)
    slowTimer = undefined
    live.textContent = '● live'
    live.title = 'Updates arrive as runs and tasks change'
  }
  events.onerror = () => {
    // The browser reconnects by itself; until then, read the list every 30 s.
    live.textContent = '○ reconnecting'
    live.title = 'The event stream is reconnecting; meanwhile the list is read every 30 s'
    if (slowTimer === undefined) slowTimer = window.setInterval(() => void refresh(), SLOW_REFRESH_MS)
  }
  const changed = (e: MessageEvent<string>) => {
    const m = JSON.parse(e.data) as { kind: string; taskId?: string }
    scheduleRefresh(m.kind === 'resync' || (m.taskId !== undefined && m.taskId === selected))
  }
  for (const kind of ['run', 'task', 'resync']) events.addEventListener(kind, changed)
}

/** Coalesce bursts of events into one read of the list (and of the open task). */
let detailsDirty = false
function scheduleRefresh(details: boolean): void {
  detailsDirty ||= details
  window.clearTimeout(refreshTimer)
  refreshTimer = window.setTimeout(() => {
    const withDetails = detailsDirty
    detailsDirty = false
    void refresh(withDetails)
  }, 250)
}

// ---- list ------------------------------------------------------------------------

function filter(): TaskFilter {
  const f: TaskFilter = { sort: $<HTMLSelectElement>('sort').value as TaskFilter['sort'] }
  const status = $<HTMLSelectElement>('filter-status').value
  const type = $<HTMLSelectElement>('filter-type').value
  if (status) f.status = status as TaskStatus
  if (type) f.type = type as TaskType
  return f
}

/** Each read of the list is numbered: an answer overtaken by a later read is dropped. */
let listReads = 0

async function refresh(withDetails = true): Promise<void> {
  if (!client) return
  const read = ++listReads
  try {
    const got = await client.listBackgroundTasks(filter())
    if (read !== listReads) return
    tasks = got
    renderList()
    if (withDetails && selected) await openDetails(selected, false)
  } catch (e) {
    if (e instanceof BgtasksError && e.status === 401) return loggedOut()
    log(false, `Could not read the tasks: ${message(e)}`)
  }
}

function when(d: Date | undefined): string {
  return d ? d.toLocaleString([], { dateStyle: 'short', timeStyle: 'medium' }) : '—'
}

function resultText(r: TaskResult | undefined): string {
  if (!r) return '—'
  const took = `${(r.duration / 1000).toFixed(1)} s`
  return r.success ? `✔ succeeded (${took})` : `✖ ${r.error ?? 'failed'}`
}

/** The constraints a waiting run waits for ("requiresWifi, requiresCharging"), from its reason. */
function waitingFor(reason: string): string {
  const names = reason.match(/\b(requires\w+|networkType=[\w-]+)/g)
  return names ? [...new Set(names)].join(', ') : reason
}

function statusCell(t: BackgroundTask): HTMLElement {
  const waiting = t.waiting?.[0]
  const label = `${t.paused ? 'paused, ' : ''}${t.status}${waiting ? ` (waiting: ${waitingFor(waiting.reason)})` : ''}`
  return h('span', { class: `status s-${t.status}`, title: waiting ? waiting.reason : label },
    icon(t.paused ? 'paused' : t.status), ` ${label}`)
}

function renderList(): void {
  const body = $('task-table').querySelector('tbody')!
  body.replaceChildren()
  for (const t of tasks) {
    const actions = h('div', { class: 'actions' })
    actions.append(button('Details', () => void openDetails(t.id), `Details of ${t.name}`))
    if (canWrite() && t.status !== 'cancelled') {
      actions.append(button('Run now', () => void runNow(t), `Run ${t.name} now`))
      actions.append(t.paused
        ? button('Resume', () => void act('Resumed', t, (c) => c.resumeBackgroundTask(t.id)), `Resume ${t.name}`)
        : button('Pause', () => void act('Paused', t, (c) => c.pauseBackgroundTask(t.id)), `Pause ${t.name}`))
      actions.append(button('Cancel', () => void act('Cancelled', t, (c) => c.cancelBackgroundTask(t.id)),
        `Cancel ${t.name}`))
    }
    const row = h('tr', { 'data-task-id': t.id, ...(t.id === selected ? { 'aria-current': 'true' } : {}) },
      h('td', {}, statusCell(t)),
      h('td', {}, h('a', { href: `#task=${t.id}` }, t.name)),
      h('td', {}, t.type),
      h('td', {}, h('span', { class: `prio p-${t.priority}` }, t.priority)),
      h('td', { class: 'next-run' }, when(t.nextRun)),
      h('td', { class: 'last-result' }, resultText(t.result)),
      h('td', {}, actions))
    body.append(row)
  }
  $('empty').hidden = tasks.length > 0
  $<HTMLButtonElement>('demo-run').disabled = !selected
}

function button(label: string, onClick: () => void, aria?: string): HTMLButtonElement {
  const b = h('button', { type: 'button', ...(aria ? { 'aria-label': aria } : {}) }, label)
  b.addEventListener('click', onClick)
  return b
}

// ---- details ---------------------------------------------------------------------

async function openByName(name: string): Promise<void> {
  const all = await client!.listBackgroundTasks({ sort: 'name' })
  const t = all.find((x) => x.name === name)
  if (t) await openDetails(t.id)
  else log(false, `No task named ${name}`)
}

let detailReads = 0

async function openDetails(id: string, focus = true): Promise<void> {
  if (!client || !session) return
  const read = ++detailReads
  let task: BackgroundTask | null
  let runs: TaskRun[]
  try {
    ;[task, runs] = await Promise.all([client.getBackgroundTask(id), client.getTaskHistory(id, 50)])
    if (read !== detailReads) return  // overtaken by a later read
  } catch (e) {
    if (!(e instanceof BgtasksError && e.status === 404)) return log(false, `Could not read the task: ${message(e)}`)
    task = null
    runs = []
  }
  const section = $('details')
  if (!task) {
    if (selected === id) closeDetails()
    return
  }
  selected = id
  $<HTMLButtonElement>('demo-run').disabled = false
  for (const tr of document.querySelectorAll('#task-table tbody tr')) {
    if ((tr as HTMLElement).dataset['taskId'] === id) tr.setAttribute('aria-current', 'true')
    else tr.removeAttribute('aria-current')
  }
  $('details-title').textContent = task.name
  $('details-body').replaceChildren(...detailsOf(task, runs, session.prefectUi))
  section.hidden = false
  if (focus) section.focus()
}

function closeDetails(): void {
  selected = null
  $('details').hidden = true
  $<HTMLButtonElement>('demo-run').disabled = true
  if (location.hash) history.replaceState(null, '', location.pathname)
}

function dl(rows: [string, Node | string][]): HTMLDListElement {
  const list = h('dl', { class: 'facts' })
  for (const [k, v] of rows) list.append(h('dt', {}, k), h('dd', {}, v))
  return list
}

function json(value: unknown): HTMLElement {
  return h('pre', { class: 'json' }, JSON.stringify(value, null, 2))
}

function ms(n: number | undefined): string {
  if (n === undefined) return '—'
  if (n % 3_600_000 === 0) return `${n / 3_600_000} h`
  if (n % 60_000 === 0) return `${n / 60_000} min`
  return n % 1000 === 0 ? `${n / 1000} s` : `${n} ms`
}

function scheduleText(t: BackgroundTask): string {
  const s = t.schedule
  if (!s) return t.type
  if (t.type === 'triggered' && t.trigger) {
    return `on ${t.trigger.on}${t.trigger.path ? ` in ${t.trigger.path}` : ''}${t.trigger.pattern ? ` (${t.trigger.pattern})` : ''}`
  }
  if (s.cron) return `cron ${s.cron} (${s.timezone ?? 'UTC'})`
  if (s.interval) return `every ${ms(s.interval)} from ${when(s.startTime)}${s.endTime ? ` until ${when(s.endTime)}` : ''}`
  return `once at ${when(s.startTime)}`
}

function constraintsText(c: TaskConstraints | undefined): string {
  const on = Object.entries(c ?? {}).filter(([, v]) => v === true).map(([k]) => k)
  return on.length ? on.join(', ') : 'none'
}

function retryText(p: RetryPolicy | undefined): string {
  if (!p || p.maxRetries === 0) return 'none'
  return `${p.maxRetries} retries, backoff ${ms(p.initialBackoffMs)} ×${p.backoffMultiplier ?? 2} up to ${ms(p.maxBackoffMs)}`
}

function detailsOf(t: BackgroundTask, runs: TaskRun[], prefectUi: string): Node[] {
  const out: Node[] = []
  out.push(h('p', {}, statusCell(t), ' · ',
    h('a', { href: `${prefectUi}/deployments/deployment/${t.id}`, target: '_blank', rel: 'noopener' },
      'Open in the Prefect UI')))
  out.push(dl([
    ['Id', t.id],
    ['Description', t.description ?? '—'],
    ['Type', t.type],
    ['Priority', t.priority],
    ['Handler', t.handler ?? '—'],
    ['Schedule', scheduleText(t)],
    ['Constraints', constraintsText(t.constraints)],
    ['Retry policy', retryText(t.retryPolicy)],
    ['Timeout', ms(t.timeoutMs)],
    ['Created', when(t.createdAt)],
    ['Scheduled for', when(t.scheduledFor)],
    ['Last run', when(t.lastRun)],
    ['Next run', when(t.nextRun)],
    ['Paused', t.paused ? 'yes' : 'no'],
  ]))
  if (t.waiting?.length) {
    out.push(h('h3', {}, 'Waiting for constraints'))
    const ul = h('ul', { class: 'waiting' })
    for (const w of t.waiting) ul.append(h('li', {}, `Run ${w.runId.slice(0, 8)}: ${w.reason} (since ${when(w.since)})`))
    out.push(ul)
  }
  if (t.target) out.push(h('h3', {}, 'Devices'), json(t.target))
  if (t.data !== undefined && t.data !== null) out.push(h('h3', {}, 'Data'), json(t.data))
  out.push(h('h3', {}, 'Last result'))
  if (t.result) {
    out.push(dl([
      ['Outcome', resultText(t.result)],
      ['State', t.result.state ?? '—'],
      ['Attempts', String(t.result.attempts ?? '—')],
      ['Executed at', when(t.result.executedAt)],
      ['Duration', `${t.result.duration} ms`],
    ]))
    if (t.result.error) out.push(h('p', { class: 'error-text' }, t.result.error))
    if (t.result.data !== undefined) out.push(json(t.result.data))
  } else out.push(h('p', { class: 'muted' }, 'No run has finished yet.'))

  out.push(h('h3', {}, 'History'))
  if (!runs.length) {
    out.push(h('p', { class: 'muted' }, 'No runs yet.'))
    return out
  }
  const table = h('table', { class: 'history' },
    h('caption', { class: 'sr-only' }, 'Runs, newest first'),
    h('thead', {}, h('tr', {}, ...['Run', 'State', 'Scheduled', 'Started', 'Ended', 'Attempts', 'Outcome']
      .map((c) => h('th', { scope: 'col' }, c)))))
  const tbody = h('tbody')
  for (const r of runs) {
    const outcome = h('td', {})
    if (r.result) {
      outcome.append(resultText(r.result))
      const devices = deviceRows(r.result)
      if (devices) outcome.append(devices)
      else if (r.result.data !== undefined) outcome.append(h('details', {}, h('summary', {}, 'data'), json(r.result.data)))
    } else if (r.message) outcome.append(r.message)
    tbody.append(h('tr', {},
      h('td', {}, h('a', { href: `${prefectUi}/runs/flow-run/${r.id}`, target: '_blank', rel: 'noopener',
        'aria-label': `Run ${r.id} in the Prefect UI` }, r.id.slice(0, 8))),
      h('td', {}, r.state),
      h('td', {}, when(r.scheduledFor)),
      h('td', {}, when(r.startedAt)),
      h('td', {}, when(r.endedAt)),
      h('td', {}, String(r.attempts ?? '—')),
      outcome))
  }
  table.append(tbody)
  out.push(h('div', { class: 'table-wrap' }, table))
  return out
}

/** A device task's result: each device's delivery and report. */
function deviceRows(r: TaskResult): HTMLElement | null {
  const data = r.data as { devices?: Record<string, any>[] } | undefined
  if (!data || !Array.isArray(data.devices)) return null
  const ul = h('ul', { class: 'devices' })
  for (const d of data.devices) {
    const pushed = d['delivery']
    const delivery = pushed
      ? `push ${pushed.outcome}${pushed.heldUntil ? ` until ${when(new Date(pushed.heldUntil))}` : ''}${pushed.reason ? ` (${pushed.reason})` : ''}`
      : 'not pushed'
    const rep = d['report']
    const report = rep
      ? `report ${rep.state}${rep.stopReason ? ` (${rep.stopReason})` : ''}${rep.error ? `: ${rep.error}` : ''}`
      : 'no report'
    ul.append(h('li', {}, `${d['deviceId']} (${d['platform']}, ${d['transport']}): ${delivery}; ${report}`))
  }
  return h('details', { open: '' }, h('summary', {}, `${data.devices.length} devices`), ul)
}

// ---- writes ----------------------------------------------------------------------

async function act(done: string, t: BackgroundTask, op: (c: BgtasksClient) => Promise<unknown>): Promise<void> {
  try {
    await op(client!)
    log(true, `${done} ${t.name}`)
  } catch (e) {
    log(false, `${t.name}: ${message(e)}`)
  }
  await refresh()
}

async function runNow(t: BackgroundTask): Promise<void> {
  try {
    const runId = await client!.runBackgroundTask(t.id)
    log(true, `Started a run of ${t.name} (${runId.slice(0, 8)})`)
  } catch (e) {
    log(false, `${t.name}: ${message(e)}`)
  }
  await refresh()
}

function stamp(): string {
  return new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14)
}

async function demo(kind: 'quick' | 'fail'): Promise<void> {
  const options: CreateTaskOptions = kind === 'quick'
    ? { name: `demo-${stamp()}`, handler: 'demo', schedule: { type: 'one-time' },
        data: { sleepSeconds: 2, message: 'Hello from the panel' } }
    : { name: `fail-${stamp()}`, handler: 'demo', schedule: { type: 'one-time' },
        data: { fail: true, errorMessage: 'Simulated failure' },
        retryPolicy: { maxRetries: 2, initialBackoffMs: 1000, backoffMultiplier: 2 } }
  await create(options)
}

async function clearCompleted(): Promise<void> {
  // One-time tasks whose run completed: periodic and triggered ones have runs to come.
  const done = (await client!.listBackgroundTasks({ status: 'completed', type: 'one-time' }))
  let n = 0
  for (const t of done) {
    try {
      await client!.deleteBackgroundTask(t.id)
      n++
    } catch (e) {
      log(false, `${t.name}: ${message(e)}`)
    }
  }
  log(true, `Cleared ${n} completed task${n === 1 ? '' : 's'}`)
  if (selected && done.some((t) => t.id === selected)) closeDetails()
  await refresh()
}

async function create(options: CreateTaskOptions): Promise<boolean> {
  try {
    const t = await client!.createTask(options)
    // Emptied now, not after the reads below: what the user types next must not be wiped.
    ;($('create-form') as HTMLFormElement).reset()
    syncFormType()
    log(true, `Created ${t.name} (${t.type}, next run ${when(t.nextRun)})`)
    for (const w of t.warnings ?? []) log(false, `${t.name}: ${w}`)
    await refresh(false)
    await openDetails(t.id, false)
    return true
  } catch (e) {
    log(false, `Create ${options.name}: ${message(e)}`)
    if (e instanceof BgtasksError) showFieldErrors(e)
    return false
  }
}

// ---- the creation form --------------------------------------------------------------

function input(name: string): HTMLInputElement {
  return $('create-form').querySelector(`[name="${name}"]`) as HTMLInputElement
}

function localDate(value: string): Date | undefined {
  return value ? new Date(value) : undefined
}

function number(name: string): number | undefined {
  const v = input(name).value.trim()
  return v === '' ? undefined : Number(v)
}

/** The form as CreateTaskOptions; a field that is not JSON is reported like the API would. */
function formOptions(): CreateTaskOptions | null {
  const type = input('type').value as TaskType
  const options: CreateTaskOptions = {
    name: input('name').value.trim(),
    schedule: { type },
    priority: input('priority').value as CreateTaskOptions['priority'],
  }
  const description = input('description').value.trim()
  if (description) options.description = description
  const start = localDate(input('startTime').value)
  if (start && type !== 'triggered') options.schedule.startTime = start
  if (type === 'periodic') {
    const cron = input('cron').value.trim()
    const every = number('every')
    if (cron) options.schedule.cron = cron
    else if (every !== undefined) options.schedule.interval = every * Number(input('everyUnit').value)
    const end = localDate(input('endTime').value)
    if (end) options.schedule.endTime = end
  }
  if (type === 'triggered') {
    const on = input('on').value as TriggerEvent
    options.trigger = { on }
    if (on.startsWith('file.')) {
      const path = input('path').value.trim()
      const pattern = input('pattern').value.trim()
      if (path) options.trigger.path = path
      if (pattern) options.trigger.pattern = pattern
    }
  }
  const constraints: TaskConstraints = {}
  for (const key of ['requiresNetwork', 'requiresWifi', 'requiresCharging', 'requiresBatteryNotLow',
    'requiresDeviceIdle', 'requiresStorageNotLow'] as const) {
    if (input(key).checked) constraints[key] = true
  }
  if (Object.keys(constraints).length) options.constraints = constraints
  const retries = number('maxRetries')
  if (retries) {
    options.retryPolicy = { maxRetries: retries }
    const initial = number('initialBackoffMs')
    const multiplier = number('backoffMultiplier')
    const max = number('maxBackoffMs')
    if (initial !== undefined) options.retryPolicy.initialBackoffMs = initial
    if (multiplier !== undefined) options.retryPolicy.backoffMultiplier = multiplier
    if (max !== undefined) options.retryPolicy.maxBackoffMs = max
  }
  const handler = input('handler').value.trim()
  if (handler) options.handler = handler
  const timeout = number('timeout')
  if (timeout !== undefined) options.timeoutMs = timeout * 1000
  const data = input('data').value.trim()
  if (data) {
    try {
      options.data = JSON.parse(data)
    } catch (e) {
      setFieldError('data', `is not JSON: ${(e as Error).message}`)
      return null
    }
  }
  return options
}

function clearFieldErrors(): void {
  for (const p of document.querySelectorAll<HTMLElement>('#create-form .field-error')) p.textContent = ''
  for (const el of document.querySelectorAll('#create-form [aria-invalid]')) el.removeAttribute('aria-invalid')
}

/** Show an error beside the field the API named (its JSON path), or its nearest parent. */
function setFieldError(field: string, text: string): void {
  let path = field
  let target: HTMLElement | null = null
  while (path && !(target = document.getElementById(`err-${path}`))) path = path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : ''
  target ??= $('err-form')
  target.textContent = target.textContent ? `${target.textContent} ${field}: ${text}` : `${field}: ${text}`
  const control = document.querySelector(`#create-form [aria-describedby~="${target.id}"]`)
  control?.setAttribute('aria-invalid', 'true')
}

function showFieldErrors(e: BgtasksError): void {
  if (!e.errors.length) setFieldError('form', e.detail || e.title)
  for (const fe of e.errors) setFieldError(fe.field, fe.message)
  document.querySelector<HTMLElement>('#create-form [aria-invalid="true"]')?.focus()
}

function syncFormType(): void {
  const type = input('type').value
  $('fs-schedule').hidden = type === 'triggered'
  for (const el of document.querySelectorAll<HTMLElement>('.periodic-only')) el.hidden = type !== 'periodic'
  $('fs-trigger').hidden = type !== 'triggered'
  for (const el of document.querySelectorAll<HTMLElement>('.file-only')) el.hidden = !input('on').value.startsWith('file.')
}

// ---- output panel ---------------------------------------------------------------------

function message(e: unknown): string {
  if (e instanceof BgtasksError) {
    const fields = e.errors.map((f) => `${f.field} ${f.message}`).join('; ')
    return fields || e.detail || e.title
  }
  return e instanceof Error ? e.message : String(e)
}

function log(ok: boolean, text: string): void {
  const at = new Date()
  const item = h('li', { class: ok ? 'ok' : 'err' },
    h('span', { class: 'icon', role: 'img', 'aria-label': ok ? 'success' : 'error' }, ok ? '✔' : '✖'),
    h('time', { datetime: at.toISOString() }, at.toLocaleTimeString()),
    h('span', { class: 'text' }, text))
  $('output-log').prepend(item)
}

function loggedOut(): void {
  events?.close()
  window.clearInterval(slowTimer)
  slowTimer = undefined
  session = null
  client = null
  log(false, 'The session ended: log in again')
  showLogin()
}

// ---- wiring -------------------------------------------------------------------------------

function wire(): void {
  $('login-form').addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const field = $<HTMLInputElement>('login-token')
    const err = $('login-error')
    err.textContent = ''
    field.removeAttribute('aria-invalid')
    try {
      await login(field.value.trim())
      field.value = ''
      log(true, `Logged in as ${session?.name}`)
      showApp()
    } catch (e) {
      err.textContent = (e as Error).message
      field.setAttribute('aria-invalid', 'true')
      field.focus()
    }
  })
  $('logout').addEventListener('click', async () => {
    await api('/ui/session', { method: 'DELETE' })
    events?.close()
    window.clearInterval(slowTimer)
    slowTimer = undefined
    session = null
    client = null
    showLogin()
  })
  for (const id of ['filter-status', 'filter-type', 'sort']) $(id).addEventListener('change', () => void refresh(false))
  $('refresh').addEventListener('click', () => void refresh())
  $('details-close').addEventListener('click', closeDetails)
  $('demo-quick').addEventListener('click', () => void demo('quick'))
  $('demo-fail').addEventListener('click', () => void demo('fail'))
  $('demo-clear').addEventListener('click', () => void clearCompleted())
  $('demo-run').addEventListener('click', () => {
    const t = tasks.find((x) => x.id === selected)
    if (t) void runNow(t)
  })
  $('output-clear').addEventListener('click', () => $('output-log').replaceChildren())
  input('type').addEventListener('change', syncFormType)
  input('on').addEventListener('change', syncFormType)
  syncFormType()
  $('create-form').addEventListener('submit', async (ev) => {
    ev.preventDefault()
    clearFieldErrors()
    const options = formOptions()
    if (options) await create(options)
  })
  window.addEventListener('hashchange', () => {
    const fragment = new URLSearchParams(location.hash.slice(1))
    const id = fragment.get('task')
    if (id && session) void openDetails(id)
  })
}

wire()
void start()
