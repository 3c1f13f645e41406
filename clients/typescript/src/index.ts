/**
 * `@bgtasks/client`: the background-tasks module's frontend functions (the
 * spec's "Frontend Implementation"), over the bgtasks REST API.
 *
 *     import { configure, createBackgroundTask } from '@bgtasks/client'
 *     configure({ baseUrl: 'http://127.0.0.1:4300', token })
 *     const taskId = await createBackgroundTask({ name: 'Data Sync', schedule: { type: 'periodic', interval: 3600000 } })
 *
 * The module-level functions use the client set by `configure`; create
 * `new BgtasksClient({...})` objects to talk to several APIs.
 */

import { BgtasksClient, type ClientOptions } from './client.js'
import type { BackgroundTask, CreateTaskOptions, TaskFilter, TaskResult, TaskRun } from './types.js'

export * from './types.js'
export { BgtasksClient, BgtasksError, ROUTES, type ClientOptions } from './client.js'

let defaultClient: BgtasksClient | undefined

/** Set the API the module-level functions talk to; returns the client. */
export function configure(options: ClientOptions): BgtasksClient {
  defaultClient = new BgtasksClient(options)
  return defaultClient
}

/** The client set by `configure` (throws if `configure` has not been called). */
export function getClient(): BgtasksClient {
  if (!defaultClient) {
    throw new Error("@bgtasks/client: call configure({ baseUrl: 'http://…' }) before using the task functions")
  }
  return defaultClient
}

// The spec's functions, with its names and signatures.

/** Create a background task; resolves to its id. */
export async function createBackgroundTask(options: CreateTaskOptions): Promise<string> {
  return getClient().createBackgroundTask(options)
}

/** Get task by ID (null when there is none). */
export async function getBackgroundTask(id: string): Promise<BackgroundTask | null> {
  return getClient().getBackgroundTask(id)
}

/** List all tasks (optionally filtered and sorted). */
export async function listBackgroundTasks(filter?: TaskFilter): Promise<BackgroundTask[]> {
  return getClient().listBackgroundTasks(filter)
}

/** Cancel task. */
export async function cancelBackgroundTask(id: string): Promise<void> {
  return getClient().cancelBackgroundTask(id)
}

/** Execute the task once, `delaySeconds` from now (for testing). */
export async function executeDemoTask(id: string, delaySeconds: number): Promise<void> {
  return getClient().executeDemoTask(id, delaySeconds)
}

// Beyond the spec's list: the rest of the API.

export async function createTask(options: CreateTaskOptions): Promise<BackgroundTask> {
  return getClient().createTask(options)
}

export async function pauseBackgroundTask(id: string): Promise<BackgroundTask> {
  return getClient().pauseBackgroundTask(id)
}

export async function resumeBackgroundTask(id: string): Promise<BackgroundTask> {
  return getClient().resumeBackgroundTask(id)
}

export async function runBackgroundTask(id: string): Promise<string> {
  return getClient().runBackgroundTask(id)
}

export async function deleteBackgroundTask(id: string): Promise<void> {
  return getClient().deleteBackgroundTask(id)
}

export async function getTaskHistory(id: string, limit?: number): Promise<TaskRun[]> {
  return getClient().getTaskHistory(id, limit)
}

export async function getTaskResult(id: string): Promise<TaskResult | null> {
  return getClient().getTaskResult(id)
}
