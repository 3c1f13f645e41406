// The client's HTTP mapping, with a recording fake `fetch` (no API needed).

import assert from 'node:assert/strict'
import { test } from 'node:test'

import * as bgtasks from '../dist/index.js'
import { BgtasksClient, BgtasksError } from '../dist/index.js'

const TASK = {
  id: 'a1',
  name: 'Data Sync',
  type: 'periodic',
  status: 'pending',
  priority: 'normal',
  createdAt: '2026-01-02T03:04:05Z',
  nextRun: '2026-01-02T04:04:05Z',
  schedule: { type: 'periodic', startTime: '2026-01-02T03:04:05Z', interval: 3600000 },
  result: { success: true, data: { createdAt: 'not a date field' }, executedAt: '2026-01-02T03:04:06Z', duration: 12 },
}

/** A client whose fetch answers `respond(url, init)` and records the calls. */
function fake(respond, options = {}) {
  const calls = []
  const client = new BgtasksClient({
    baseUrl: 'http://api.test/prefix/',
    ...options,
    fetch: async (url, init) => {
      calls.push({ url, init, body: init.body === undefined ? undefined : JSON.parse(init.body) })
      const [status, body, type = 'application/json'] = respond(url, init)
      const text = body === undefined ? null : typeof body === 'string' ? body : JSON.stringify(body)
      return new Response(text, { status, headers: text === null ? {} : { 'content-type': type } })
    },
  })
  return { client, calls }
}

const problem = (status, title, extra = {}) => [status, { type: 'about:blank', title, status, detail: `${title}!`, ...extra }, 'application/problem+json']

test('requests: method, URL (prefix kept, id encoded, query), bearer token, JSON body', async () => {
  const { client, calls } = fake((url) => (url.includes('/run') ? [202, { runId: 'r1' }] : [200, url.endsWith('/pause') ? TASK : [TASK]]), { token: 'bgt_x' })
  await client.listBackgroundTasks({ status: 'failed', sort: 'next-run' })
  await client.pauseBackgroundTask('a/1')
  await client.executeDemoTask('a1', 5)
  assert.equal(await client.runBackgroundTask('a1'), 'r1')
  assert.deepEqual(
    calls.map((c) => `${c.init.method} ${c.url}`),
    [
      'GET http://api.test/prefix/tasks?status=failed&sort=next-run',
      'POST http://api.test/prefix/tasks/a%2F1/pause',
      'POST http://api.test/prefix/tasks/a1/run',
      'POST http://api.test/prefix/tasks/a1/run',
    ],
  )
  assert.ok(calls.every((c) => c.init.headers.Authorization === 'Bearer bgt_x'))
  assert.deepEqual(calls[2].body, { delaySeconds: 5 })
  assert.equal(calls[2].init.headers['Content-Type'], 'application/json')
  assert.equal(calls[3].body, undefined, 'runBackgroundTask sends no body')
})

test('no Authorization header without a token', async () => {
  const { client, calls } = fake(() => [200, []])
  await client.listBackgroundTasks()
  assert.equal(calls[0].init.headers.Authorization, undefined)
})

test("responses: the spec's Dates, and only in date fields", async () => {
  const { client, calls } = fake(() => [201, TASK])
  const id = await client.createBackgroundTask({ name: 'Data Sync', schedule: { type: 'one-time', startTime: new Date('2030-01-01T00:00:00Z') } })
  assert.equal(id, 'a1')
  assert.equal(calls[0].body.schedule.startTime, '2030-01-01T00:00:00.000Z')
  const task = await client.createTask({ name: 'x', schedule: { type: 'periodic', interval: 1000 } })
  assert.ok(task.createdAt instanceof Date)
  assert.equal(task.createdAt.toISOString(), '2026-01-02T03:04:05.000Z')
  assert.ok(task.nextRun instanceof Date)
  assert.ok(task.schedule.startTime instanceof Date)
  assert.ok(task.result.executedAt instanceof Date)
  assert.equal(task.result.data.createdAt, 'not a date field')
  assert.equal(task.paused, false, 'paused defaults to false')
  assert.equal(task.lastRun, undefined)
})

test('404: getBackgroundTask is null; getTaskResult is null only for "No result yet"', async () => {
  const { client } = fake((url) => (url.endsWith('/none/result') ? problem(404, 'No result yet') : problem(404, 'Task not found')))
  assert.equal(await client.getBackgroundTask('x'), null)
  assert.equal(await client.getTaskResult('none'), null)
  await assert.rejects(client.getTaskResult('x'), (err) => err instanceof BgtasksError && err.status === 404 && err.title === 'Task not found')
  await assert.rejects(client.cancelBackgroundTask('x'), (err) => err instanceof BgtasksError && err.status === 404)
})

test('errors: the problem document, field errors, and non-problem answers', async () => {
  let answer
  const { client } = fake(() => answer)
  answer = problem(422, 'Invalid input', { errors: [{ field: 'priority', message: "Input should be 'high', 'normal' or 'low'" }] })
  const err = await client.createTask({ name: 'x', schedule: { type: 'periodic', interval: 1000 } }).catch((e) => e)
  assert.ok(err instanceof BgtasksError && err instanceof Error)
  assert.equal(err.name, 'BgtasksError')
  assert.equal(err.status, 422)
  assert.equal(err.detail, 'Invalid input!')
  assert.equal(err.fieldError('priority').message, "Input should be 'high', 'normal' or 'low'")
  assert.match(err.message, /^422 Invalid input/)

  answer = [422, { detail: [{ loc: ['query', 'limit'], msg: 'too big', type: 'x' }] }]
  const fastapi = await client.getTaskHistory('a1', 1000).catch((e) => e)
  assert.deepEqual(fastapi.errors, [{ field: 'limit', message: 'too big' }])

  answer = [502, '<html>Bad Gateway</html>', 'text/html']
  const gateway = await client.listBackgroundTasks().catch((e) => e)
  assert.ok(gateway instanceof BgtasksError)
  assert.equal(gateway.status, 502)
  assert.deepEqual(gateway.errors, [])
})

test('delete answers 204 with no body', async () => {
  const { client, calls } = fake(() => [204, undefined])
  assert.equal(await client.deleteBackgroundTask('a1'), undefined)
  assert.equal(calls[0].init.method, 'DELETE')
})

test("module functions: the spec's names, on the configured client", async () => {
  for (const name of ['createBackgroundTask', 'getBackgroundTask', 'listBackgroundTasks', 'cancelBackgroundTask', 'executeDemoTask']) {
    assert.equal(typeof bgtasks[name], 'function', name)
  }
  assert.throws(() => new BgtasksClient({}), TypeError)
  await assert.rejects(bgtasks.listBackgroundTasks(), /configure\(/)
  const client = bgtasks.configure({ baseUrl: 'http://127.0.0.1:1' })
  assert.equal(bgtasks.getClient(), client)
})
