/**
 * Compile-time checks that the hand-written types and routes of this package
 * agree with the API's OpenAPI document (docs/openapi.json, turned into
 * src/openapi.d.ts by `npm run generate`). Nothing here runs: `npm run check`
 * (and so `build` and `test`) fails to compile when they disagree, and the
 * error names the offending field, e.g.
 *
 *     Type '"schedule.cron: missing in ours"' does not satisfy the constraint 'never'.
 *
 * Schemas are reached through the operations (`paths[...]`), not component
 * names, so that FastAPI renaming components (e.g. `TaskSchedule-Input`) does
 * not matter.
 *
 * Checked: every route (method + path) the client calls exists, with a
 * `task_id: string` path parameter where it has one; the enums; the query
 * parameters of GET /tasks and GET /tasks/{task_id}/history; the request bodies
 * of POST /tasks (nested: schedule, constraints, retryPolicy, retryOn) and
 * POST /tasks/{task_id}/run; every success response (BackgroundTask, lists,
 * TaskRun, TaskResult, {runId}); DELETE's empty 204; the Problem of each
 * declared error. Objects must have the same fields with the same ones required;
 * requests must be accepted (ours -> API), responses must fit ours (API -> ours).
 *
 * Where the document says less than our types do, the check can only be
 * partial; each such place is marked LOOSE below, and becomes a full check by
 * itself once the document describes it (no edit needed here):
 * - a response or request body declared as a bare `object` or not at all;
 * - an object declared only as `{[key]: ...}` (today: Problem.errors items);
 * - a 422 declared as FastAPI's HTTPValidationError (today: the routes with
 *   only a path parameter), which the API in fact answers with a Problem.
 * What TypeScript cannot express at all (integer, minimum/maximum, lengths,
 * date-time format, `data`'s any) is not checked.
 */

import type { ROUTES } from './client.js'
import type * as api from './index.js'
import type { paths } from './openapi.js'
import type {
  BackgroundTask,
  BackgroundTaskJson,
  CreateTaskOptions,
  Problem,
  RunRequest,
  RunResponse,
  TaskFilter,
  TaskPriority,
  TaskResult,
  TaskRun,
  TaskStatus,
  TaskType,
  Wire,
} from './types.js'

// ---- type-level helpers ---------------------------------------------------------

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
type IsAny<T> = 0 extends 1 & T ? true : false
type IsUnknown<T> = IsAny<T> extends true ? false : unknown extends T ? true : false
/** `T` must be `true`. */
type Assert<T extends true> = T
/** `T` must be `never`: the list of mismatches, each a readable string. */
type NoMismatch<T extends never> = T
type RequiredKeys<T> = { [K in keyof T]-?: {} extends Pick<T, K> ? never : K }[keyof T]
/** An interface as an anonymous object type (which, unlike an interface, fits an index signature). */
type Plain<T> = { [K in keyof T]: T[K] }
/** The document's `X | null` for optional fields: the API leaves unset fields out instead. */
type NoNull<T> = Exclude<T, null>
/** A JSON object type with only an index signature: the document's bare `object`. */
type IsLoose<G> = IsUnknown<G> extends true ? true : string extends keyof G ? true : false
type JsonOf<Op, Status extends number> = Op extends { responses: { [S in Status]: { content: { 'application/json': infer C } } } }
  ? C
  : never

/**
 * The differences between our type `O` (as JSON) and the document's `G`, as
 * strings naming the field; `never` when they agree. Object fields must be the
 * same set, with the same ones required; leaves must be assignable:
 * - 'request': what we send must be accepted (O -> G);
 * - 'response': what the API sends must fit our type (G -> O).
 */
type Diff<O, G, Dir extends 'request' | 'response', P extends string = ''> =
  IsAny<O> extends true
    ? never
    : IsAny<G> extends true
      ? never
      : IsUnknown<O> extends true
        ? IsUnknown<G> extends true ? never : `${P}: ours is unknown, the API's is not`
        : IsUnknown<G> extends true
          ? Dir extends 'request' ? never : `${P}: the API's type is unknown, ours is not`
          : [O] extends [readonly (infer OI)[]]
            ? [G] extends [readonly (infer GI)[]]
              ? Diff<OI, NoNull<GI>, Dir, `${P}[]`>
              : `${P}: an array in ours, not in the API`
            : [O] extends [object]
              ? [G] extends [object]
                ? string extends keyof G
                  ? [Plain<O>] extends [G] ? never : `${P}: ours does not fit the API's {[key]: ...}` // LOOSE: the document has only an index signature
                  : ObjectDiff<O, G, Dir, P>
                : `${P}: an object in ours, not in the API`
              : Dir extends 'request'
                ? [O] extends [G] ? never : `${P}: ours is not accepted by the API`
                : [G] extends [O] ? never : `${P}: the API sends values ours does not allow`

