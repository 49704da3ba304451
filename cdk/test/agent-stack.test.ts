// Assertions on the synthesized template, cdk-nag's verdict, and the deployed definition.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

import { App, Duration, Validations } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { Topic } from 'aws-cdk-lib/aws-sns';
import { AwsSolutionsChecks } from 'cdk-nag';

import { AgentStack, PUSH_STARTER_TIMEOUT_SECONDS, TICK_TIMEOUT_SECONDS } from '../lib/agent-stack.ts';
import { MemberRoleStack, memberRoleTemplate } from '../lib/member-role.ts';
import { PUSH_EVENT_PATTERN, PushForwarderStack, pushForwarderTemplate } from '../lib/push-forwarder.ts';
import {
  type AgentSettings,
  CONTEXT_VARIABLES,
  DEFAULTS,
  functionEnvironment,
  settingsFromContext,
} from '../lib/settings.ts';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// The settings checker the stack runs (`make lambdas` builds it too): a no-op when up to date.
execFileSync('cargo', ['build', '-q', '-p', 'agent-settings', '--bin', 'check-settings'], { cwd: repo, stdio: 'inherit' });
const definitionFile = join(repo, 'statemachine', 'agent.asl.json');
const fanOutDefinitionFile = join(repo, 'statemachine', 'targets.asl.json');
const BINARIES = ['ensure-runtime', 'list-changes', 'transform', 'publish', 'ack-watermark', 'targets'];

/** Stand-ins for the `cargo lambda build` output: the template only needs the folders. */
function lambdaAssets(): string {
  const dir = mkdtempSync(join(tmpdir(), 'agent-assets-'));
  for (const binary of BINARIES) {
    mkdirSync(join(dir, binary));
    writeFileSync(join(dir, binary, 'bootstrap'), `#!/bin/sh\n# ${binary}\n`);
  }
  return dir;
}

const assetsDir = lambdaAssets();

function build(context: Record<string, string> = {}) {
  // The app's context too: the stack reads some keys itself (organizationId, memberRoleCallAs).
  const app = new App({ context });
  const settings = settingsFromContext((key) => ({ controlPlaneUrl: 'https://apicp.example.com', ...context })[key]);
  const stack = new AgentStack(app, 'Agent', { settings, lambdaAssetsDir: assetsDir, definitionFile, fanOutDefinitionFile });
  return { app, stack, settings };
}

function synth(context: Record<string, string> = {}) {
  return { template: Template.fromStack(build(context).stack) };
}

/** An app checked by cdk-nag the way bin/agent.ts checks it. */
function nagged(context: Record<string, string> = {}) {
  const { app, stack } = build(context);
  Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
  return { app, stack };
}

type Statement = { Action: string | string[]; Resource: unknown; Effect: string };

function statementsOf(template: Template, roleLogicalIdPrefix: string): Statement[] {
  const policies = template.findResources('AWS::IAM::Policy');
  return Object.values(policies)
    .filter((p) => JSON.stringify(p.Properties.Roles).includes(roleLogicalIdPrefix))
    .flatMap((p) => p.Properties.PolicyDocument.Statement as Statement[]);
}

function actionsOf(template: Template, rolePrefix: string): string[] {
  return statementsOf(template, rolePrefix).flatMap((s) => [s.Action].flat()).sort();
}

/** The function whose description names this task (`API Gateway agent: <task>`). */
function functionOf(template: Template, task: string) {
  return Object.values(template.findResources('AWS::Lambda::Function'))
    .find((f) => f.Properties.Description === `API Gateway agent: ${task}`)!;
}

/** The logical id of the alias `live` of the function `name` (its construct id). */
function aliasOf(template: Template, name: string): string {
  const aliases = Object.keys(template.findResources('AWS::Lambda::Alias')).filter((id) => id.startsWith(`${name}Live`));
  assert.equal(aliases.length, 1, `${name}'s alias`);
  return aliases[0];
}

