/**
 * A typed client of the bgtasks REST API, for app front ends. No runtime
 * dependencies: it uses the global `fetch` (browsers, Node 18+, Deno, Bun,
 * Tauri/Electron webviews) or the one passed in.
 */

import type {
  BackgroundTask,
  BackgroundTaskJson,
  CreateTaskOptions,
  FieldError,
  Problem,
  RunRequest,
  RunResponse,
  TaskFilter,
  TaskResult,
  TaskRun,
  WaitingRun,
  TaskSchedule,
  Wire,
} from './types.js'

export interface ClientOptions {
  /** The API's base URL, e.g. "http://127.0.0.1:4300" (a path prefix is kept). */
  baseUrl: string
  /** Sent as `Authorization: Bearer <token>` when given. */
  token?: string
  /** A `fetch` to use instead of the global one (tests, proxies, Tauri's HTTP plugin). */
  fetch?: typeof fetch
}

/**
 * The API's routes, by client operation: `[method, path template]`. Paths use
 * the OpenAPI document's spelling so that src/check.ts can verify each one.
 */
export const ROUTES = {
  createTask: ['post', '/tasks'],
  listTasks: ['get', '/tasks'],
  getTask: ['get', '/tasks/{task_id}'],
  deleteTask: ['delete', '/tasks/{task_id}'],
  taskHistory: ['get', '/tasks/{task_id}/history'],
  taskResult: ['get', '/tasks/{task_id}/result'],
  runTask: ['post', '/tasks/{task_id}/run'],
  pauseTask: ['post', '/tasks/{task_id}/pause'],
  resumeTask: ['post', '/tasks/{task_id}/resume'],
  cancelTask: ['post', '/tasks/{task_id}/cancel'],
} as const

type Route = (typeof ROUTES)[keyof typeof ROUTES]

const PROBLEM_TITLE_NO_RESULT = 'No result yet'

/** A non-2xx answer of the API, with its RFC 9457 problem document. */
export class BgtasksError extends Error {
  override readonly name = 'BgtasksError'
  /** HTTP status (422 invalid input, 404 not found, 409 conflict, 401/403 auth...). */
  readonly status: number
  readonly title: string
  readonly detail: string
  /** One entry per invalid field (422); empty otherwise. */
  readonly errors: FieldError[]
  readonly problem: Problem

  constructor(problem: Problem) {
    super(`${problem.status} ${problem.title}${problem.detail ? `: ${problem.detail}` : ''}`)
    this.problem = problem
    this.status = problem.status
    this.title = problem.title
    this.detail = problem.detail
    this.errors = problem.errors ?? []
  }

  /** The error naming `field` (its JSON path, e.g. "priority" or "schedule.interval"), if any. */
  fieldError(field: string): FieldError | undefined {
    return this.errors.find((e) => e.field === field)
  }
}

export class BgtasksClient {
  readonly baseUrl: string
  readonly #token: string | undefined
  readonly #fetch: typeof fetch | undefined

  constructor(options: ClientOptions) {
    if (!options || typeof options.baseUrl !== 'string' || !options.baseUrl) {
      throw new TypeError('BgtasksClient: baseUrl is required (e.g. "http://127.0.0.1:4300")')
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, '')
    this.#token = options.token || undefined
    this.#fetch = options.fetch
  }

  // ---- the spec's functions ----------------------------------------------------

  /** Create a task; resolves to its id (the spec's `createBackgroundTask`). */
  async createBackgroundTask(options: CreateTaskOptions): Promise<string> {
    return (await this.createTask(options)).id
  }

  /** The task, or null when there is no task with this id. */
  async getBackgroundTask(id: string): Promise<BackgroundTask | null> {
    const raw = await this.#request<BackgroundTaskJson>(ROUTES.getTask, { id, nullOn404: true })
    return raw === null ? null : toTask(raw)
  }

