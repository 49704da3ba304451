// Runs one execution of the state machine file with the aws-local-stepfunctions interpreter.
//
// Usage: node run-execution.mjs --definition statemachine/agent.asl.json [--input '{"mode":"full"}']
//        [--report report.json] [--history events.jsonl] [--execution-arn arn]
//        [--child SyncStateMachineArn=statemachine/agent.asl.json --child-machine-name name --sfn-endpoint url]
// The ${...FunctionArn} placeholders become Lambda ARNs, as the CDK's DefinitionSubstitutions
// do on AWS; the interpreter's Lambda client reaches them at AWS_ENDPOINT_URL_LAMBDA.
// Prints each state's name, status and duration, then the execution's output; exits 1 when
// the execution fails. Enforces the Step Functions quotas the interpreter does not: the payload
// size of every state and Lambda invocation, and the history length.
//
// Child executions (`arn:aws:states:::states:startExecution.sync:2`, which the interpreter lacks) run
// as on AWS: each is an execution of its own, in a process of its own running this file, with its own
// payload and history limits; the Task waits for it and gets what `.sync:2` answers (its description,
// Output as JSON), or fails with States.TaskFailed whose cause is that description. With
// `--sfn-endpoint` (moto) each child is registered there as running until it ends, as the parent is by
// the stack, so that a claim's holder can be looked up.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
// The interpreter's own Lambda client (its dependency, hoisted by npm).
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import { StateMachine } from 'aws-local-stepfunctions';

// "Maximum input or output size for a task, state, or execution: 262,144 bytes of data as a UTF-8
// encoded string" (Step Functions service quotas). Exceeding it fails the execution with
// States.DataLimitExceeded, "a terminal error that can't be caught by the States.ALL error type"
// (Step Functions error handling); this runner ends the execution whatever Catch the definition has.
const MAX_PAYLOAD_BYTES = 262_144;
// "Maximum execution history size: 25,000 events" (Step Functions service quotas). When event
// 25,000 is not ExecutionSucceeded, AWS logs ExecutionFailed as that event with States.Runtime,
// "The execution reached the maximum number of history events (25000)." (the docs name no error;
// that is what AWS reports).
const MAX_HISTORY_EVENTS = 25_000;
// The events AWS's execution history holds for each interpreter event, by state type, as AWS records
// them: a Task invoking Lambda logs TaskStateEntered, LambdaFunctionScheduled, LambdaFunctionStarted,
// LambdaFunctionSucceeded|Failed|TimedOut and TaskStateExited, and Scheduled, Started and Failed again
// per retry; a Map logs MapStateEntered, MapStateStarted, MapIterationStarted and
// MapIterationSucceeded|Failed per item, MapStateSucceeded|Failed and MapStateExited; a Parallel logs
// ParallelStateEntered, ParallelStateStarted, ParallelStateFailed (nothing on success) and
// ParallelStateExited; other states log Entered and Exited (Fail only FailStateEntered). A retried
// Map or Parallel logs XStateStarted instead of XStateFailed. A caught failure ends with XStateExited
// and no success event (the interpreter reports StateCaught, then StateExited); an uncaught one with
// ExecutionFailed alone.
const HISTORY_EVENTS = {
  Task: { StateEntered: 3, StateExited: 2, StateFailed: 1, StateRetried: 2, StateCaught: -1 },
  Map: { StateEntered: 2, StateExited: 2, StateFailed: 1, StateCaught: -1 },
  Parallel: { StateEntered: 2, StateExited: 1, StateFailed: 1 },
  other: { StateEntered: 1, StateExited: 1 },
  execution: { ExecutionStarted: 1, ExecutionSucceeded: 1, ExecutionFailed: 1, MapIterationStarted: 1,
    MapIterationSucceeded: 1, MapIterationFailed: 1 },
};
// A Task that runs a child execution (`.sync`) logs TaskSubmitted besides, once the child has started.
const historyEvents = (event) =>
  (event.state ? HISTORY_EVENTS[event.state.type] ?? HISTORY_EVENTS.other : HISTORY_EVENTS.execution)[event.type] ?? 0;
const historyEventsOf = (event) =>
  historyEvents(event) + (event.type === 'StateEntered' && syncTasks.has(event.state?.name) ? 1 : 0);

const { values: args } = parseArgs({
  options: {
    definition: { type: 'string' },
    input: { type: 'string', default: '{}' },
    report: { type: 'string' },
    // Every history event with its payloads, one JSON line each (what the console shows a user).
    history: { type: 'string' },
    // The execution's ARN as Step Functions knows it (the stack registers it with moto), so that a
    // claim's holder can be looked up; by default a local name no service knows.
    'execution-arn': { type: 'string' },
    // The state machine a `${Placeholder}` names, as `Placeholder=definition.json`: its Task states with
    // `states:startExecution.sync:2` start executions of that definition.
    child: { type: 'string' },
    'child-machine-name': { type: 'string', default: 'ApiGatewayApicpAgent-workflow' },
    'sfn-endpoint': { type: 'string' },
  },
});