describe('the agent stack', () => {
  const { template } = synth();

  it('deploys six arm64 provided.al2023 functions (the five tasks and the tick), each with a version and an alias', () => {
    template.resourceCountIs('AWS::Lambda::Function', 6);
    template.allResourcesProperties('AWS::Lambda::Function', {
      Runtime: 'provided.al2023',
      Architectures: ['arm64'],
      Handler: 'bootstrap',
      MemorySize: 256,
      TracingConfig: { Mode: 'Active' },
      LoggingConfig: Match.objectLike({ LogFormat: 'JSON' }),
    });
    template.resourceCountIs('AWS::Lambda::Version', 6);
    template.resourceCountIs('AWS::Lambda::Alias', 6);
    template.allResourcesProperties('AWS::Lambda::Alias', { Name: 'live' });
  });

  it('fills every placeholder of the definition with an alias ARN', () => {
    const [machine] = Object.values(template.findResources('AWS::StepFunctions::StateMachine'));
    const placeholders = [...readFileSync(definitionFile, 'utf8').matchAll(/\$\{(\w+)\}/g)].map((m) => m[1]);
    const substitutions = machine.Properties.DefinitionSubstitutions as Record<string, { Ref: string }>;
    assert.deepEqual(Object.keys(substitutions).sort(), [...new Set(placeholders)].sort());
    const aliases = template.findResources('AWS::Lambda::Alias');
    for (const [placeholder, value] of Object.entries(substitutions)) {
      assert.ok(value.Ref in aliases, `${placeholder} must resolve to an alias, got ${JSON.stringify(value)}`);
    }
    assert.equal(machine.Properties.StateMachineType, 'STANDARD');
    assert.deepEqual(machine.Properties.TracingConfiguration, { Enabled: true });
  });

  it('logs the workflow\'s errors without execution data, unless told otherwise', () => {
    const logging = (t: Template) => Object.values(t.findResources('AWS::StepFunctions::StateMachine'))[0].Properties
      .LoggingConfiguration;
    assert.equal(logging(template).Level, 'ERROR');
    assert.equal(logging(template).IncludeExecutionData, false);
    const all = logging(synth({ workflowLogLevel: 'ALL', workflowLogExecutionData: 'true' }).template);
    assert.equal(all.Level, 'ALL');
    assert.equal(all.IncludeExecutionData, true);
  });

  it('lets the functions decrypt an imported secret with its customer managed key, and only through Secrets Manager', () => {
    const key = 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    const imported = synth({
      controlPlaneSecretArn: 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp-AbCdEf',
      controlPlaneSecretKmsKeyArn: key,
    }).template;
    for (const role of ['EnsureRuntimeRole', 'ListChangesRole', 'PublishRole', 'TickRole']) {
      const decrypt = statementsOf(imported, role).filter((s) => s.Action === 'kms:Decrypt');
      assert.equal(decrypt.length, 1, role);
      assert.equal(decrypt[0].Resource, key);
      assert.match(JSON.stringify(decrypt[0]), /kms:ViaService/);
    }
    assert.deepEqual(statementsOf(imported, 'TransformRole').filter((s) => s.Action === 'kms:Decrypt'), []);
    const created = synth({ controlPlaneSecretKmsKeyArn: key }).template;
    const [createdSecret] = Object.values(created.findResources('AWS::SecretsManager::Secret'));
    assert.equal(createdSecret.Properties.KmsKeyId, key);
    assert.equal(statementsOf(created, 'PublishRole').filter((s) => s.Action === 'kms:Decrypt').length, 1);
    assert.deepEqual(statementsOf(template, 'PublishRole').filter((s) => [s.Action].flat().includes('kms:Decrypt')), []);
  });

  it('deploys the definition file as it is, and it stays valid once substituted', async () => {
    const [machine] = Object.values(template.findResources('AWS::StepFunctions::StateMachine'));
    assert.equal(machine.Properties.DefinitionString, readFileSync(definitionFile, 'utf8'));
    const substituted = machine.Properties.DefinitionString.replace(
      /\$\{(\w+)\}/g,
      (_: string, name: string) => `arn:aws:lambda:eu-west-1:111122223333:function:${name}:live`,
    );
    const { default: aslValidator } = await import('asl-validator');
    const result = aslValidator(JSON.parse(substituted), { checkPaths: true, checkArn: true });
    assert.ok(result.isValid, JSON.stringify(result.errorsText?.() ?? result.errors));
  });

  it('invokes the tick every minute from a schedule whose role may only invoke the tick', () => {
    const tickAlias = aliasOf(template, 'Tick');
    template.hasResourceProperties('AWS::Scheduler::Schedule', {
      ScheduleExpression: 'rate(1 minute)',
      FlexibleTimeWindow: { Mode: 'OFF' },
      State: 'ENABLED',
      Target: {
        Arn: { Ref: tickAlias },
        Input: JSON.stringify({ action: 'tick', scheduledTime: '<aws.scheduler.scheduled-time>' }),
        RetryPolicy: { MaximumRetryAttempts: 0 },
      },
    });
    // No retry of a failed tick by Lambda either: the next tick catches up.
    template.hasResourceProperties('AWS::Lambda::EventInvokeConfig', { MaximumRetryAttempts: 0 });
    assert.deepEqual(statementsOf(template, 'ScheduleRole'), [
      { Action: 'lambda:InvokeFunction', Effect: 'Allow', Resource: { Ref: tickAlias } },
    ]);
    const [role] = Object.values(template.findResources('AWS::IAM::Role', {
      Properties: { AssumeRolePolicyDocument: { Statement: [Match.objectLike({ Principal: { Service: 'scheduler.amazonaws.com' } })] } },
    }));
    assert.ok(role, 'the schedule has a role of its own');
    assert.ok(template.toJSON().Outputs.TickFunctionName, 'the tick\'s name is an output');
  });

  it('runs the tick with the targets binary, for 120 s, telling it the workflow only', () => {
    const tick = functionOf(template, 'tick');
    assert.equal(tick.Properties.Timeout, TICK_TIMEOUT_SECONDS);
    assert.equal(TICK_TIMEOUT_SECONDS, 120);
    const workflow = Object.keys(template.findResources('AWS::StepFunctions::StateMachine'))[0];
    const variables = tick.Properties.Environment.Variables;
    assert.deepEqual(variables.SYNC_STATE_MACHINE_ARN, { Ref: workflow });
    assert.equal(variables.FAN_OUT_STATE_MACHINE_ARN, undefined);
    // The tasks' settings too: the tick runs their code.
    const { SYNC_STATE_MACHINE_ARN: _, ...shared } = variables;
    assert.deepEqual(shared, functionOf(template, 'ack-watermark').Properties.Environment.Variables);
    // The same code as the targets function (its asset).
    const { template: listed } = synth({ targetRegions: 'eu-west-1,us-east-1' });
    const code = (task: string) => functionOf(listed, task).Properties.Code.S3Key;
    assert.ok(code('tick'));
    assert.equal(code('tick'), code('targets'));
    assert.notEqual(code('tick'), code('ack-watermark'));
  });

  it('lets the tick start the workflow and do a quiet target\'s run, without a listing or a snapshot stored', () => {
    const workflow = Object.keys(template.findResources('AWS::StepFunctions::StateMachine'))[0];
    const start = statementsOf(template, 'TickRole').filter((s) => [s.Action].flat().includes('states:StartExecution'));
    assert.deepEqual(start, [{ Action: 'states:StartExecution', Effect: 'Allow', Resource: { Ref: workflow } }]);
    const keys = (action: string) =>
      statementsOf(template, 'TickRole')
        .filter((s) => [s.Action].flat().includes(action))
        .flatMap((s) => Object.values((s as { Condition?: Record<string, Record<string, string[]>> }).Condition ?? {}))
        .flatMap((condition) => condition['dynamodb:LeadingKeys'] ?? []);
    assert.deepEqual(keys('dynamodb:GetItem'), [
      '#*', '#discovery', '#catalog#*', '#registry', '#applied#*', '#run#*', '#lock#listing', '#progress#*', '#report#*',
    ]);
    assert.deepEqual(keys('dynamodb:UpdateItem'), ['#*', '#registry', '#run#*', '#lock#listing', '#pace#apigateway']);
    assert.deepEqual(keys('dynamodb:PutItem'), ['#applied#*', '#discovery', '#progress#*', '#report#*']);
    const [describe] = statementsOf(template, 'TickRole').filter((s) => s.Action === 'states:DescribeExecution');
    assert.match(JSON.stringify(describe.Resource), /:execution:Agent-workflow:\*/);
  });

  it('grants no wildcard action and no managed policy', () => {
    for (const policy of Object.values(template.findResources('AWS::IAM::Policy'))) {
      for (const statement of policy.Properties.PolicyDocument.Statement as Statement[]) {
        for (const action of [statement.Action].flat()) {
          assert.ok(!action.includes('*'), `wildcard action ${action}`);
        }
      }
    }
    for (const role of Object.values(template.findResources('AWS::IAM::Role'))) {
      assert.equal(role.Properties.ManagedPolicyArns, undefined, 'no managed policies');
    }
  });

  it('gives each function only the actions it calls (tests/iam checks them against the calls themselves)', () => {
    const common = ['logs:CreateLogStream', 'logs:PutLogEvents', 'xray:PutTelemetryRecords', 'xray:PutTraceSegments'];
    const secret = ['secretsmanager:GetSecretValue'];
    const expected: Record<string, string[]> = {
      EnsureRuntimeRole: [
        ...common,
        'apigateway:GET',
        'dynamodb:GetItem',
        'dynamodb:PutItem',
        'dynamodb:Scan',
        'dynamodb:UpdateItem',
        'states:DescribeExecution',
        ...secret,
      ],
      ListChangesRole: [
        ...common,
        'apigateway:GET',
        'cloudtrail:LookupEvents',
        'dynamodb:GetItem',
        'dynamodb:PutItem',
        'dynamodb:UpdateItem',
        'states:DescribeExecution',
        ...secret,
      ],
      TransformRole: [...common, 'cloudwatch:GetMetricData', 'cloudwatch:ListMetrics', 'dynamodb:GetItem', 'dynamodb:PutItem'],
      PublishRole: [...common, 'dynamodb:GetItem', 'dynamodb:UpdateItem', ...secret],
      AckWatermarkRole: [...common, 'dynamodb:GetItem', 'dynamodb:UpdateItem'],
      // A quiet target's run: every task's reads, no listing or snapshot stored.
      TickRole: [
        ...common,
        'apigateway:GET',
        'cloudtrail:LookupEvents',
        'cloudwatch:GetMetricData',
        'cloudwatch:ListMetrics',
        'dynamodb:GetItem',
        'dynamodb:PutItem',
        'dynamodb:Scan',
        'dynamodb:UpdateItem',
        'states:DescribeExecution',
        'states:StartExecution',
        ...secret,
      ],
    };
    for (const [role, actions] of Object.entries(expected)) {
      assert.deepEqual([...new Set(actionsOf(template, role))], actions.sort(), role);
    }
  });

  it('scopes each function\'s table grants to the items it reads and writes', () => {
    const keys = (role: string, action: string) =>
      statementsOf(template, role)
        .filter((s) => [s.Action].flat().includes(action))
        .map((s) => JSON.stringify((s as { Condition?: unknown }).Condition ?? 'the whole table'));
    assert.deepEqual(keys('TransformRole', 'dynamodb:PutItem'), [
      JSON.stringify({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['#report#*', '#progress#*'] } }),
    ]);
    assert.deepEqual(keys('PublishRole', 'dynamodb:UpdateItem'), [
      JSON.stringify({ 'ForAllValues:StringNotLike': { 'dynamodb:LeadingKeys': ['#*'] } }),
      JSON.stringify({ 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['#run#*'] } }),
    ]);
    for (const role of ['EnsureRuntimeRole', 'ListChangesRole', 'TransformRole', 'PublishRole', 'AckWatermarkRole', 'TickRole']) {
      for (const statement of statementsOf(template, role).filter((s) => [s.Action].flat().some((a) => a.startsWith('dynamodb:')))) {
        assert.ok((statement as { Condition?: unknown }).Condition, `${role}: ${JSON.stringify(statement)} is not scoped`);
      }
    }
  });

  it('lets list-changes describe only the executions of its own state machine', () => {
    template.hasResourceProperties('AWS::StepFunctions::StateMachine', { StateMachineName: 'Agent-workflow' });
    const [statement] = statementsOf(template, 'ListChangesRole').filter((s) => s.Action === 'states:DescribeExecution');
    assert.match(JSON.stringify(statement.Resource), /:execution:Agent-workflow:\*/);
  });

  it('reads exactly the API Gateway resources of the selected API types, GET only', () => {
    const resourcesOf = (t: Template) => {
      const statements = statementsOf(t, 'ListChangesRole').filter((s) => s.Action === 'apigateway:GET');
      assert.equal(statements.length, 1);
      return [statements[0].Resource].flat().map((r) => JSON.stringify(r).match(/::(\/[^"]*)"/)?.[1]).sort();
    };
    assert.deepEqual(resourcesOf(template), [
      '/apis', '/apis/*', '/domainnames', '/domainnames/*/apimappings', '/domainnames/*/basepathmappings',
      '/restapis', '/restapis/*',
    ]);
    assert.deepEqual(resourcesOf(synth({ apiTypes: 'REST' }).template), [
      '/domainnames', '/domainnames/*/basepathmappings', '/restapis', '/restapis/*',
    ]);
    assert.deepEqual(resourcesOf(synth({ apiTypes: 'HTTP,WEBSOCKET' }).template), [
      '/apis', '/apis/*', '/domainnames', '/domainnames/*/apimappings',
    ]);
  });

  it('scopes the table and secret grants to the one table and the one secret', () => {
    const table = Object.keys(template.findResources('AWS::DynamoDB::Table'))[0];
    const secret = Object.keys(template.findResources('AWS::SecretsManager::Secret'))[0];
    for (const role of ['EnsureRuntimeRole', 'ListChangesRole', 'PublishRole', 'AckWatermarkRole', 'TransformRole', 'TickRole']) {
      for (const statement of statementsOf(template, role)) {
        const actions = [statement.Action].flat();
        if (actions.some((a) => a.startsWith('dynamodb:'))) {
          assert.deepEqual(statement.Resource, { 'Fn::GetAtt': [table, 'Arn'] }, role);
        }
        if (actions.some((a) => a.startsWith('secretsmanager:'))) {
          assert.deepEqual(statement.Resource, { Ref: secret }, role);
        }
      }
    }
  });

  it('keeps state in an on-demand table with point-in-time recovery that outlives the stack', () => {
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      Properties: {
        BillingMode: 'PAY_PER_REQUEST',
        DeletionProtectionEnabled: true,
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        KeySchema: [{ AttributeName: 'stage', KeyType: 'HASH' }],
      },
    });
  });

  it('alarms on failed and timed-out executions, on metrics windows in doubt and on sync lag', () => {
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'ExecutionsFailed', Threshold: 1 });
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'ExecutionsTimedOut', Threshold: 1 });
    // Three ticks in a row failed: nothing runs.
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/Lambda',
      MetricName: 'Errors',
      Dimensions: [{ Name: 'FunctionName', Value: { Ref: Match.stringLikeRegexp('^Tick') } }],
      Period: 60,
      EvaluationPeriods: 3,
      DatapointsToAlarm: 3,
      TreatMissingData: 'notBreaching',
    });
    // The publish task's EMF metric: a window that may be missing is worth a look, at once.
    template.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'ApiGatewayApicpAgent',
      MetricName: 'MetricsWindowsInDoubt',
      Dimensions: Match.absent(),
      Statistic: 'Sum',
      Threshold: 1,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      TreatMissingData: 'notBreaching',
    });
    // Metrics are read every fetch interval (30 minutes): their lag may be that much larger, and
    // a 15-minute period without an ack is no gap.
    for (const [kind, threshold, period] of [
      ['assets', 1800, 900],
      ['metrics', 3600, 2700],
    ] as const) {
      template.hasResourceProperties('AWS::CloudWatch::Alarm', {
        Namespace: 'ApiGatewayApicpAgent',
        MetricName: 'SyncLagSeconds',
        Dimensions: [{ Name: 'Kind', Value: kind }],
        Threshold: threshold,
        Period: period,
        TreatMissingData: 'breaching',
      });
    }
  });

  it('gives each function a timeout shorter than the TimeoutSeconds of every Task that invokes it', () => {
    // The Task's timer includes the cold start: a Lambda timeout as long as the Task's would let
    // Step Functions abandon a still-running task instead of catching Lambda's own timeout error.
    const definition = JSON.parse(readFileSync(definitionFile, 'utf8'));
    const tasks: { name: string; resource: string; timeout: number }[] = [];
    const walk = (states: Record<string, any>) => {
      for (const [name, state] of Object.entries(states)) {
        if (state.Type === 'Task') tasks.push({ name, resource: state.Resource, timeout: state.TimeoutSeconds });
        for (const branch of state.Branches ?? []) walk(branch.States);
        if (state.ItemProcessor) walk(state.ItemProcessor.States);
      }
    };
    walk(definition.States);
    assert.ok(tasks.length >= 10, 'every Task of both branches is checked');
    const functions = template.findResources('AWS::Lambda::Function');
    const timeoutOf = (binary: string) =>
      Object.values(functions).find((f) => f.Properties.Description.endsWith(`: ${binary}`))!.Properties.Timeout;
    const specs = JSON.parse(readFileSync(join(repo, 'statemachine', 'functions.json'), 'utf8'));
    for (const task of tasks) {
      assert.ok(task.timeout, `${task.name} has a TimeoutSeconds`);
      const placeholder = task.resource.replace(/^\$\{(\w+)\}$/, '$1');
      const lambdaTimeout = timeoutOf(specs[placeholder].binary);
      assert.equal(lambdaTimeout, specs[placeholder].timeoutSeconds, `${placeholder} deployed as functions.json says`);
      assert.ok(lambdaTimeout + 10 <= task.timeout, `${task.name}: Lambda ${lambdaTimeout} s vs Task ${task.timeout} s`);
    }
  });

  it('creates the secret holding the placeholder the agent answers with CredentialsNotSet', () => {
    const secrets = Object.values(template.findResources('AWS::SecretsManager::Secret'));
    assert.equal(secrets.length, 1);
    assert.deepEqual(JSON.parse(secrets[0].Properties.SecretString), { username: '', password: '' });
  });

  it('passes every setting to the functions', () => {
    const [fn] = Object.values(template.findResources('AWS::Lambda::Function'));
    const variables = fn.Properties.Environment.Variables;
    assert.equal(variables.APICP_URL, 'https://apicp.example.com');
    assert.equal(variables.STAGES, '*');
    assert.ok(variables.STATE_TABLE.Ref, 'the table name');
    assert.ok(variables.APICP_SECRET_ARN.Ref, 'the secret ARN, not its value');
  });
});