type ObjectDiff<O, G, Dir extends 'request' | 'response', P extends string> =
  | { [K in Exclude<keyof G, keyof O> & string]: `${P}.${K}: missing in ours` }[Exclude<keyof G, keyof O> & string]
  | { [K in Exclude<keyof O, keyof G> & string]: `${P}.${K}: not in the API` }[Exclude<keyof O, keyof G> & string]
  | (Dir extends 'request'
      ? { [K in Exclude<RequiredKeys<G>, RequiredKeys<O>> & string]: `${P}.${K}: required by the API, optional in ours` }[Exclude<RequiredKeys<G>, RequiredKeys<O>> & string]
      : { [K in Exclude<RequiredKeys<O>, RequiredKeys<G>> & string]: `${P}.${K}: required in ours, optional in the API` }[Exclude<RequiredKeys<O>, RequiredKeys<G>> & string])
  | {
      [K in keyof O & keyof G & string]: Diff<Exclude<O[K], undefined>, NoNull<Exclude<G[K], undefined>>, Dir, `${P}.${K}`>
    }[keyof O & keyof G & string]

/** A response check: full when the document types the response, else only "ours is a JSON object". */
type ResponseDiff<O, G, P extends string> =
  IsLoose<G> extends true
    ? [Plain<O>] extends [G] ? never : `${P}: not even an object`
    : [G] extends [readonly (infer GI)[]]
      ? IsLoose<GI> extends true
        ? never // LOOSE: an array of bare objects
        : Diff<O, G, 'response', P>
      : Diff<O, G, 'response', P>

// ---- routes: every [method, path] the client uses is in the document ---------------

type Op<R extends readonly [string, string]> = R[1] extends keyof paths
  ? R[0] extends keyof paths[R[1]]
    ? NonNullable<paths[R[1]][R[0]]>
    : never
  : never
type Routes = typeof ROUTES
type RouteMissing = {
  [K in keyof Routes]: [Op<Routes[K]>] extends [never] ? `${K}: ${Routes[K][0]} ${Routes[K][1]} is not in the document` : never
}[keyof Routes]
export type _Routes = NoMismatch<RouteMissing>

/** Routes with `{task_id}` take it as a string path parameter (and no other). */
type PathParamMismatch = {
  [K in keyof Routes]: Routes[K][1] extends `${string}{task_id}${string}`
    ? Op<Routes[K]> extends { parameters: { path: infer PP } }
      ? Equal<PP, { task_id: string }> extends true ? never : `${K}: path parameters are not {task_id: string}`
      : `${K}: no path parameters in the document`
    : never
}[keyof Routes]
export type _PathParams = NoMismatch<PathParamMismatch>

// ---- enums --------------------------------------------------------------------------

type ListQuery = NonNullable<Op<Routes['listTasks']>['parameters']['query']>
export type _Enums = [
  Assert<Equal<TaskStatus, NoNull<NonNullable<ListQuery['status']>>>>,
  Assert<Equal<TaskType, NoNull<NonNullable<ListQuery['type']>>>>,
  Assert<Equal<TaskPriority, NoNull<NonNullable<ListQuery['priority']>>>>,
]

// ---- query parameters -------------------------------------------------------------------

// listBackgroundTasks(filter): exactly the document's query parameters and values.
export type _ListQuery = NoMismatch<Diff<Plain<TaskFilter>, ListQuery, 'request', 'GET /tasks?'>>
// ...and every filter value is accepted in both directions (no value of the API missing in ours).
export type _ListQueryValues = NoMismatch<Diff<Plain<TaskFilter>, ListQuery, 'response', 'GET /tasks?'>>

// getTaskHistory(id, limit): the one query parameter, a number.
type HistoryQuery = NonNullable<Op<Routes['taskHistory']>['parameters']['query']>
export type _HistoryQuery = NoMismatch<Diff<{ limit?: number }, HistoryQuery, 'request', 'GET /tasks/{task_id}/history?'>>

// ---- request bodies ---------------------------------------------------------------------

type CreateBody = NonNullable<Op<Routes['createTask']>['requestBody']>['content']['application/json']
// Every CreateTaskOptions is a valid body, and every field of the body (nested:
// schedule, constraints, retryPolicy, retryOn) is in CreateTaskOptions with the same optionality.
export type _CreateBody = NoMismatch<Diff<Wire<CreateTaskOptions>, CreateBody, 'request', 'POST /tasks body'>>
// The spec narrows schedule.type to 'one-time' | 'periodic' (the API also names 'triggered',
// then refuses it); apart from that, every body the document allows is a CreateTaskOptions.
export type _CreateBodyBack = NoMismatch<
  Exclude<Diff<Wire<CreateTaskOptions>, CreateBody, 'response', 'POST /tasks body'>, 'POST /tasks body.schedule.type: the API sends values ours does not allow'>
>

// executeDemoTask's {delaySeconds} (the route's optional body; LOOSE if the document has none).
type RunBody = NoNull<NonNullable<Op<Routes['runTask']>['requestBody']>['content']['application/json']>
export type _RunBody = NoMismatch<
  [RunBody] extends [never]
    ? never // LOOSE: no requestBody for POST /tasks/{task_id}/run in the document
    : Diff<Plain<RunRequest>, RunBody, 'request', 'POST /tasks/{task_id}/run body'>
