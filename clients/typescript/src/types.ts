/**
 * The background-tasks module's data structures (the spec's "Data Structures"
 * TypeScript interfaces), extended with the optional fields the bgtasks API
 * adds (see bgtasks/models.py). Spec fields keep the spec's names and types:
 * times are `Date` objects (the client converts the API's ISO-8601 strings),
 * `interval`, `duration` and the backoffs are milliseconds.
 *
 * Beyond the spec, marked "(bgtasks)": cron schedules, `timeoutMs`, `handler`,
 * retry jitter and conditions, the run behind a result, `paused`, the task's
 * definition on `BackgroundTask`, `TaskRun` (history) and `Problem` (errors).
 */

export type TaskType = 'one-time' | 'periodic' | 'triggered'

export type TaskStatus = 'pending' | 'running' | 'completed' | 'failed' | 'cancelled'

export type TaskPriority = 'high' | 'normal' | 'low'

export interface BackgroundTask {
  id: string
  name: string
  description?: string
  type: TaskType
  status: TaskStatus
  priority: TaskPriority
  createdAt: Date
  scheduledFor?: Date
  lastRun?: Date
  nextRun?: Date
  result?: TaskResult
  /** (bgtasks) The registered handler (Prefect flow) that runs the task. */
  handler?: string
  /** (bgtasks) True while paused: no run starts until resumed. */
  paused: boolean
  /** (bgtasks) The task's definition, as created. */
  schedule?: TaskSchedule
  constraints?: TaskConstraints
  retryPolicy?: RetryPolicy
  timeoutMs?: number
  /** (bgtasks) The devices the task wakes with a silent push. */
  target?: TaskTarget
  /** (bgtasks) What starts a triggered task. */
  trigger?: TaskTrigger
  /** (bgtasks) Runs waiting for their constraints: why, and since when. */
  waiting?: WaitingRun[]
  data?: any
  /** (bgtasks) Only in the answer to a creation: e.g. a schedule beyond the devices' push budget. */
  warnings?: string[]
}

/** (bgtasks) A run that has not started because its constraints fail on the worker's host. */
export interface WaitingRun {
  runId: string
  since: Date
  reason: string
}

export interface TaskResult {
  success: boolean
  data?: any
  error?: string
  executedAt: Date
  /** Milliseconds. */
  duration: number
  /** (bgtasks) The run this is the outcome of. */
  runId?: string
  /** (bgtasks) The run's final Prefect state name ("Completed", "Failed", "Crashed"...). */
  state?: string
  /** (bgtasks) Attempts the run took (1 = no retry). */
  attempts?: number
  /** (bgtasks) False when the run started at its constraint deadline with its constraints unmet. */
  constraintsMet?: boolean
}

export interface TaskSchedule {
  /** 'one-time', 'periodic', or (bgtasks) 'triggered' with a trigger. */
  type: TaskType
  startTime?: Date
  /** Milliseconds between runs of a periodic task (at least 1000). */
  interval?: number
  endTime?: Date
  /** (bgtasks) Cron expression of a periodic task, instead of `interval`. */
  cron?: string
  /** (bgtasks) IANA time zone the cron expression is read in (default UTC). */
  timezone?: string
  /** (bgtasks) Periodic tasks: runs missed while bgtasks was down: 'skip' (default), 'run-once' or 'run-all'. */
  catchUp?: 'skip' | 'run-once' | 'run-all'
}

export interface TaskConstraints {
  requiresNetwork?: boolean
  requiresWifi?: boolean
  requiresCharging?: boolean
  requiresBatteryNotLow?: boolean
  requiresDeviceIdle?: boolean
  requiresStorageNotLow?: boolean
  /** (bgtasks) WorkManager's NetworkType, plus the desktop's 'wifi' and 'cellular'. */
  networkType?: 'not-required' | 'connected' | 'unmetered' | 'not-roaming' | 'metered' | 'wifi' | 'cellular'
  /** (bgtasks) Stop a running run whose constraints stop holding; it waits again (default true). */
  stopWhenConstraintsLost?: boolean
  /** (bgtasks) Milliseconds after a run was due: if its constraints still fail, apply onDeadline. */
  constraintDeadline?: number
  /** (bgtasks) At the deadline: run anyway (default) or fail. */
  onDeadline?: 'run' | 'fail'
}

export interface CreateTaskOptions {
  name: string
  description?: string
  schedule: TaskSchedule
  priority?: TaskPriority
  constraints?: TaskConstraints
  retryPolicy?: RetryPolicy
  data?: any
  /** (bgtasks) Per-attempt timeout in milliseconds. */
  timeoutMs?: number
  /** (bgtasks) Registered handler to run (default: chosen from the name). */
  handler?: string
  /** (bgtasks) Wake these devices with a silent push instead of running on the server. */
  target?: TaskTarget
  /** (bgtasks) What starts a triggered task (schedule.type 'triggered'). */
  trigger?: TaskTrigger
}