describe('options', () => {
  it('imports an existing secret and grants only it', () => {
    const arn = 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:apicp-AbCdEf';
    const { template } = synth({ controlPlaneSecretArn: arn });
    template.resourceCountIs('AWS::SecretsManager::Secret', 0);
    const secretStatements = statementsOf(template, 'PublishRole').filter((s) =>
      [s.Action].flat().some((a) => a.startsWith('secretsmanager:')),
    );
    assert.deepEqual(secretStatements.map((s) => s.Resource), [arn]);
  });

  it('offers an Express workflow, another rate and an alarm topic', () => {
    const topic = 'arn:aws:sns:eu-west-1:111122223333:ops';
    // A heartbeat at least as long as the schedule's interval (the checker refuses a shorter one).
    const { template } = synth({ express: 'true', scheduleRateMinutes: '5', heartbeatIntervalSeconds: '300', alarmTopicArn: topic });
    template.hasResourceProperties('AWS::StepFunctions::StateMachine', { StateMachineType: 'EXPRESS' });
    template.hasResourceProperties('AWS::Scheduler::Schedule', { ScheduleExpression: 'rate(5 minutes)' });
    template.allResourcesProperties('AWS::CloudWatch::Alarm', { AlarmActions: [topic], OKActions: [topic] });
  });

  it('rejects bad context with the checker\'s message, naming the variable and the context key', () => {
    const refused = (context: Record<string, unknown>): string => {
      try {
        settingsFromContext((k) => ({ controlPlaneUrl: 'https://x', ...context })[k]);
      } catch (error) {
        return (error as Error).message;
      }
      assert.fail(`${JSON.stringify(context)} was accepted`);
    };
    assert.throws(() => settingsFromContext(() => undefined), {
      message: 'context controlPlaneUrl (not set): invalid configuration APICP_URL: is required',
    });
    assert.equal(
      refused({ chunkSize: 'ten' }),
      'context chunkSize: invalid configuration CHUNK_SIZE: "ten" is not a whole number of 0 or more',
    );
    assert.equal(
      refused({ apiTypes: 'REST,GRPC' }),
      'context apiTypes: invalid configuration API_TYPES: "GRPC" is not one of REST, HTTP, WEBSOCKET',
    );
    assert.equal(
      refused({ controlPlaneUrl: 'http://apicp.example.com' }),
      'context controlPlaneUrl: invalid configuration APICP_URL: must start with https://: ' +
        'http:// is only for a control plane on this host (127.0.0.1, ::1 or localhost), as the credentials would ' +
        'otherwise cross the network in clear text',
    );
    assert.equal(
      refused({ logRetentionDays: 2 }),
      'context logRetentionDays: invalid configuration LOG_RETENTION_DAYS: 2 is not a CloudWatch Logs retention: ' +
        'use one of 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, ' +
        '3288, 3653 (days), or 9999 to keep them forever',
    );
    // A cross-check names the setting it refuses, given or not.
    assert.match(
      refused({ scheduleRateMinutes: '5' }),
      /^context heartbeatIntervalSeconds \(not set\): invalid configuration HEARTBEAT_INTERVAL_SECONDS: 60 is shorter than the schedule's interval of 300 seconds/,
    );
    assert.match(
      refused({ claimTtlSeconds: 600 }),
      /^context claimTtlSeconds: invalid configuration CLAIM_TTL_SECONDS: 600 is shorter than the Standard workflow's execution timeout of 3600 seconds/,
    );
    for (const [key, value] of [
      ['functionMemoryMb', '64'],
      ['scheduleRateMinutes', '0'],
      ['syncLagThresholdMinutes', '5'],
      ['controlPlaneTimeoutSeconds', '120'],
      ['runtimeIdTemplate', '{account}'],
      ['changeBufferSeconds', '0'],
      ['changeMaxWindowSeconds', '30'],
      ['express', 'maybe'],
      ['orphanGraceSeconds', '-1'],
      ['stages', ['prod', 'bad stage']],
    ] as const) {
      const variable = CONTEXT_VARIABLES[key];
      const message = refused({ [key]: value });
      assert.ok(message.startsWith(`context ${key}: invalid configuration ${variable}: `), message);
    }
    const withCredentials = refused({ controlPlaneUrl: 'https://agent:hunter2@apicp.example.com' });
    assert.match(withCredentials, /^context controlPlaneUrl: invalid configuration APICP_URL: must not carry credentials/);
    assert.doesNotMatch(withCredentials, /hunter2/);
    assert.throws(() => settingsFromContext((k) => ({ controlPlaneUrl: 'https://x', chunkSize: { n: 1 } })[k]), /context chunkSize must be a string/);
  });

  it('fails the app\'s synth with the checker\'s message', () => {
    const app = (context: Record<string, string>) =>
      spawnSync(process.execPath, [join(repo, 'cdk', 'bin', 'agent.ts')], {
        cwd: join(repo, 'cdk'),
        encoding: 'utf8',
        env: { ...process.env, CDK_CONTEXT_JSON: JSON.stringify(context), CDK_OUTDIR: mkdtempSync(join(tmpdir(), 'agent-out-')) },
      });
    const bad = app({ controlPlaneUrl: 'https://apicp.example.com', chunkSize: '0' });
    assert.equal(bad.status, 1, bad.stderr);
    assert.equal(bad.stderr.trim(), 'context chunkSize: invalid configuration CHUNK_SIZE: must be between 1 and 500');
    const missing = app({});
    assert.equal(missing.status, 1);
    assert.match(missing.stderr, /context controlPlaneUrl \(not set\): invalid configuration APICP_URL: is required/);
  });

  it('synthesizes the defaults, which are the checker\'s', () => {
    const plain = (settings: object) =>
      Object.fromEntries(Object.entries(settings).map(([k, v]) => [k, v instanceof Duration ? v.toSeconds() : v]));
    const settings = settingsFromContext((k) => ({ controlPlaneUrl: 'https://apicp.example.com/' })[k]);
    assert.deepEqual(plain(settings), {
      ...plain(DEFAULTS),
      controlPlaneUrl: 'https://apicp.example.com',
      controlPlaneSecretArn: undefined,
      controlPlaneCaBundle: undefined,
      runtimeLocation: undefined,
      runtimeCapacity: undefined,
      alarmTopicArn: undefined,
      controlPlaneSecretKmsKeyArn: undefined,
      targetRoleExternalId: undefined,
    });
    const template = Template.fromStack(new AgentStack(new App(), 'Defaults', { settings, lambdaAssetsDir: assetsDir, definitionFile }));
    template.resourceCountIs('AWS::Lambda::Function', 6);
    const [fn] = Object.values(template.findResources('AWS::Lambda::Function'));
    assert.equal(fn.Properties.Environment.Variables.SCHEDULE_RATE_MINUTES, '1');
    assert.equal(fn.Properties.Environment.Variables.ORPHAN_GRACE_SECONDS, '86400');
    assert.equal(fn.Properties.Environment.Variables.EXPRESS, 'false');
  });

  it('maps settings onto the variables the Rust configuration reads', () => {
    const settings: AgentSettings = settingsFromContext((k) =>
      ({ controlPlaneUrl: 'https://x', stages: 'prod,dev', runtimeTags: 'aws,eu', runtimeCapacity: '10 per second' })[k],
    );
    const variables = functionEnvironment(settings);
    assert.equal(variables.STAGES, 'prod,dev');
    assert.equal(variables.RUNTIME_TAGS, 'aws,eu');
    assert.equal(variables.RUNTIME_CAPACITY, '10 per second');
    assert.equal(variables.METRICS_INTERVAL_SECONDS, '300');
    assert.equal(variables.API_TYPES, 'REST,HTTP,WEBSOCKET');
    // Every variable the checker reads is the stack's (set on the functions, or only checked at synth).
    const source = join(repo, 'tasks', 'settings', 'src', 'lib.rs');
    const read = new Set([...readFileSync(source, 'utf8').matchAll(/\benv\.\w+\(\s*"([A-Z_]+)"/g)].map(([, name]) => name));
    const known = new Set([...Object.keys(variables), ...Object.values(CONTEXT_VARIABLES), 'STATE_TABLE', 'APICP_USERNAME', 'APICP_PASSWORD']);
    assert.ok(read.size >= 35, `${source} reads ${read.size} variables`);
    for (const name of read) {
      assert.ok(known.has(name), `${name} is read by the checker but not set by the stack`);
    }
    for (const name of [...Object.keys(variables), ...Object.values(CONTEXT_VARIABLES)]) {
      assert.ok(read.has(name), `${name} is set by the stack but not read by the checker`);
    }
  });
});

describe('many accounts and regions', () => {
  const listed = { targetAccounts: '111111111111,222222222222', targetRegions: 'eu-west-1,us-east-1', targetConcurrency: '7' };

  it('keeps one account-region without a fan-out: the tick hands over to the workflow', () => {
    const { template } = synth();
    template.resourceCountIs('AWS::StepFunctions::StateMachine', 1);
    template.resourceCountIs('AWS::Lambda::Function', 6);
    assert.equal(functionOf(template, 'targets'), undefined, 'no targets function');
    for (const placeholder of ['EnsureRuntime', 'ListChanges', 'Transform', 'Tick']) {
      assert.ok(!actionsOf(template, `${placeholder}Role`).includes('sts:AssumeRole'), `${placeholder}: no role to assume`);
    }
  });

  it('fans out over the targets the tick hands over, one run of the workflow per target', () => {
    const { template } = synth(listed);
    template.resourceCountIs('AWS::StepFunctions::StateMachine', 2);
    template.resourceCountIs('AWS::Lambda::Function', 7);
    const machines = template.findResources('AWS::StepFunctions::StateMachine');
    const fanOut = Object.entries(machines).find(([id]) => id.startsWith('FanOut'))!;
    const workflow = Object.entries(machines).find(([id]) => id.startsWith('Workflow'))!;
    const schedule = Object.values(template.findResources('AWS::Scheduler::Schedule'))[0];
    assert.deepEqual(schedule.Properties.Target.Arn, { Ref: aliasOf(template, 'Tick') }, 'the schedule invokes the tick');
    assert.deepEqual(statementsOf(template, 'ScheduleRole').map((s) => s.Action), ['lambda:InvokeFunction']);
    // The tick starts the fan-out, and only it.
    const tick = functionOf(template, 'tick').Properties.Environment.Variables;
    assert.deepEqual(tick.FAN_OUT_STATE_MACHINE_ARN, { Ref: fanOut[0] });
    assert.deepEqual(tick.SYNC_STATE_MACHINE_ARN, { Ref: workflow[0] });
    assert.deepEqual(
      statementsOf(template, 'TickRole').filter((s) => [s.Action].flat().includes('states:StartExecution')),
      [{ Action: 'states:StartExecution', Effect: 'Allow', Resource: { Ref: fanOut[0] } }],
    );
    const substitutions = fanOut[1].Properties.DefinitionSubstitutions;
    assert.deepEqual(substitutions.SyncStateMachineArn, { Ref: workflow[0] });
    assert.ok(substitutions.TargetsFunctionArn, 'the targets function');
    const [fn] = Object.values(template.findResources('AWS::Lambda::Function'));
    const variables = fn.Properties.Environment.Variables;
    assert.equal(variables.TARGET_ACCOUNTS, '111111111111,222222222222');
    assert.equal(variables.TARGET_REGIONS, 'eu-west-1,us-east-1');
    assert.equal(variables.TARGET_CONCURRENCY, '7');
    assert.equal(variables.TARGET_ROLE_NAME, 'ApicpAgentReader');
    // The fan-out may start and follow runs of the workflow only.
    const fanOutActions = actionsOf(template, 'FanOutRole');
    for (const action of ['states:StartExecution', 'states:DescribeExecution', 'states:StopExecution', 'events:PutRule']) {
      assert.ok(fanOutActions.includes(action), `${action}: ${fanOutActions}`);
    }
    template.hasResourceProperties('AWS::CloudWatch::Alarm', { MetricName: 'TargetsFailed', Threshold: 1 });
    // Lambda's own timeout reaches each Task's Catch: the fan-out's Tasks outlast the targets function.
    const specs = JSON.parse(readFileSync(join(repo, 'statemachine', 'functions.json'), 'utf8'));
    const fanOutDefinition = JSON.parse(readFileSync(fanOutDefinitionFile, 'utf8'));
    const tasks = [fanOutDefinition.States, fanOutDefinition.States.SyncTargets.ItemProcessor.States]
      .flatMap((states) => Object.entries(states) as [string, any][])
      .filter(([, state]) => state.Resource === '${TargetsFunctionArn}');
    assert.equal(tasks.length, 3);
    for (const [name, state] of tasks) {
      assert.ok(specs.TargetsFunctionArn.timeoutSeconds + 10 <= state.TimeoutSeconds, name);
    }
    template.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
    const dashboard = JSON.stringify(Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0]);
    for (const metric of ['SyncLagSeconds', 'ApisFederated', 'TargetFailed', 'MetricsWindowsSent', 'MetricsWindowsInDoubt', 'RefusedApis']) {
      assert.ok(dashboard.includes(metric), `the dashboard shows ${metric} by target`);
    }
  });

  it('lets the functions that read a target assume only its member role, and read API Gateway in its regions', () => {
    const { template } = synth(listed);
    for (const role of ['EnsureRuntimeRole', 'ListChangesRole', 'TransformRole', 'TickRole']) {
      const assume = statementsOf(template, role).find((s) => [s.Action].flat().includes('sts:AssumeRole'));
      assert.ok(assume, `${role} assumes the member role`);
      assert.match(JSON.stringify(assume.Resource), /iam::111111111111:role\/ApicpAgentReader/);
      assert.match(JSON.stringify(assume.Resource), /iam::222222222222:role\/ApicpAgentReader/);
    }
    for (const role of ['PublishRole', 'AckWatermarkRole', 'TargetsRole']) {
      assert.ok(!actionsOf(template, role).includes('sts:AssumeRole'), `${role} reaches no target account`);
    }
    const apiGateway = statementsOf(template, 'ListChangesRole').find((s) => [s.Action].flat().includes('apigateway:GET'))!;
    const resources = JSON.stringify(apiGateway.Resource);
    assert.match(resources, /apigateway:eu-west-1::\/restapis/);
    assert.match(resources, /apigateway:us-east-1::\/restapis/);
    // A target's own items are reachable under its prefix, still by kind.
    const ack = JSON.stringify(statementsOf(template, 'AckWatermarkRole'));
    assert.ok(ack.includes('????????????/*/#run#*'), ack);
    assert.ok(ack.includes('"*#*"'), 'a stage item, at home or of a target, holds no #');
  });

  it('reads the organization and rolls the member role out to its units with a service-managed StackSet', () => {
    const { template } = synth({ targetAccounts: 'organization', targetOrganizationalUnits: 'ou-ab12-cdef3456' });
    const assume = statementsOf(template, 'ListChangesRole').find((s) => [s.Action].flat().includes('sts:AssumeRole')) as
      Statement & { Condition: unknown };
    assert.match(JSON.stringify(assume.Resource), /iam::\*:role\/ApicpAgentReader/);
    assert.deepEqual(assume.Condition, { StringEquals: { 'aws:ResourceOrgID': '${aws:PrincipalOrgID}' } });
    for (const role of ['TargetsRole', 'TickRole']) {
      assert.deepEqual(actionsOf(template, role).filter((a) => a.startsWith('organizations:')), [
        'organizations:ListAccountsForParent',
        'organizations:ListOrganizationalUnitsForParent',
      ], role);
    }
    const tickAssume = statementsOf(template, 'TickRole').find((s) => [s.Action].flat().includes('sts:AssumeRole'))!;
    assert.deepEqual(tickAssume, assume, 'the tick assumes the member role as the tasks do');
    const [stackSet] = Object.values(template.findResources('AWS::CloudFormation::StackSet'));
    assert.equal(stackSet.Properties.PermissionModel, 'SERVICE_MANAGED');
    assert.deepEqual(stackSet.Properties.AutoDeployment, { Enabled: true, RetainStacksOnAccountRemoval: false });
    assert.deepEqual(stackSet.Properties.StackInstancesGroup[0].DeploymentTargets.OrganizationalUnitIds, ['ou-ab12-cdef3456']);
    assert.equal(stackSet.Properties.StackInstancesGroup[0].Regions.length, 1, 'IAM is global: one region per account');
    assert.ok(JSON.stringify(stackSet.Properties.TemplateBody).includes('ApicpAgentReader'));
  });

  it('limits the member role to the agent\'s roles, the external id and the reads the agent makes', () => {
    const settings = settingsFromContext((k) =>
      ({ controlPlaneUrl: 'https://x', targetAccounts: 'organization', targetRoleExternalId: 'hub-42' })[k]);
    const template = memberRoleTemplate(settings, { account: '999999999999', stackName: 'Agent' }) as any;
    const role = template.Resources.ReaderRole.Properties;
    assert.equal(role.RoleName, 'ApicpAgentReader');
    const trust = role.AssumeRolePolicyDocument.Statement[0];
    const [, withOrganization, withoutOrganization] = trust.Condition['Fn::If'];
    assert.deepEqual(withoutOrganization.StringEquals, { 'sts:ExternalId': 'hub-42' });
    assert.equal(withOrganization.StringEquals['sts:ExternalId'], 'hub-42');
    assert.deepEqual(withOrganization.StringEquals['aws:PrincipalOrgID'], { Ref: 'OrganizationId' });
    assert.match(JSON.stringify(withoutOrganization.ArnLike), /role\/\$\{AgentStackName\}-\*/);
    const actions = role.Policies[0].PolicyDocument.Statement.flatMap((s: any) => [s.Action].flat()).sort();
    const paths = role.Policies[0].PolicyDocument.Statement[0].Resource.map((r: any) => r['Fn::Sub'].replace(/^.*apigateway:\*::/, ''));
    assert.deepEqual(paths.sort(), ['/apis', '/apis/*', '/domainnames', '/domainnames/*/apimappings',
      '/domainnames/*/basepathmappings', '/restapis', '/restapis/*'], 'what the functions read, nothing more');
    assert.deepEqual(actions, ['apigateway:GET', 'cloudtrail:LookupEvents', 'cloudwatch:GetMetricData', 'cloudwatch:ListMetrics']);
  });

  it('passes cdk-nag with the fan-out, the StackSet and the member role stack', () => {
    const { app } = nagged({ targetAccounts: 'organization', targetOrganizationalUnits: 'ou-ab12-cdef3456' });
    const settings = settingsFromContext((k) => ({ controlPlaneUrl: 'https://x', targetAccounts: 'organization' })[k]);
    new MemberRoleStack(app, 'AgentMemberRole', { settings, agent: { stackName: 'Agent' } });
    assert.doesNotThrow(() => app.synth());
    const listedApp = nagged(listed).app;
    assert.doesNotThrow(() => listedApp.synth());
  });
});