const region = process.env.AWS_REGION ?? 'us-east-1';
const account = process.env.AGENT_ACCOUNT_ID ?? '123456789012';
const credentials = {
  accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'local',
  secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'local',
};
// EnsureRuntimeFunctionArn -> ensure-runtime: the binaries' names.
const functionName = (placeholder) =>
  placeholder.replace(/FunctionArn$/, '').replace(/([a-z])([A-Z])/g, '$1-$2').toLowerCase();
const [childPlaceholder, childDefinition] = args.child ? args.child.split('=') : [null, null];
const childMachineArn = `arn:aws:states:${region}:${account}:stateMachine:${args['child-machine-name']}`;
let text = readFileSync(args.definition, 'utf8').replace(/\$\{(\w+FunctionArn)\}/g, (_, name) =>
  `arn:aws:lambda:${region}:${account}:function:${functionName(name)}`);
if (childPlaceholder) text = text.replaceAll(`\${${childPlaceholder}}`, childMachineArn);
const definition = JSON.parse(text);
const machine = new StateMachine(definition, { awsConfig: { region, credentials: { accessKeys: credentials } } });

const size = (value) => Buffer.byteLength(JSON.stringify(value ?? null));
const largest = { input: { state: null, bytes: 0 }, output: { state: null, bytes: 0 } };
let history = 0;
// What Step Functions Standard bills: a transition per state entered, and one per retry.
let transitions = 0;
// What the execution's Lambda invocations took (what Lambda bills), and what its child executions did.
const lambdaUse = { invocations: 0, ms: 0 };
const children = { executions: 0, failed: 0, maxHistoryEvents: 0, largestPayloadBytes: 0, stateTransitions: 0,
  lambdaInvocations: 0, lambdaMs: 0 };
let failure = null;
// Records the size of a state's (or its Lambda invocation's) input or output; the quota's cause when over it.
const measure = (kind, state, bytes) => {
  if (bytes > largest[kind].bytes) largest[kind] = { state, bytes };
  if (bytes <= MAX_PAYLOAD_BYTES) return null;
  const what = kind === 'input' ? 'received an input' : 'returned a result';
  return `The state/task '${state}' ${what} with a size exceeding the maximum number of bytes service limit ` +
    `(${bytes} bytes, the limit is ${MAX_PAYLOAD_BYTES}).`;
};
// An error no Retry or Catch of the interpreter matches.
const terminal = (name, cause) => Object.assign(new Error(cause), { name, isRetryable: false, isCatchable: false });
// The first limit reached ends the execution, as AWS ends it.
const fail = (error, cause) => {
  if (failure) return;
  failure = { error, cause };
  history += 1; // ExecutionFailed
  execution.abort();
};