>

// ---- responses -----------------------------------------------------------------------------

type Responses =
  | ResponseDiff<BackgroundTaskJson, JsonOf<Op<Routes['createTask']>, 201>, 'POST /tasks 201'>
  | ResponseDiff<BackgroundTaskJson, JsonOf<Op<Routes['getTask']>, 200>, 'GET /tasks/{task_id} 200'>
  | ResponseDiff<BackgroundTaskJson[], JsonOf<Op<Routes['listTasks']>, 200>, 'GET /tasks 200'>
  | ResponseDiff<BackgroundTaskJson, JsonOf<Op<Routes['pauseTask']>, 200>, 'POST /tasks/{task_id}/pause 200'>
  | ResponseDiff<BackgroundTaskJson, JsonOf<Op<Routes['resumeTask']>, 200>, 'POST /tasks/{task_id}/resume 200'>
  | ResponseDiff<BackgroundTaskJson, JsonOf<Op<Routes['cancelTask']>, 200>, 'POST /tasks/{task_id}/cancel 200'>
  | ResponseDiff<Wire<TaskRun>[], JsonOf<Op<Routes['taskHistory']>, 200>, 'GET /tasks/{task_id}/history 200'>
  | ResponseDiff<Wire<TaskResult>, JsonOf<Op<Routes['taskResult']>, 200>, 'GET /tasks/{task_id}/result 200'>
  | ResponseDiff<RunResponse, JsonOf<Op<Routes['runTask']>, 202>, 'POST /tasks/{task_id}/run 202'>
// The spec's TaskSchedule.type is 'one-time' | 'periodic'; the document reuses TaskType, which also
// names 'triggered' (a type the API refuses at creation, so no task it returns has it).
export type _Responses = NoMismatch<Exclude<Responses, `${string}.schedule.type: the API sends values ours does not allow`>>

// The run response is typed (as {[key: string]: string}): our {runId: string} fits it.
export type _RunResponse = Assert<[Plain<RunResponse>] extends [JsonOf<Op<Routes['runTask']>, 202>] ? true : false>

// DELETE answers 204 with no body.
export type _Delete = Assert<
  Op<Routes['deleteTask']>['responses'] extends { 204: { content?: never } } ? true : false
>

// ---- errors -------------------------------------------------------------------------------------

// Every error the document declares for a route the client uses (4xx, as application/json) is a
// Problem. `type` may be left out per the document (the client fills in "about:blank").
// LOOSE: routes whose 422 is FastAPI's default `HTTPValidationError` ({detail: [{loc, msg}]}) are
// skipped: the API's handler answers those with a Problem too, but the document does not say so
// (BgtasksError reads either shape).
type ProblemJsonOurs = Omit<Plain<Problem>, 'type'> & { type?: string }
type ErrorSchemas<R extends Route> = {
  [S in keyof Op<R>['responses'] & number]: `${S}` extends `4${string}` | `5${string}`
    ? Op<R>['responses'][S] extends { content: { 'application/problem+json': infer C } }
      ? C extends { detail?: unknown[] }
        ? never // LOOSE: FastAPI's HTTPValidationError
        : [S, C]
      : never
    : never
}[keyof Op<R>['responses'] & number]
type Route = Routes[keyof Routes]
type ProblemMismatch = {
  [K in keyof Routes]: ErrorSchemas<Routes[K]> extends infer E
    ? E extends [infer S extends number, infer C]
      ? Diff<Plain<ProblemJsonOurs>, C, 'response', `${Routes[K][0]} ${Routes[K][1]} ${S}`>
      : never
    : never
}[keyof Routes]
export type _Problem = NoMismatch<ProblemMismatch>

// And at least the auth errors are declared as Problems (so the check above is not vacuous).
export type _ProblemDeclared = Assert<[ErrorSchemas<Routes['getTask']>] extends [never] ? false : true>

// ---- the spec's "Frontend Implementation": names, signatures, and its example ---------------------

export type _SpecFunctions = [
  Assert<Equal<typeof api.createBackgroundTask, (options: CreateTaskOptions) => Promise<string>>>,
  Assert<Equal<typeof api.getBackgroundTask, (id: string) => Promise<BackgroundTask | null>>>,
  // The spec's listBackgroundTasks() takes no argument; ours takes an optional filter.
  Assert<[() => Promise<BackgroundTask[]>] extends [typeof api.listBackgroundTasks] ? true : false>,
  Assert<Equal<ReturnType<typeof api.listBackgroundTasks>, Promise<BackgroundTask[]>>>,
  Assert<Equal<typeof api.cancelBackgroundTask, (id: string) => Promise<void>>>,
  Assert<Equal<typeof api.executeDemoTask, (id: string, delaySeconds: number) => Promise<void>>>,
]

// The spec's "Task Creation Example" body, as written, is a CreateTaskOptions.
export const _specExample = {
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
} satisfies CreateTaskOptions