  /** All tasks, optionally filtered; ordered by priority then next run unless `sort` says otherwise. */
  async listBackgroundTasks(filter: TaskFilter = {}): Promise<BackgroundTask[]> {
    const query: Record<string, string | undefined> = {
      status: filter.status,
      type: filter.type,
      priority: filter.priority,
      sort: filter.sort,
    }
    const raw = await this.#request<BackgroundTaskJson[]>(ROUTES.listTasks, { query })
    return raw.map(toTask)
  }

  /** Stop the task for good: no further runs; pending runs are cancelled, running ones stopped. */
  async cancelBackgroundTask(id: string): Promise<void> {
    await this.#request(ROUTES.cancelTask, { id })
  }

  /**
   * Run the task once, `delaySeconds` (a whole number, 0..86400) from now,
   * whatever its schedule (the spec's `executeDemoTask`). Use `getTaskResult`
   * to see the outcome. A paused or cancelled task answers 409.
   */
  async executeDemoTask(id: string, delaySeconds: number): Promise<void> {
    const body: RunRequest = { delaySeconds }
    await this.#request<RunResponse>(ROUTES.runTask, { id, body })
  }

  // ---- the rest of the API ------------------------------------------------------

  /** Create a task; resolves to the created task. */
  async createTask(options: CreateTaskOptions): Promise<BackgroundTask> {
    return toTask(await this.#request<BackgroundTaskJson>(ROUTES.createTask, { body: options }))
  }

  /** No scheduled or queued run starts until `resumeBackgroundTask`. */
  async pauseBackgroundTask(id: string): Promise<BackgroundTask> {
    return toTask(await this.#request<BackgroundTaskJson>(ROUTES.pauseTask, { id }))
  }

  async resumeBackgroundTask(id: string): Promise<BackgroundTask> {
    return toTask(await this.#request<BackgroundTaskJson>(ROUTES.resumeTask, { id }))
  }

  /** Start a run now; resolves to the run's id. */
  async runBackgroundTask(id: string): Promise<string> {
    return (await this.#request<RunResponse>(ROUTES.runTask, { id })).runId
  }

  /** Remove the task (its pending runs are cancelled, running ones stopped). */
  async deleteBackgroundTask(id: string): Promise<void> {
    await this.#request(ROUTES.deleteTask, { id })
  }

  /** The task's runs that have started, newest first (at most `limit`, 1..200, default 50). */
  async getTaskHistory(id: string, limit?: number): Promise<TaskRun[]> {
    const query = { limit: limit === undefined ? undefined : String(limit) }
    const raw = await this.#request<Wire<TaskRun>[]>(ROUTES.taskHistory, { id, query })
    return raw.map(toRun)
  }

  /**
   * The outcome of the task's latest finished run, or null while no run has
   * finished. Throws `BgtasksError` (404) when there is no such task.
   */
  async getTaskResult(id: string): Promise<TaskResult | null> {
    const raw = await this.#request<Wire<TaskResult>>(ROUTES.taskResult, {
      id,
      nullOn404: (p) => p.title === PROBLEM_TITLE_NO_RESULT,
    })
    return raw === null ? null : toResult(raw)
  }

  // ---- transport ------------------------------------------------------------------

  async #request<T>(route: Route, opts: RequestOptions & { nullOn404: NullOn404 }): Promise<T | null>
  async #request<T = unknown>(route: Route, opts?: RequestOptions): Promise<T>
  async #request<T>(
    [method, template]: Route,
    opts: RequestOptions & { nullOn404?: NullOn404 } = {},
  ): Promise<T | null> {
    let path: string = template
    if (template.includes('{task_id}')) {
      if (typeof opts.id !== 'string' || !opts.id) throw new TypeError('a task id is required')
      path = template.replace('{task_id}', encodeURIComponent(opts.id))
    }
    const params = new URLSearchParams()
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) params.set(k, v)
    const qs = params.toString()
    const url = `${this.baseUrl}${path}${qs ? `?${qs}` : ''}`

    const headers: Record<string, string> = { Accept: 'application/json, application/problem+json' }
    if (this.#token) headers['Authorization'] = `Bearer ${this.#token}`
    const init: RequestInit = { method: method.toUpperCase(), headers }
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json'
      init.body = JSON.stringify(opts.body)
    }

    const response = this.#fetch ? await this.#fetch(url, init) : await fetch(url, init)
    const text = await response.text()
    if (!response.ok) {
      const problem = toProblem(response, text)
      const nullOn404 = opts.nullOn404
      if (response.status === 404 && (nullOn404 === true || (typeof nullOn404 === 'function' && nullOn404(problem)))) {
        return null
      }
      throw new BgtasksError(problem)
    }
    if (!text) return undefined as T
    return JSON.parse(text) as T
  }
}