describe('push mode', () => {
  const push = { pushMode: 'true' };
  const listed = { targetAccounts: '111111111111,222222222222', targetRegions: 'eu-west-1,us-east-1' };
  const organization = {
    targetAccounts: 'organization',
    targetOrganizationalUnits: 'ou-ab12-cdef3456',
    targetRegions: 'eu-west-1,us-east-1',
    organizationId: 'o-abcdef1234',
  };
  const pattern = {
    source: ['aws.apigateway'],
    'detail-type': ['AWS API Call via CloudTrail'],
    detail: { eventSource: ['apigateway.amazonaws.com'] },
  };
  const idOf = (template: Template, type: string, prefix: string) => {
    const ids = Object.keys(template.findResources(type)).filter((id) => id.startsWith(prefix));
    assert.equal(ids.length, 1, `${type} ${prefix}: ${ids}`);
    return ids[0];
  };
  const trailActions = ['cloudtrail:DescribeTrails', 'cloudtrail:GetEventSelectors', 'cloudtrail:GetTrailStatus'];

  it('is off by default: no queue, rule, bus or starter, and the functions are told so', () => {
    const { template } = synth();
    for (const type of ['AWS::SQS::Queue', 'AWS::Events::Rule', 'AWS::Events::EventBus', 'AWS::Lambda::EventSourceMapping']) {
      template.resourceCountIs(type, 0);
    }
    assert.equal(functionOf(template, 'push starter'), undefined, 'no starter');
    const variables = functionOf(template, 'list-changes').Properties.Environment.Variables;
    assert.equal(variables.PUSH_MODE, 'false');
    assert.equal(variables.PUSH_POLL_MINUTES, undefined, 'the polling interval only with push mode');
    for (const role of ['EnsureRuntimeRole', 'TickRole']) {
      assert.deepEqual(actionsOf(template, role).filter((a) => trailActions.includes(a)), [], role);
    }
    const outputs = template.toJSON().Outputs;
    for (const output of ['PushQueueUrl', 'PushDeadLettersUrl', 'PushBusArn']) assert.equal(outputs[output], undefined, output);
    const plain = settingsFromContext((k) => ({ controlPlaneUrl: 'https://x' })[k]);
    assert.equal(plain.pushMode, false);
    assert.equal(plain.pushPollInterval.toMinutes(), 15);
    assert.equal(plain.pushBatchWindow.toSeconds(), 5);
  });

  it('queues API Gateway\'s CloudTrail events of the default bus in an encrypted queue with dead letters', () => {
    const { template } = synth(push);
    template.resourceCountIs('AWS::SQS::Queue', 2);
    const queue = idOf(template, 'AWS::SQS::Queue', 'PushQueue');
    const deadLetters = idOf(template, 'AWS::SQS::Queue', 'PushDeadLetters');
    template.hasResourceProperties('AWS::SQS::Queue', {
      SqsManagedSseEnabled: true,
      MessageRetentionPeriod: 86400,
      VisibilityTimeout: 6 * PUSH_STARTER_TIMEOUT_SECONDS,
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [deadLetters, 'Arn'] }, maxReceiveCount: 5 },
    });
    template.hasResourceProperties('AWS::SQS::Queue', { SqsManagedSseEnabled: true, MessageRetentionPeriod: 14 * 86400 });
    // enforceSSL: each queue's policy denies requests without TLS.
    for (const id of [queue, deadLetters]) {
      template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: id }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    }
    template.resourceCountIs('AWS::Events::Rule', 1);
    const rule = idOf(template, 'AWS::Events::Rule', 'PushRule');
    template.hasResourceProperties('AWS::Events::Rule', {
      EventBusName: Match.absent(),
      EventPattern: pattern,
      State: 'ENABLED',
      Targets: [
        Match.objectLike({
          Arn: { 'Fn::GetAtt': [queue, 'Arn'] },
          DeadLetterConfig: { Arn: { 'Fn::GetAtt': [deadLetters, 'Arn'] } },
          RetryPolicy: { MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 8 },
        }),
      ],
    });
    assert.deepEqual(PUSH_EVENT_PATTERN, pattern, 'the forwarders match the same events');
    // EventBridge may send to the queue for this rule only.
    template.hasResourceProperties('AWS::SQS::QueuePolicy', {
      Queues: [{ Ref: queue }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Allow',
            Principal: { Service: 'events.amazonaws.com' },
            Action: ['sqs:SendMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl'],
            Condition: { ArnEquals: { 'aws:SourceArn': { 'Fn::GetAtt': [rule, 'Arn'] } } },
          }),
        ]),
      },
    });
    const outputs = template.toJSON().Outputs;
    assert.deepEqual(outputs.PushQueueUrl.Value, { Ref: queue });
    assert.deepEqual(outputs.PushDeadLettersUrl.Value, { Ref: deadLetters });
    assert.equal(outputs.PushBusArn, undefined, 'one account-region: no push bus');
    template.resourceCountIs('AWS::Events::EventBus', 0);
  });

  it('starts runs of the workflow from the queue with the targets binary, in batches of up to 100', () => {
    const { template } = synth(push);
    template.resourceCountIs('AWS::Lambda::Function', 7);
    const starter = functionOf(template, 'push starter');
    assert.equal(starter.Properties.Timeout, PUSH_STARTER_TIMEOUT_SECONDS);
    assert.equal(PUSH_STARTER_TIMEOUT_SECONDS, 30);
    assert.deepEqual(starter.Properties.Code.S3Key, functionOf(template, 'tick').Properties.Code.S3Key, 'the tick\'s asset');
    const workflow = idOf(template, 'AWS::StepFunctions::StateMachine', 'Workflow');
    const { SYNC_STATE_MACHINE_ARN, PUSH_STARTER, ...shared } = starter.Properties.Environment.Variables;
    assert.deepEqual(SYNC_STATE_MACHINE_ARN, { Ref: workflow });
    assert.equal(PUSH_STARTER, 'true');
    assert.deepEqual(shared, functionOf(template, 'ack-watermark').Properties.Environment.Variables);
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      EventSourceArn: { 'Fn::GetAtt': [idOf(template, 'AWS::SQS::Queue', 'PushQueue'), 'Arn'] },
      BatchSize: 100,
      MaximumBatchingWindowInSeconds: 5,
      FunctionResponseTypes: ['ReportBatchItemFailures'],
      ScalingConfig: { MaximumConcurrency: 2 },
    });
    // The alias `live` reads the queue, as the schedule invokes the tick's.
    const [mapping] = Object.values(template.findResources('AWS::Lambda::EventSourceMapping'));
    assert.deepEqual(mapping.Properties.FunctionName, {
      'Fn::Join': ['', [{ 'Fn::Select': [6, { 'Fn::Split': [':', { Ref: aliasOf(template, 'PushStarter') }] }] }, ':live']],
    });
    // Its own role: its logs, X-Ray, the queue, and starting the workflow; no table, no secret.
    const starterRole = Object.keys(template.findResources('AWS::IAM::Role')).find((id) => id.startsWith('PushStarterRole'))!;
    assert.deepEqual(starter.Properties.Role, { 'Fn::GetAtt': [starterRole, 'Arn'] });
    assert.deepEqual([...new Set(actionsOf(template, 'PushStarterRole'))], [
      'logs:CreateLogStream', 'logs:PutLogEvents', 'sqs:ChangeMessageVisibility', 'sqs:DeleteMessage',
      'sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:ReceiveMessage', 'states:StartExecution',
      'xray:PutTelemetryRecords', 'xray:PutTraceSegments',
    ]);
    const states = statementsOf(template, 'PushStarterRole').filter((s) => [s.Action].flat().some((a) => a.startsWith('states:')));
    assert.deepEqual(states, [{ Action: 'states:StartExecution', Effect: 'Allow', Resource: { Ref: workflow } }]);
    // The starter is no task of the workflow's, and the others are as without push.
    const [machine] = Object.values(template.findResources('AWS::StepFunctions::StateMachine'));
    assert.doesNotMatch(JSON.stringify(machine.Properties.DefinitionSubstitutions), /PushStarter/);
  });

  it('gathers no batch when the window is 0, and then reads at most 10 messages a batch', () => {
    const { template } = synth({ ...push, pushBatchWindowSeconds: '0' });
    template.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
      BatchSize: 10,
      MaximumBatchingWindowInSeconds: Match.absent(),
      FunctionResponseTypes: ['ReportBatchItemFailures'],
    });
    const { template: longer } = synth({ ...push, pushBatchWindowSeconds: '60' });
    longer.hasResourceProperties('AWS::Lambda::EventSourceMapping', { BatchSize: 100, MaximumBatchingWindowInSeconds: 60 });
  });

  it('tells every function push mode is on and how often the assets branch still polls', () => {
    // A slower poll needs a sync-lag threshold beyond it (the checker refuses 30 with the default 30 minutes).
    const { template } = synth({ ...push, pushPollMinutes: '30', syncLagThresholdMinutes: '40' });
    for (const fn of Object.values(template.findResources('AWS::Lambda::Function'))) {
      assert.equal(fn.Properties.Environment.Variables.PUSH_MODE, 'true', fn.Properties.Description);
      assert.equal(fn.Properties.Environment.Variables.PUSH_POLL_MINUTES, '30', fn.Properties.Description);
      assert.equal(fn.Properties.Environment.Variables.PUSH_BATCH_WINDOW_SECONDS, undefined, 'a deployment setting');
    }
    const variables = functionEnvironment(settingsFromContext((k) => ({ controlPlaneUrl: 'https://x', pushMode: 'true' })[k]));
    assert.equal(variables.PUSH_POLL_MINUTES, '15');
  });

  it('lets ensure-runtime and the tick find the trail logging management events, and nothing else more', () => {
    const { template } = synth(push);
    for (const role of ['EnsureRuntimeRole', 'TickRole']) {
      const statements = statementsOf(template, role).filter((s) => [s.Action].flat().some((a) => a.startsWith('cloudtrail:')));
      const describe = statements.find((s) => [s.Action].flat().includes('cloudtrail:DescribeTrails'))!;
      assert.equal(describe.Resource, '*', role);
      const status = statements.find((s) => [s.Action].flat().includes('cloudtrail:GetTrailStatus'))!;
      assert.deepEqual([status.Action].flat().sort(), ['cloudtrail:GetEventSelectors', 'cloudtrail:GetTrailStatus'], role);
      assert.deepEqual(status.Resource, { 'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':cloudtrail:*:*:trail/*']] }, role);
    }
    const { template: off } = synth();
    for (const role of ['EnsureRuntimeRole', 'ListChangesRole', 'TransformRole', 'PublishRole', 'AckWatermarkRole', 'TickRole']) {
      const extra = new Set(actionsOf(template, role));
      for (const action of actionsOf(off, role)) extra.delete(action);
      assert.deepEqual([...extra].sort(), ['EnsureRuntimeRole', 'TickRole'].includes(role) ? trailActions : [], role);
    }
    // The trail check's result is kept in the state table: its item, and only where push mode is on.
    const itemKeys = (t: Template, role: string, action: string) =>
      statementsOf(t, role)
        .filter((s) => [s.Action].flat().includes(action))
        .flatMap((s) => Object.values((s as { Condition?: Record<string, Record<string, string[]>> }).Condition ?? {}))
        .flatMap((condition) => condition['dynamodb:LeadingKeys'] ?? []);
    for (const role of ['EnsureRuntimeRole', 'TickRole']) {
      for (const action of ['dynamodb:GetItem', 'dynamodb:PutItem']) {
        assert.ok(itemKeys(template, role, action).includes('#push'), `${role} ${action}`);
        assert.ok(!itemKeys(off, role, action).includes('#push'), `${role} ${action} without push mode`);
      }
    }
    assert.ok(!itemKeys(template, 'ListChangesRole', 'dynamodb:GetItem').includes('#push'));
  });

  it('alarms on dead letters at once and on a starter failing for 15 minutes, and shows push on the dashboard', () => {
    const topic = 'arn:aws:sns:eu-west-1:111122223333:ops';
    const { template } = synth({ ...push, alarmTopicArn: topic });
    const alarms = template.findResources('AWS::CloudWatch::Alarm');
    const deadLetters = Object.entries(alarms).find(([id]) => id.startsWith('PushDeadLettersAlarm'))![1].Properties;
    assert.deepEqual(
      { ...deadLetters, AlarmDescription: undefined },
      {
        AlarmDescription: undefined,
        Namespace: 'AWS/SQS',
        MetricName: 'ApproximateNumberOfMessagesVisible',
        Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [idOf(template, 'AWS::SQS::Queue', 'PushDeadLetters'), 'QueueName'] } }],
        Statistic: 'Maximum',
        Period: 300,
        Threshold: 1,
        EvaluationPeriods: 1,
        ComparisonOperator: 'GreaterThanOrEqualToThreshold',
        TreatMissingData: 'notBreaching',
        AlarmActions: [topic],
        OKActions: [topic],
      },
    );
    const errors = Object.entries(alarms).find(([id]) => id.startsWith('PushStarterErrorsAlarm'))![1].Properties;
    assert.equal(errors.Namespace, 'AWS/Lambda');
    assert.equal(errors.MetricName, 'Errors');
    assert.deepEqual(errors.Dimensions, [{ Name: 'FunctionName', Value: { Ref: idOf(template, 'AWS::Lambda::Function', 'PushStarter') } }]);
    assert.deepEqual([errors.Statistic, errors.Period, errors.Threshold, errors.EvaluationPeriods, errors.DatapointsToAlarm], ['Sum', 300, 1, 3, 3]);
    assert.equal(errors.TreatMissingData, 'notBreaching');
    assert.deepEqual(errors.AlarmActions, [topic]);
    const dashboard = JSON.stringify(Object.values(template.findResources('AWS::CloudWatch::Dashboard'))[0]);
    for (const metric of [
      'ApproximateAgeOfOldestMessage', 'ApproximateNumberOfMessagesVisible', 'Invocations', 'Errors',
      'PushEventsReceived', 'PushEventsIgnored', 'PushExecutionsStarted', 'PushUnavailable',
    ]) {
      assert.ok(dashboard.includes(metric), `the dashboard shows ${metric}`);
    }
    assert.ok(!dashboard.includes('{ApiGatewayApicpAgent,Target} MetricName=\\\\\\"PushUnavailable\\\\\\"'), 'PushUnavailable has no target series');
    const off = JSON.stringify(Object.values(synth().template.findResources('AWS::CloudWatch::Dashboard'))[0]);
    assert.ok(!off.includes('Push'), 'no push row without push mode');
  });

  it('receives the other account-regions\' events on a push bus only the target accounts may put events on', () => {
    const { template } = synth({ ...push, ...listed });
    const bus = idOf(template, 'AWS::Events::EventBus', 'PushBus');
    template.hasResourceProperties('AWS::Events::EventBus', { Name: 'Agent-push' });
    const [policy] = Object.values(template.findResources('AWS::Events::EventBusPolicy'));
    assert.deepEqual(policy.Properties.EventBusName, { Ref: bus });
    assert.equal(policy.Properties.Statement.Action, 'events:PutEvents');
    assert.deepEqual(policy.Properties.Statement.Resource, { 'Fn::GetAtt': [bus, 'Arn'] });
    assert.match(JSON.stringify(policy.Properties.Statement.Principal), /iam::111111111111:root/);
    assert.match(JSON.stringify(policy.Properties.Statement.Principal), /iam::222222222222:root/);
    assert.equal(policy.Properties.Statement.Condition, undefined);
    template.resourceCountIs('AWS::Events::Rule', 2);
    const queue = idOf(template, 'AWS::SQS::Queue', 'PushQueue');
    template.hasResourceProperties('AWS::Events::Rule', {
      EventBusName: { Ref: bus },
      EventPattern: pattern,
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [queue, 'Arn'] }, RetryPolicy: { MaximumEventAgeInSeconds: 3600, MaximumRetryAttempts: 8 } })],
    });
    assert.ok(idOf(template, 'AWS::Events::Rule', 'PushForwardedRule'));
    assert.deepEqual(template.toJSON().Outputs.PushBusArn.Value, { 'Fn::GetAtt': [bus, 'Arn'] });
    // Listed accounts deploy the forwarder by hand (`<stackName>-PushForwarder`): no StackSet.
    template.resourceCountIs('AWS::CloudFormation::StackSet', 0);
    // The starter starts the workflow, not the fan-out.
    const workflow = idOf(template, 'AWS::StepFunctions::StateMachine', 'Workflow');
    assert.deepEqual(
      statementsOf(template, 'PushStarterRole').filter((s) => [s.Action].flat().includes('states:StartExecution')),
      [{ Action: 'states:StartExecution', Effect: 'Allow', Resource: { Ref: workflow } }],
    );
  });

  it('lets the organization put events on the push bus and rolls the forwarder out to its units and the target regions', () => {
    const { template } = synth({ ...push, ...organization });
    const [policy] = Object.values(template.findResources('AWS::Events::EventBusPolicy'));
    assert.deepEqual(policy.Properties.Statement.Principal, { AWS: '*' });
    assert.deepEqual(policy.Properties.Statement.Condition, { StringEquals: { 'aws:PrincipalOrgID': 'o-abcdef1234' } });
    const stackSets = template.findResources('AWS::CloudFormation::StackSet');
    const forwarders = Object.entries(stackSets).find(([id]) => id.startsWith('PushForwarderStackSet'))![1].Properties;
    const memberRoles = Object.entries(stackSets).find(([id]) => id.startsWith('MemberRoleStackSet'))![1].Properties;
    for (const key of ['PermissionModel', 'CallAs', 'AutoDeployment', 'ManagedExecution', 'OperationPreferences']) {
      assert.deepEqual(forwarders[key], memberRoles[key], `${key} as the member role's`);
    }
    assert.deepEqual(forwarders.StackInstancesGroup, [
      { DeploymentTargets: { OrganizationalUnitIds: ['ou-ab12-cdef3456'] }, Regions: ['eu-west-1', 'us-east-1'] },
    ]);
    assert.deepEqual(forwarders.Capabilities, ['CAPABILITY_IAM']);
    const parameters = Object.fromEntries(
      forwarders.Parameters.map((p: { ParameterKey: string; ParameterValue: unknown }) => [p.ParameterKey, p.ParameterValue]),
    );
    assert.deepEqual(parameters, {
      PushBusArn: { 'Fn::GetAtt': [idOf(template, 'AWS::Events::EventBus', 'PushBus'), 'Arn'] },
      AgentAccountId: { Ref: 'AWS::AccountId' },
      AgentRegion: { Ref: 'AWS::Region' },
    });
    assert.deepEqual(JSON.parse(forwarders.TemplateBody), pushForwarderTemplate());
    // The member role reads the trails too.
    const roleTemplate = JSON.parse(memberRoles.TemplateBody);
    const actions = roleTemplate.Resources.ReaderRole.Properties.Policies[0].PolicyDocument.Statement.flatMap(
      (s: { Action: string | string[] }) => [s.Action].flat(),
    );
    for (const action of trailActions) assert.ok(actions.includes(action), action);
    assert.throws(
      () => synth({ ...push, ...organization, organizationId: '' }),
      /pass -c organizationId=o-\.\.\./,
    );
  });

  it('gives the member role the trail reads with push mode only', () => {
    const statementsFor = (context: Record<string, string>) => {
      const settings = settingsFromContext((k) => ({ controlPlaneUrl: 'https://x', targetAccounts: 'organization', ...context })[k]);
      const template = memberRoleTemplate(settings, { stackName: 'Agent' }) as any;
      return template.Resources.ReaderRole.Properties.Policies[0].PolicyDocument.Statement as any[];
    };
    const pushed = statementsFor(push);
    assert.deepEqual(pushed.find((s) => s.Sid === 'TrailDetection'), {
      Sid: 'TrailDetection', Effect: 'Allow', Action: ['cloudtrail:DescribeTrails'], Resource: '*',
    });
    assert.deepEqual(pushed.find((s) => s.Sid === 'TrailStatus'), {
      Sid: 'TrailStatus',
      Effect: 'Allow',
      Action: ['cloudtrail:GetTrailStatus', 'cloudtrail:GetEventSelectors'],
      Resource: { 'Fn::Sub': 'arn:${AWS::Partition}:cloudtrail:*:*:trail/*' },
    });
    const plain = statementsFor({}).flatMap((s) => [s.Action].flat());
    assert.deepEqual(plain.filter((a: string) => trailActions.includes(a)), []);
  });

  it('forwards a member account-region\'s events to the push bus through a role that may only put them there', () => {
    const template = pushForwarderTemplate({ account: '999999999999' }) as any;
    assert.equal(template.Parameters.AgentAccountId.Default, '999999999999');
    assert.equal(template.Parameters.PushBusArn.Default, undefined, 'the bus is always given');
    assert.match('arn:aws:events:eu-west-1:999999999999:event-bus/Agent-push', new RegExp(template.Parameters.PushBusArn.AllowedPattern));
    const rule = template.Resources.ForwardRule;
    assert.equal(rule.Condition, 'Forwards');
    assert.equal(rule.Properties.EventBusName, 'default');
    assert.deepEqual(rule.Properties.EventPattern, pattern);
    assert.deepEqual(rule.Properties.Targets, [
      { Id: 'PushBus', Arn: { Ref: 'PushBusArn' }, RoleArn: { 'Fn::GetAtt': ['ForwarderRole', 'Arn'] } },
    ]);
    const role = template.Resources.ForwarderRole;
    assert.equal(role.Condition, 'Forwards');
    assert.equal(role.Properties.RoleName, undefined, 'one role per region');
    assert.deepEqual(role.Properties.AssumeRolePolicyDocument.Statement[0].Principal, { Service: 'events.amazonaws.com' });
    assert.deepEqual(role.Properties.Policies.flatMap((p: any) => p.PolicyDocument.Statement), [
      { Effect: 'Allow', Action: 'events:PutEvents', Resource: { Ref: 'PushBusArn' } },
    ]);
    // Nothing in the bus's own account-region, whose events the agent's rule reads.
    assert.match(JSON.stringify(template.Conditions.Forwards), /AgentAccountId.*AgentRegion/);
    // The stack of bin/agent.ts is the same template.
    const stack = new PushForwarderStack(new App(), 'AgentPushForwarder', { location: { account: '999999999999' } });
    const synthesized = Template.fromStack(stack).toJSON();
    assert.deepEqual(synthesized.Resources, template.Resources);
    assert.deepEqual(synthesized.Conditions, template.Conditions);
    for (const [name, parameter] of Object.entries(template.Parameters)) {
      assert.deepEqual(synthesized.Parameters[name], parameter, name);
    }
  });

  it('synthesizes the forwarder stack with the app when push mode spans several account-regions', () => {
    const app = (context: Record<string, string>) => {
      const out = mkdtempSync(join(tmpdir(), 'agent-out-'));
      const run = spawnSync(process.execPath, [join(repo, 'cdk', 'bin', 'agent.ts')], {
        cwd: join(repo, 'cdk'),
        encoding: 'utf8',
        env: { ...process.env, CDK_CONTEXT_JSON: JSON.stringify({ controlPlaneUrl: 'https://apicp.example.com', ...context }), CDK_OUTDIR: out },
      });
      assert.equal(run.status, 0, run.stderr);
      return (stack: string) => {
        try {
          return JSON.parse(readFileSync(join(out, `${stack}.template.json`), 'utf8'));
        } catch {
          return undefined;
        }
      };
    };
    const spanning = app({ ...push, ...listed });
    assert.ok(spanning('ApiGatewayApicpAgent-PushForwarder')?.Resources.ForwardRule, 'the forwarder stack');
    assert.ok(spanning('ApiGatewayApicpAgent').Outputs.PushBusArn);
    assert.equal(app(push)('ApiGatewayApicpAgent-PushForwarder'), undefined, 'one account-region: no forwarder');
    assert.equal(app(listed)('ApiGatewayApicpAgent-PushForwarder'), undefined, 'no push mode: no forwarder');
  });

  it('refuses a push setting that is no flag or whole number, naming its context key', () => {
    for (const [key, value, reason] of [
      ['pushMode', 'maybe', /"maybe" is not true or false/],
      ['pushPollMinutes', 'ten', /"ten" is not a whole number/],
      ['pushBatchWindowSeconds', '-1', /./],
    ] as const) {
      assert.throws(
        () => settingsFromContext((k) => ({ controlPlaneUrl: 'https://x', pushMode: 'true', [key]: value })[k]),
        (error: Error) => {
          assert.ok(error.message.startsWith(`context ${key}: invalid configuration ${CONTEXT_VARIABLES[key]}: `), error.message);
          assert.match(error.message, reason);
          return true;
        },
      );
    }
  });

  it('passes cdk-nag with push mode, alone and with the bus, the StackSets and the forwarder stack', () => {
    assert.doesNotThrow(() => nagged(push).app.synth());
    assert.doesNotThrow(() => nagged({ ...push, pushBatchWindowSeconds: '0' }).app.synth());
    assert.doesNotThrow(() => nagged({ ...push, ...listed }).app.synth());
    const { app } = nagged({ ...push, ...organization });
    new PushForwarderStack(app, 'AgentPushForwarder', {});
    assert.doesNotThrow(() => app.synth());
  });
});

describe('cdk-nag', () => {
  it('reports no unacknowledged AwsSolutions finding', () => {
    const { app } = nagged();
    assert.doesNotThrow(() => app.synth());
  });

  it('fails synthesis on a finding (the check is live)', () => {
    const { app, stack } = nagged();
    new Topic(stack, 'UnencryptedTopic');
    assert.throws(
      () => app.synth(),
      (error: Error) => {
        const report = error.message.match(/found in: (\S+)/)?.[1];
        assert.ok(report, error.message);
        const findings = readFileSync(report, 'utf8');
        assert.match(findings, /AwsSolutions-SNS3/);
        assert.doesNotMatch(findings, /AwsSolutions-IAM5/, 'only the new topic is a finding');
        return true;
      },
    );
  });
});
