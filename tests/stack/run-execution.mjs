// Runs one execution of the state machine file with the aws-local-stepfunctions interpreter.
//
// Usage: node run-execution.mjs --definition statemachine/agent.asl.json [--input '{"mode":"full"}']
//        [--report report.json]
// The ${...FunctionArn} placeholders become Lambda ARNs, as the CDK's DefinitionSubstitutions
// do on AWS; the interpreter's Lambda client reaches them at AWS_ENDPOINT_URL_LAMBDA.
// Prints each state's name, status and duration, then the execution's output; exits 1 when
// the execution fails.
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { StateMachine } from 'aws-local-stepfunctions';

const { values: args } = parseArgs({
  options: {
    definition: { type: 'string' },
    input: { type: 'string', default: '{}' },
    report: { type: 'string' },
  },
});

const region = process.env.AWS_REGION ?? 'us-east-1';
const account = process.env.AGENT_ACCOUNT_ID ?? '123456789012';
// EnsureRuntimeFunctionArn -> ensure-runtime: the binaries' names.
const functionName = (placeholder) =>
  placeholder.replace(/FunctionArn$/, '').replace(/([a-z])([A-Z])/g, '$1-$2').toLowerCase();
const text = readFileSync(args.definition, 'utf8').replace(/\$\{(\w+FunctionArn)\}/g, (_, name) =>
  `arn:aws:lambda:${region}:${account}:function:${functionName(name)}`);

const machine = new StateMachine(JSON.parse(text), {
  awsConfig: {
    region,
    credentials: {
      accessKeys: {
        accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'local',
        secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'local',
      },
    },
  },
});

const input = JSON.parse(args.input);
const startedAt = new Date();
const name = `local-${startedAt.getTime()}`;
const execution = machine.run(input, {
  context: {
    Execution: {
      Id: `arn:aws:states:${region}:${account}:execution:agent:${name}`,
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

const collect = (async () => {
  for await (const event of execution.eventLogs) {
    switch (event.type) {
      case 'StateEntered':
        entered.set(key(event), event.timestamp);
        break;
      case 'StateExited':
      case 'StateFailed': {
        const ms = event.timestamp - (entered.get(key(event)) ?? event.timestamp);
        const status = event.type === 'StateExited' ? 'SUCCEEDED' : 'FAILED';
        const detail = event.type === 'StateFailed' ? `${event.Error}: ${event.Cause ?? ''}` : '';
        states.push({ name: event.state.name, index: event.index ?? null, status, ms, error: event.Error ?? null });
        line(label(event), status, ms, detail);
        break;
      }
      case 'StateRetried':
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

let report;
try {
  const output = await execution.result;
  await collect;
  report = { status: 'SUCCEEDED', output, states };
  console.log(`\nexecution SUCCEEDED in ${Date.now() - startedAt} ms\n${JSON.stringify(output, null, 2)}`);
} catch (error) {
  await collect.catch(() => {});
  const cause = error.cause ?? error;
  report = { status: 'FAILED', error: cause.name ?? 'Error', cause: cause.message ?? String(cause), states };
  console.log(`\nexecution FAILED in ${Date.now() - startedAt} ms: ${report.error}: ${report.cause}`);
}
if (args.report) writeFileSync(args.report, JSON.stringify(report, null, 2));
process.exit(report.status === 'SUCCEEDED' ? 0 : 1);