type NullOn404 = true | ((problem: Problem) => boolean)

interface RequestOptions {
  id?: string
  query?: Record<string, string | undefined>
  body?: unknown
}

/** The problem document of an error response; one made up if the body is not one. */
function toProblem(response: Response, text: string): Problem {
  let body: unknown
  try {
    body = text ? JSON.parse(text) : undefined
  } catch {
    body = undefined
  }
  const fallback = response.statusText || `HTTP ${response.status}`
  if (body && typeof body === 'object' && !Array.isArray(body)) {
    const b = body as Record<string, unknown>
    let errors: FieldError[] | undefined
    if (Array.isArray(b['errors'])) {
      errors = b['errors'].map((e: Record<string, unknown>) => ({
        field: String(e?.['field'] ?? ''),
        message: String(e?.['message'] ?? ''),
      }))
    } else if (Array.isArray(b['detail'])) {
      // FastAPI's own validation format ({detail: [{loc, msg}]}), should a route answer with it.
      errors = b['detail'].map((e: Record<string, unknown>) => ({
        field: Array.isArray(e?.['loc'])
          ? (e['loc'] as unknown[]).filter((p) => !['body', 'query', 'path'].includes(String(p))).join('.')
          : '',
        message: String(e?.['msg'] ?? ''),
      }))
    }
    const detail =
      typeof b['detail'] === 'string'
        ? b['detail']
        : errors
          ? errors.map((e) => (e.field ? `${e.field}: ${e.message}` : e.message)).join('; ')
          : ''
    const problem: Problem = {
      type: typeof b['type'] === 'string' ? b['type'] : 'about:blank',
      title: typeof b['title'] === 'string' ? b['title'] : fallback,
      status: typeof b['status'] === 'number' ? b['status'] : response.status,
      detail,
    }
    if (errors) problem.errors = errors
    return problem
  }
  return { type: 'about:blank', title: fallback, status: response.status, detail: text.slice(0, 500) }
}

// ---- JSON -> the spec's types (ISO-8601 strings -> Date) --------------------------

/** Copy `raw`, turning the named ISO-8601 fields into Dates (absent ones stay absent). */
function withDates<T extends object>(raw: object, fields: readonly string[]): T {
  const out: Record<string, unknown> = { ...raw }
  for (const f of fields) {
    const v = out[f]
    if (typeof v === 'string') out[f] = new Date(v)
  }
  return out as T
}

function toSchedule(raw: Wire<TaskSchedule>): TaskSchedule {
  return withDates<TaskSchedule>(raw, ['startTime', 'endTime'])
}

function toResult(raw: Wire<TaskResult>): TaskResult {
  return withDates<TaskResult>(raw, ['executedAt'])
}

function toTask(raw: BackgroundTaskJson): BackgroundTask {
  const task = withDates<BackgroundTask>(raw, ['createdAt', 'scheduledFor', 'lastRun', 'nextRun'])
  if (raw.result) task.result = toResult(raw.result)
  if (raw.schedule) task.schedule = toSchedule(raw.schedule)
  if (raw.waiting) task.waiting = raw.waiting.map((w) => withDates<WaitingRun>(w, ['since']))
  if (task.paused === undefined) task.paused = false
  return task
}

function toRun(raw: Wire<TaskRun>): TaskRun {
  const run = withDates<TaskRun>(raw, ['scheduledFor', 'startedAt', 'endedAt'])
  if (raw.result) run.result = toResult(raw.result)
  return run
}