/** (bgtasks) The devices a task wakes; every given criterion must hold. */
export interface TaskTarget {
  deviceIds?: string[]
  labels?: string[]
  platform?: 'android' | 'ios'
  /** FCM android priority high (FCM deprioritises it when no notification is shown). */
  highPriority?: boolean
  /** At most 64 bytes in UTF-8; FCM keeps at most four distinct collapse keys per device. */
  collapseKey?: string
  /** Each device's push budget for this task's pushes (default per platform; 0: none). */
  pushesPerHour?: number
  /** FCM fcmOptions.analyticsLabel (default: the task's name). */
  analyticsLabel?: string
}

/** (bgtasks) The trigger daemon's events a triggered task can start on. */
export type TriggerEvent =
  | 'file.created' | 'file.modified' | 'file.deleted' | 'file.moved' | 'file.arrived'
  | 'network.connected' | 'network.disconnected' | 'network.type-changed' | 'network.metered-changed'
  | 'power.plugged' | 'power.unplugged' | 'power.battery-low' | 'power.battery-ok'
  | 'device.idle' | 'device.active'
  | 'storage.low' | 'storage.ok'

/** (bgtasks) e.g. {on: 'file.arrived', path: '/data/inbox', pattern: '*.csv'} or {on: 'power.plugged'}. */
export interface TaskTrigger {
  on: TriggerEvent
  /** file.*: the directory to watch (absolute). */
  path?: string
  /** file.*: glob of file names. */
  pattern?: string
  recursive?: boolean
  /** file.*: run once per burst after this much quiet (default 1000). */
  debounceMs?: number
  networkType?: 'any' | 'unmetered' | 'metered' | 'wifi' | 'ethernet' | 'cellular'
  /** With several hosts: any worker (default), or a worker of the host that saw the event. */
  runOn?: 'any' | 'eventHost'
}

export interface RetryPolicy {
  maxRetries: number
  backoffMultiplier?: number // default: 2
  initialBackoffMs?: number // default: 1000
  maxBackoffMs?: number // default: 60000
  /** (bgtasks) Each delay is shortened by up to this fraction, at random (0..1, default 0.1). */
  jitter?: number
  /** (bgtasks) Which failures are retried (default: all). */
  retryOn?: RetryCondition
}

/** (bgtasks) A failure is retried when its exception type is named or its message matches. */
export interface RetryCondition {
  exceptions?: string[]
  /** Regular expression, searched anywhere in the failure message. */
  messagePattern?: string
}

/** (bgtasks) One run of a task, newest first in `getTaskHistory`. */
export interface TaskRun {
  id: string
  status: TaskStatus
  /** Prefect state name ("Scheduled", "Running", "Completed", "Failed"...). */
  state: string
  message?: string
  scheduledFor?: Date
  startedAt?: Date
  endedAt?: Date
  attempts?: number
  result?: TaskResult
}

/** (bgtasks) `listBackgroundTasks` filters and order (default order: priority, then next run). */
export interface TaskFilter {
  status?: TaskStatus
  type?: TaskType
  priority?: TaskPriority
  sort?: 'priority' | 'next-run' | 'created' | 'name'
}

/** One invalid field of a request: `field` is the JSON path ("schedule.interval"). */
export interface FieldError {
  field: string
  message: string
}

/** An RFC 9457 problem document, as every error response of the API is. */
export interface Problem {
  type: string
  title: string
  status: number
  detail: string
  errors?: FieldError[]
}

/** What `POST /tasks/{id}/run` answers. */
export interface RunResponse {
  runId: string
}

/** The optional body of `POST /tasks/{id}/run`: start the run after this many seconds (0..86400). */
export interface RunRequest {
  delaySeconds: number
}

/**
 * A type as it travels in JSON: `Date`s are ISO-8601 strings. `Wire<BackgroundTask>`
 * is what the API sends; the client turns it into a `BackgroundTask`.
 */
export type Wire<T> = T extends Date
  ? string
  : T extends (infer U)[]
    ? Wire<U>[]
    : T extends object
      ? { [K in keyof T]: Wire<T[K]> }
      : T

/** What the API sends for a task: `Wire<BackgroundTask>`, except that `paused` may be left out (false). */
export type BackgroundTaskJson = Omit<Wire<BackgroundTask>, 'paused'> & { paused?: boolean }
