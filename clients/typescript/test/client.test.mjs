// Against a LIVE bgtasks API: BGTASKS_API_URL (e.g. http://127.0.0.1:4300) and, when
// the API requires tokens (the default), BGTASKS_API_TOKEN (`bgtasks token create NAME`,
// scopes tasks:read and tasks:write). Skipped when BGTASKS_API_URL is unset.
//
// Creates the spec's example task ("Data Sync": the API must not have one already) and
// a demo task, and deletes both at the end, whatever happened.

import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { after, before, describe, test } from 'node:test'

import {
  BgtasksClient,
  BgtasksError,
  cancelBackgroundTask,
  configure,
  createBackgroundTask,
  executeDemoTask,
  getBackgroundTask,
  listBackgroundTasks,
} from '../dist/index.js'

const API = process.env.BGTASKS_API_URL
const TOKEN = process.env.BGTASKS_API_TOKEN || undefined
const SKIP = API
  ? false
  : 'BGTASKS_API_URL is not set: start an API (`bgtasks up`) and run BGTASKS_API_URL=http://127.0.0.1:4300 BGTASKS_API_TOKEN=<token> npm test'
if (SKIP) console.log(`# live API tests skipped: ${SKIP}`)

/** Poll `fn` every 250 ms until it returns something truthy, or fail at the deadline. */
async function until(what, fn, timeoutMs = 180_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await fn()
    if (value) return value
    if (Date.now() > deadline) throw new Error(`gave up after ${timeoutMs / 1000} s waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
}

/** assert.rejects' check: a BgtasksError with this status (and a field error naming `field`). */
function problem(status, field) {
  return (err) => {
    assert.ok(err instanceof BgtasksError, `expected a BgtasksError, got ${err}`)
    assert.equal(err.status, status, err.message)
    assert.equal(err.problem.status, status)
    assert.equal(typeof err.title, 'string')
    assert.equal(typeof err.detail, 'string')
    if (field !== undefined) {
      assert.ok(err.fieldError(field), `no error names ${field}: ${JSON.stringify(err.errors)}`)
      assert.ok(err.fieldError(field).message.length > 0)
    }
    return true
  }
}

describe('bgtasks client against a live API', { skip: SKIP }, () => {
  /** @type {BgtasksClient} */
  let client
  const created = []
  let specTaskId
  let demoTaskId

  before(async () => {
    client = configure({ baseUrl: API, token: TOKEN })
    try {
      await listBackgroundTasks()
    } catch (err) {
      if (err instanceof BgtasksError && err.status === 401) {
        throw new Error(`${API} requires a token: set BGTASKS_API_TOKEN (bgtasks token create NAME) (${err.message})`)
      }
      throw err
    }
  })

  after(async () => {
    for (const id of created) {
      try {
        await client.deleteBackgroundTask(id)
      } catch (err) {
        if (!(err instanceof BgtasksError && err.status === 404)) throw err
      }
    }
  })

  test("createBackgroundTask: the spec's example, as written", async () => {
    let taskId
    try {
      taskId = await createBackgroundTask({
        name: 'Data Sync',
        description: 'Sync user data with server',
        schedule: {
          type: 'periodic',
          interval: 3600000, // 1 hour
        },
        priority: 'normal',
        constraints: {
          requiresNetwork: true,
          requiresWifi: false,
        },
        retryPolicy: {
          maxRetries: 3,
          backoffMultiplier: 2,
          initialBackoffMs: 1000,
        },
      })
    } catch (err) {
      if (err instanceof BgtasksError && err.fieldError('name')) {
        throw new Error(`the API already has a task named "Data Sync"; run the tests against a fresh stack (${err.message})`)
      }
      throw err
    }
    assert.equal(typeof taskId, 'string')
    assert.ok(taskId.length > 0)
    created.push(taskId)
    specTaskId = taskId
  })

  test("getBackgroundTask: the spec's BackgroundTask shape", async () => {
    const task = await getBackgroundTask(specTaskId)
    assert.ok(task)
    assert.equal(task.id, specTaskId)
    assert.equal(task.name, 'Data Sync')
    assert.equal(task.description, 'Sync user data with server')
    assert.equal(task.type, 'periodic')
    assert.ok(['pending', 'running', 'completed', 'failed'].includes(task.status), task.status)
    assert.equal(task.priority, 'normal')
    assert.ok(task.createdAt instanceof Date && !Number.isNaN(task.createdAt.getTime()))
    assert.ok(Math.abs(task.createdAt.getTime() - Date.now()) < 10 * 60_000, `createdAt ${task.createdAt.toISOString()}`)
    assert.ok(task.nextRun instanceof Date, 'a periodic task has a next run')
    assert.equal(task.schedule.type, 'periodic')
    assert.equal(task.schedule.interval, 3600000)
    assert.deepEqual(task.constraints, { requiresNetwork: true, requiresWifi: false })
    assert.equal(task.retryPolicy.maxRetries, 3)
    assert.equal(task.retryPolicy.backoffMultiplier, 2)
    assert.equal(task.retryPolicy.initialBackoffMs, 1000)
    assert.equal(task.paused, false)
  })

  test('listBackgroundTasks: finds it, filters and sorts', async () => {
    const all = await listBackgroundTasks()
    assert.ok(Array.isArray(all))
    const mine = all.find((t) => t.id === specTaskId)
    assert.ok(mine, 'the created task is listed')
    assert.equal(mine.name, 'Data Sync')
    assert.ok(mine.createdAt instanceof Date)

    const periodicNormal = await listBackgroundTasks({ type: 'periodic', priority: 'normal', sort: 'name' })
    assert.ok(periodicNormal.some((t) => t.id === specTaskId))
    assert.ok(periodicNormal.every((t) => t.type === 'periodic' && t.priority === 'normal'))
    const high = await listBackgroundTasks({ priority: 'high' })
    assert.ok(!high.some((t) => t.id === specTaskId))
  })

  test('pauseBackgroundTask / resumeBackgroundTask', async () => {
    const paused = await client.pauseBackgroundTask(specTaskId)
    assert.equal(paused.id, specTaskId)
    assert.equal(paused.paused, true)
    assert.equal((await getBackgroundTask(specTaskId)).paused, true)
    // A paused task does not run on demand.
    await assert.rejects(client.runBackgroundTask(specTaskId), problem(409))

    const resumed = await client.resumeBackgroundTask(specTaskId)
    assert.equal(resumed.paused, false)
    assert.ok(resumed.nextRun instanceof Date, 'resumed: runs are scheduled again')
  })

  test('executeDemoTask: runs a one-time demo task after the delay; getTaskResult reports it', async () => {
    const demo = await client.createTask({
      name: `ts-client demo ${randomUUID().slice(0, 8)}`,
      description: 'created by clients/typescript tests',
      // An hour ahead, so that the only run that can finish during the test is ours.
      schedule: { type: 'one-time', startTime: new Date(Date.now() + 3600_000) },
      handler: 'demo',
      data: { message: 'hello from @bgtasks/client' },
    })
    created.push(demo.id)
    demoTaskId = demo.id
    assert.equal(demo.type, 'one-time')
    assert.equal(demo.handler, 'demo')
    assert.equal(await client.getTaskResult(demo.id), null, 'no run has finished yet')

    const delaySeconds = 2
    const asked = Date.now()
    await executeDemoTask(demo.id, delaySeconds)
    const result = await until('the demo run to finish', () => client.getTaskResult(demo.id))
    assert.equal(result.success, true, `the demo run failed: ${result.error}`)
    assert.equal(result.data.message, 'hello from @bgtasks/client')
    assert.ok(result.executedAt instanceof Date)
    assert.equal(typeof result.duration, 'number')
    assert.equal(typeof result.runId, 'string')

    // The run was scheduled delaySeconds after the request (500 ms for clock differences).
    const history = await client.getTaskHistory(demo.id)
    const run = history.find((r) => r.id === result.runId)
    assert.ok(run, 'the run is in the history')
    assert.equal(run.status, 'completed')
    assert.ok(run.scheduledFor instanceof Date)
    assert.ok(
      run.scheduledFor.getTime() >= asked + delaySeconds * 1000 - 500,
      `run scheduled for ${run.scheduledFor.toISOString()}, asked at ${new Date(asked).toISOString()} with delaySeconds ${delaySeconds}`,
    )
    assert.ok(result.executedAt.getTime() >= run.scheduledFor.getTime() - 500)
  })

  test('runBackgroundTask: a run now, its runId in the result; history with a limit', async () => {
    const runId = await client.runBackgroundTask(demoTaskId)
    assert.equal(typeof runId, 'string')
    const result = await until(`run ${runId} to finish`, async () => {
      const r = await client.getTaskResult(demoTaskId)
      return r && r.runId === runId ? r : null
    })
    assert.equal(result.success, true, result.error)
    const last = await client.getTaskHistory(demoTaskId, 1)
    assert.equal(last.length, 1)
    assert.equal(last[0].id, runId, 'newest first')
    assert.ok(last[0].startedAt instanceof Date)
  })

  test('executeDemoTask: a delay out of range is refused, naming delaySeconds', async () => {
    await assert.rejects(executeDemoTask(demoTaskId, 86401), problem(422, 'delaySeconds'))
  })

  test('createBackgroundTask: an invalid body throws BgtasksError 422 naming the field', async () => {
    await assert.rejects(
      createBackgroundTask({
        name: `ts-client invalid ${randomUUID().slice(0, 8)}`,
        schedule: { type: 'periodic', interval: 3600000 },
        priority: 'urgent',
      }),
      problem(422, 'priority'),
    )
    await assert.rejects(
      createBackgroundTask({ name: 'ts-client bad interval', schedule: { type: 'periodic', interval: -5 } }),
      problem(422, 'schedule.interval'),
    )
  })

  test('getBackgroundTask: an unknown id is null', async () => {
    assert.equal(await getBackgroundTask(randomUUID()), null)
    assert.equal(await getBackgroundTask('no-such-task'), null)
    await assert.rejects(client.getTaskResult(randomUUID()), problem(404))
  })

  test('cancelBackgroundTask: the task ends cancelled and cannot be resumed', async () => {
    assert.equal(await cancelBackgroundTask(specTaskId), undefined)
    const task = await getBackgroundTask(specTaskId)
    assert.equal(task.status, 'cancelled')
    await assert.rejects(client.resumeBackgroundTask(specTaskId), problem(409))
  })

  test('deleteBackgroundTask: the tasks are gone', async () => {
    for (const id of [specTaskId, demoTaskId]) {
      assert.equal(await client.deleteBackgroundTask(id), undefined)
      assert.equal(await getBackgroundTask(id), null)
      created.splice(created.indexOf(id), 1)
    }
  })

  test('auth: no token or a wrong token is refused with 401', { skip: TOKEN ? false : 'BGTASKS_API_TOKEN not set' }, async () => {
    await assert.rejects(new BgtasksClient({ baseUrl: API }).listBackgroundTasks(), problem(401))
    await assert.rejects(new BgtasksClient({ baseUrl: API, token: 'bgt_not-a-token' }).listBackgroundTasks(), problem(401))
  })
})