// Task states invoke Lambda here rather than in the interpreter, which cannot measure the payload or
// the result; errors are reported as the interpreter's own client reports them.
const lambda = new LambdaClient({ region, credentials });
const invoke = (state, resource) => async (input) => {
  // The state events queued so far are counted and measured first: no invocation after a failure.
  await new Promise(setImmediate);
  if (failure) throw terminal(failure.error, failure.cause);
  const payload = Buffer.from(JSON.stringify(input));
  const tooLarge = measure('input', state, payload.length);
  if (tooLarge) throw terminal('States.DataLimitExceeded', tooLarge);
  // A failed Invoke call reaches the state as Step Functions names it: Lambda.ServiceException,
  // Lambda.TooManyRequestsException and so on, which the definition's Retry matches.
  const invokedAt = Date.now();
  lambdaUse.invocations += 1;
  const response = await lambda.send(new InvokeCommand({ FunctionName: resource, Payload: payload })).finally(() => {
    lambdaUse.ms += Date.now() - invokedAt;
  }).catch((error) => {
    throw Object.assign(new Error(error.message), { name: `Lambda.${error.name}` });
  });
  const result = response.Payload ? JSON.parse(new TextDecoder().decode(response.Payload)) : null;
  if (response.FunctionError) {
    throw Object.assign(new Error(`${result.errorType}: ${result.errorMessage}`, { cause: result }),
      { name: result.errorType });
  }
  const overLimit = measure('output', state, response.Payload?.byteLength ?? 0);
  if (overLimit) throw terminal('States.DataLimitExceeded', overLimit);
  return result;
};
// Step Functions' own API, as moto speaks it (it reads the account and region off the Authorization header and
// checks no signature).
const stepFunctions = async (operation, body) => {
  const response = await fetch(args['sfn-endpoint'], {
    method: 'POST',
    headers: {
      'Content-Type': 'application/x-amz-json-1.0',
      'X-Amz-Target': `AWSStepFunctions.${operation}`,
      Authorization: `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/20260101/${region}/states/aws4_request, ` +
        'SignedHeaders=host, Signature=0',
    },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`states:${operation} answered ${response.status}: ${await response.text()}`);
  return response.json();
};
const SYNC_2 = 'arn:aws:states:::states:startExecution.sync:2';
const childReports = args.child ? mkdtempSync(join(tmpdir(), 'child-executions-')) : null;
// Runs one child execution to its end; answers as `.sync:2` does.
const startExecutionSync = (state) => async (input) => {
  await new Promise(setImmediate);
  if (failure) throw terminal(failure.error, failure.cause);
  const tooLarge = measure('input', state, size(input));
  if (tooLarge) throw terminal('States.DataLimitExceeded', tooLarge);
  if (input.StateMachineArn !== childMachineArn) {
    throw Object.assign(new Error(`State Machine Does Not Exist: '${input.StateMachineArn}'`),
      { name: 'StepFunctions.StateMachineDoesNotExistException' });
  }
  const name = input.Name ?? randomUUID();
  const startDate = Date.now();
  const executionArn = args['sfn-endpoint']
    ? (await stepFunctions('StartExecution', { stateMachineArn: childMachineArn, name })).executionArn
    : `arn:aws:states:${region}:${account}:execution:${args['child-machine-name']}:${name}`;
  const report = join(childReports, `${name}.json`);
  const childInput = JSON.stringify(input.Input ?? {});
  const status = await new Promise((resolve) => {
    const child = spawn(process.execPath, [process.argv[1], '--definition', childDefinition, '--input', childInput,
      '--report', report, '--execution-arn', executionArn], { stdio: ['ignore', 'pipe', 'inherit'] });
    // The child's states, each line marked with its execution.
    child.stdout.on('data', (chunk) => {
      for (const row of chunk.toString().split('\n').filter(Boolean)) console.log(`  [${name.slice(0, 8)}] ${row}`);
    });
    child.on('close', resolve);
  });
  if (args['sfn-endpoint']) await stepFunctions('StopExecution', { executionArn }).catch(() => {});
  const result = JSON.parse(readFileSync(report, 'utf8'));
  children.executions += 1;
  children.failed += result.status === 'SUCCEEDED' ? 0 : 1;
  children.maxHistoryEvents = Math.max(children.maxHistoryEvents, result.limits.historyEvents);
  children.largestPayloadBytes = Math.max(children.largestPayloadBytes, result.limits.largestInput.bytes,
    result.limits.largestOutput.bytes);
  children.stateTransitions += result.limits.stateTransitions;
  children.lambdaInvocations += result.limits.lambdaInvocations;
  children.lambdaMs += result.limits.lambdaMs;
  const description = {
    ExecutionArn: executionArn, Input: childInput, InputDetails: { Included: true }, Name: name,
    StartDate: startDate, StateMachineArn: childMachineArn, Status: status === 0 ? 'SUCCEEDED' : 'FAILED',
    StopDate: Date.now(),
  };
  if (result.status !== 'SUCCEEDED') {
    throw Object.assign(new Error(JSON.stringify({ ...description, Error: result.error, Cause: result.cause })),
      { name: 'States.TaskFailed' });
  }
  const answer = { ...description, Input: input.Input ?? {}, Output: result.output, OutputDetails: { Included: true } };
  const overLimit = measure('output', state, size(answer));
  if (overLimit) throw terminal('States.DataLimitExceeded', overLimit);
  return answer;
};
// State names are unique across the whole definition (the interpreter's validator insists).
const taskHandlers = {};
const syncTasks = new Set();
const collectTasks = (states) => {
  for (const [name, state] of Object.entries(states)) {
    if (state.Type === 'Task' && state.Resource === SYNC_2) {
      taskHandlers[name] = startExecutionSync(name);
      syncTasks.add(name);
    } else if (state.Type === 'Task') taskHandlers[name] = invoke(name, state.Resource);
    for (const nested of [state.ItemProcessor ?? state.Iterator, ...(state.Branches ?? [])]) {
      if (nested) collectTasks(nested.States);
    }
  }
};
collectTasks(definition.States);

const input = JSON.parse(args.input);
const startedAt = new Date();
const executionId = args['execution-arn'] ??
  `arn:aws:states:${region}:${account}:execution:ApiGatewayApicpAgent-workflow:local-${startedAt.getTime()}-${process.pid}`;
const name = executionId.split(':').at(-1);
const execution = machine.run(input, {
  overrides: { taskResourceLocalHandlers: taskHandlers },
  context: {
    Execution: {
      Id: executionId,
      Name: name,
      StartTime: startedAt.toISOString(),
      Input: input,
    },
  },
});

const entered = new Map();
const states = [];
const key = (event) => `${event.state.name}#${event.index ?? ''}`;
const label = (event) => (event.index === undefined ? event.state.name : `${event.state.name}[${event.index}]`);
const line = (name, status, ms, detail = '') =>
  console.log(`${name.padEnd(32)} ${status.padEnd(10)} ${ms === null ? '' : `${ms} ms`.padStart(9)}${detail ? `  ${detail}` : ''}`);

// Events arrive shortly after the interpreter emits them; those after a failure are ones AWS never
// reaches, and are ignored.
const collect = (async () => {
  for await (const event of execution.eventLogs) {
    if (failure) continue;
    history += historyEventsOf(event);
    if (args.history) appendFileSync(args.history, `${JSON.stringify(event)}\n`);
    if (history >= MAX_HISTORY_EVENTS && event.type !== 'ExecutionSucceeded') {
      history = MAX_HISTORY_EVENTS - 1;
      fail('States.Runtime', `The execution reached the maximum number of history events (${MAX_HISTORY_EVENTS}).`);
      continue;
    }
    switch (event.type) {
      case 'StateEntered': {
        transitions += 1;
        const inputBytes = size(event.state.input);
        const tooLarge = measure('input', label(event), inputBytes);
        if (tooLarge) fail('States.DataLimitExceeded', tooLarge);
        entered.set(key(event), { at: event.timestamp, inputBytes });
        break;
      }
      case 'StateExited':
      case 'StateFailed': {
        let { Error: error = null, Cause: cause } = event;
        // A function's error arrives as its payload ({errorType, errorMessage}).
        if (cause && typeof cause === 'object') cause = cause.errorMessage ?? JSON.stringify(cause);
        const outputBytes = event.type === 'StateExited' ? size(event.state.output) : null;
        const tooLarge = outputBytes !== null && measure('output', label(event), outputBytes);
        if (tooLarge) {
          [error, cause] = ['States.DataLimitExceeded', tooLarge];
          history -= historyEvents(event); // AWS logs ExecutionFailed in place of the exit
          fail(error, cause);
        }
        const { at = event.timestamp, inputBytes = null } = entered.get(key(event)) ?? {};
        const ms = event.timestamp - at;
        const status = error ? 'FAILED' : 'SUCCEEDED';
        states.push({ name: event.state.name, index: event.index ?? null, status, ms, error, inputBytes, outputBytes });
        line(label(event), status, ms, error ? `${error}: ${cause ?? ''}` : '');
        break;
      }
      case 'StateRetried':
        transitions += 1;
        states.push({ name: event.state.name, index: event.index ?? null, status: 'RETRIED', attempt: event.retry.attempt });
        line(label(event), 'RETRIED', null, `attempt ${event.retry.attempt}`);
        break;
      case 'StateCaught':
        states.push({ name: event.state.name, index: event.index ?? null, status: 'CAUGHT' });
        line(label(event), 'CAUGHT', null);
        break;
      default:
        break;
    }
  }
})();

const outcome = await execution.result.then((output) => ({ output }), (error) => ({ error: error.cause ?? error }));
await collect;
const limits = {
  lambdaInvocations: lambdaUse.invocations, lambdaMs: lambdaUse.ms, ...(children.executions ? { children } : {}),
  maxPayloadBytes: MAX_PAYLOAD_BYTES, largestInput: largest.input, largestOutput: largest.output,
  maxHistoryEvents: MAX_HISTORY_EVENTS, historyEvents: history, stateTransitions: transitions,
};
let report;
if (!failure && !outcome.error) {
  report = { status: 'SUCCEEDED', output: outcome.output, states, limits };
  console.log(`\nexecution SUCCEEDED in ${Date.now() - startedAt} ms\n${JSON.stringify(outcome.output, null, 2)}`);
} else {
  const { error, cause } = failure ??
    { error: outcome.error.name ?? 'Error', cause: outcome.error.message ?? String(outcome.error) };
  report = { status: 'FAILED', error, cause, states, limits };
  console.log(`\nexecution FAILED in ${Date.now() - startedAt} ms: ${error}: ${cause}`);
}
console.log(`largest input ${largest.input.bytes} bytes (${largest.input.state}), largest output ` +
  `${largest.output.bytes} bytes (${largest.output.state}), ${history} history events`);
if (args.report) writeFileSync(args.report, JSON.stringify(report, null, 2));
process.exit(report.status === 'SUCCEEDED' ? 0 : 1);
