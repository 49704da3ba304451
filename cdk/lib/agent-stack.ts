// The agent in one stack: the five tasks' Rust functions (arm64, provided.al2023) behind aliases,
// the state machine from statemachine/agent.asl.json, the tick its schedule invokes, the state
// table, the control plane secret, and alarms; with push mode (-c pushMode=true), the queue of API Gateway's
// CloudTrail events and the starter reading it. Every role holds only the actions its function calls.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { Aws, CfnOutput, Duration, RemovalPolicy, SecretValue, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import * as cloudformation from 'aws-cdk-lib/aws-cloudformation';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as cloudwatchActions from 'aws-cdk-lib/aws-cloudwatch-actions';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsTargets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as lambdaEventSources from 'aws-cdk-lib/aws-lambda-event-sources';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as scheduler from 'aws-cdk-lib/aws-scheduler';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import type { Construct } from 'constructs';

import { memberRoleTemplate, TRAIL_DETECTION_ACTIONS } from './member-role.ts';
import { PUSH_EVENT_PATTERN, pushForwarderTemplate } from './push-forwarder.ts';
import { type AgentSettings, type ApiType, functionEnvironment } from './settings.ts';

export interface AgentStackProps extends StackProps {
  readonly settings: AgentSettings;
  /** `cargo lambda build --release --arm64` output: one folder per function holding `bootstrap`. */
  readonly lambdaAssetsDir: string;
  /** The Amazon States Language file, deployed as it is with its `${...}` placeholders filled. */
  readonly definitionFile: string;
  /** The fan-out over account-regions (statemachine/targets.asl.json), deployed when the settings name more than the deployment's own account-region. */
  readonly fanOutDefinitionFile?: string;
}

type Placeholder =
  | 'EnsureRuntimeFunctionArn'
  | 'ListChangesFunctionArn'
  | 'TransformFunctionArn'
  | 'PublishFunctionArn'
  | 'AckWatermarkFunctionArn'
  | 'TargetsFunctionArn';

/** Whether the settings federate more than the deployment's own account-region: then the schedule starts the fan-out. */
export function fansOut(settings: AgentSettings): boolean {
  return settings.targetAccounts !== 'self' || settings.targetRegions.length > 0;
}

/**
 * The functions, by the placeholder that names them in the ASL file, from
 * statemachine/functions.json: the local stack enforces the same timeouts.
 */
export function functionSpecs(
  definitionFile: string,
  fanOut = false,
): Partial<Record<Placeholder, { binary: string; timeout: Duration }>> {
  const file = join(dirname(definitionFile), 'functions.json');
  const specs = JSON.parse(readFileSync(file, 'utf8')) as Record<string, { binary: string; timeoutSeconds: number }>;
  const placeholders: Placeholder[] = [
    'EnsureRuntimeFunctionArn',
    'ListChangesFunctionArn',
    'TransformFunctionArn',
    'PublishFunctionArn',
    'AckWatermarkFunctionArn',
    ...(fanOut ? (['TargetsFunctionArn'] as const) : []),
  ];
  return Object.fromEntries(
    placeholders.map((p) => {
      if (!specs[p]) throw new Error(`${file} does not define ${p}`);
      return [p, { binary: specs[p].binary, timeout: Duration.seconds(specs[p].timeoutSeconds) }];
    }),
  ) as Partial<Record<Placeholder, { binary: string; timeout: Duration }>>;
}

/** Namespace of the metrics the agent publishes itself (embedded metric format). */
export const METRICS_NAMESPACE = 'ApiGatewayApicpAgent';

/**
 * The tick's timeout: its passes stop 10 s before it to start the execution. The claims a tick
 * takes last 300 s (TICK_CLAIM_SECONDS in tasks/core/src/handlers/tick.rs), longer than this, so
 * a tick cut off holding them only delays the workflow's run of those stages.
 */
export const TICK_TIMEOUT_SECONDS = 120;

/** The push starter's timeout: it only reads a batch of events and starts an execution per target. */
export const PUSH_STARTER_TIMEOUT_SECONDS = 30;

/** A function of the stack, as `deploy` in the constructor makes it. */
interface Deployed {
  readonly fn: lambda.Function;
  readonly role: iam.Role;
  readonly alias: lambda.Alias;
}

/** What push mode adds, for the alarms and the dashboard. */
interface Push {
  readonly starter: lambda.Function;
  readonly queue: sqs.Queue;
  readonly deadLetters: sqs.Queue;
}

export class AgentStack extends Stack {
  readonly stateMachine: sfn.StateMachine;
  /** The fan-out over account-regions, when the settings name more than the deployment's own. */
  readonly fanOut?: sfn.StateMachine;
  readonly table: dynamodb.Table;

  constructor(scope: Construct, id: string, props: AgentStackProps) {
    super(scope, id, props);
    const { settings } = props;

    this.table = new dynamodb.Table(this, 'StateTable', {
      partitionKey: { name: 'stage', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      deletionProtection: true,
      removalPolicy: RemovalPolicy.RETAIN,
      // Chunk snapshots (list-changes -> transform) expire by themselves; stage items never do.
      timeToLiveAttribute: 'expiresAt',
    });

    const secret = settings.controlPlaneSecretArn
      ? secretsmanager.Secret.fromSecretCompleteArn(this, 'ControlPlaneSecret', settings.controlPlaneSecretArn)
      : new secretsmanager.Secret(this, 'ControlPlaneSecret', {
          description: 'webMethods API Control Plane credentials of the API Gateway agent: {"username","password"}',
          encryptionKey: settings.controlPlaneSecretKmsKeyArn
            ? kms.Key.fromKeyArn(this, 'ControlPlaneSecretKey', settings.controlPlaneSecretKmsKeyArn)
            : undefined,
          // A placeholder with empty fields, not generated credentials: the agent recognises it
          // and ends its executions as CredentialsNotSet (without failing) until the user puts
          // the control plane's credentials into the secret.
          secretObjectValue: { username: SecretValue.unsafePlainText(''), password: SecretValue.unsafePlainText('') },
        });
    if (!settings.controlPlaneSecretArn) {
      Validations.of(secret).acknowledge({
        id: 'AwsSolutions-SMG4',
        reason: 'The control plane issues these credentials; they are rotated there and then written into this secret.',
      });
    }

    const environment: Record<string, string> = {
      ...functionEnvironment(settings),
      STATE_TABLE: this.table.tableName,
      APICP_SECRET_ARN: secret.secretArn,
    };
    const fanOut = fansOut(settings);
    const aliases = {} as Record<Placeholder, lambda.Alias>;
    const roles = {} as Record<Placeholder, iam.Role>;
    const functions = functionSpecs(props.definitionFile, fanOut);
    // A function named `name` (its role, log group and alias `live` after it) running `binary`.
    const deploy = (name: string, binary: string, task: string, timeout: Duration, variables = environment): Deployed => {
      const logGroup = new logs.LogGroup(this, `${name}Logs`, {
        retention: settings.logRetention,
        removalPolicy: RemovalPolicy.DESTROY,
      });
      // One role per function, without managed policies: its own log group and X-Ray only.
      const role = new iam.Role(this, `${name}Role`, {
        assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
        description: `${task} task of the API Gateway agent`,
      });
      role.addToPolicy(
        new iam.PolicyStatement({
          actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
          resources: [logGroup.logGroupArn],
        }),
      );
      const fn = new lambda.Function(this, name, {
        description: `API Gateway agent: ${task}`,
        runtime: lambda.Runtime.PROVIDED_AL2023,
        architecture: lambda.Architecture.ARM_64,
        handler: 'bootstrap',
        code: lambda.Code.fromAsset(join(props.lambdaAssetsDir, binary)),
        memorySize: settings.functionMemoryMb,
        timeout,
        role,
        logGroup,
        loggingFormat: lambda.LoggingFormat.JSON,
        tracing: lambda.Tracing.ACTIVE,
        environment: variables,
      });
      return { fn, role, alias: new lambda.Alias(this, `${name}Live`, { aliasName: 'live', version: fn.currentVersion }) };
    };
    for (const [placeholder, spec] of Object.entries(functions) as [Placeholder, { binary: string; timeout: Duration }][]) {
      const { role, alias } = deploy(pascal(spec.binary), spec.binary, spec.binary, spec.timeout);
      aliases[placeholder] = alias;
      roles[placeholder] = role;
    }

    // What each task calls, and nothing else.
    const readApiGateway = new iam.PolicyStatement({
      actions: ['apigateway:GET'],
      resources: apiGatewayResources(settings.apiTypes, targetRegions(settings)),
    });
    for (const placeholder of ['EnsureRuntimeFunctionArn', 'ListChangesFunctionArn'] as const) {
      roles[placeholder].addToPolicy(readApiGateway);
    }
    const readSecret = (role: iam.Role) => {
      // GetSecretValue only: `grantRead` would add DescribeSecret, which no task calls.
      role.addToPolicy(new iam.PolicyStatement({ actions: ['secretsmanager:GetSecretValue'], resources: [secret.secretArn] }));
      if (settings.controlPlaneSecretKmsKeyArn) {
        // A secret encrypted with a customer managed key: reading it decrypts with that key.
        role.addToPolicy(
          new iam.PolicyStatement({
            actions: ['kms:Decrypt'],
            resources: [settings.controlPlaneSecretKmsKeyArn],
            conditions: { StringEquals: { 'kms:ViaService': `secretsmanager.${Aws.REGION}.amazonaws.com` } },
          }),
        );
      }
    };
    for (const placeholder of ['EnsureRuntimeFunctionArn', 'ListChangesFunctionArn', 'PublishFunctionArn'] as const) {
      readSecret(roles[placeholder]);
    }
    // Each task reads and writes only the state items it needs, by their key (see
    // tasks/core/src/aws/state): a stage's item is named by the stage, every other item's key starts
    // with `#` and its kind.
    const table = (grantee: Placeholder | iam.Role, actions: string[], items: StateItem[]) =>
      grantStateItems(typeof grantee === 'string' ? roles[grantee] : grantee, this.table, actions, items, fanOut);
    // With push mode, the target's push status (its trail check), read every run and written hourly.
    const pushStatus: StateItem[] = settings.pushMode ? ['#push'] : [];
    table('EnsureRuntimeFunctionArn', ['dynamodb:GetItem'], [
      'stage', '#discovery', '#catalog#*', '#registry', '#lock#listing', ...pushStatus,
    ]);
    table('EnsureRuntimeFunctionArn', ['dynamodb:UpdateItem'], ['stage', '#registry', '#lock#listing', '#pace#apigateway']);
    table('EnsureRuntimeFunctionArn', ['dynamodb:PutItem'], ['#discovery', '#listing#*', ...pushStatus]);
    roles.EnsureRuntimeFunctionArn.addToPolicy(registryScan(this.table));
    table('ListChangesFunctionArn', ['dynamodb:GetItem'], ['stage', '#discovery', '#listing#*', '#catalog#*', '#applied#*', '#lock#listing']);
    table('ListChangesFunctionArn', ['dynamodb:UpdateItem'], ['stage', '#lock#listing', '#pace#apigateway']);
    table('ListChangesFunctionArn', ['dynamodb:PutItem'], ['#discovery', '#snapshot#*', '#catalog#*', '#applied#*', '#run#*']);
    table('TransformFunctionArn', ['dynamodb:GetItem'], ['#snapshot#*', '#catalog#*', '#progress#*']);
    table('TransformFunctionArn', ['dynamodb:PutItem'], ['#report#*', '#progress#*']);
    table('PublishFunctionArn', ['dynamodb:GetItem'], ['stage', '#report#*']);
    table('PublishFunctionArn', ['dynamodb:UpdateItem'], ['stage', '#run#*']);
    table('AckWatermarkFunctionArn', ['dynamodb:GetItem', 'dynamodb:UpdateItem'], ['stage', '#run#*']);
    // A claim's or the listing's holder: is that execution still running? (A named state machine,
    // so this grant need not reference it: the machine already depends on the functions.)
    const stateMachineName = `${this.stackName}-workflow`;
    const executions = `arn:${Aws.PARTITION}:states:${Aws.REGION}:${Aws.ACCOUNT_ID}:execution:${stateMachineName}:*`;
    const describeExecutions = (role: iam.Role) => {
      role.addToPolicy(new iam.PolicyStatement({ actions: ['states:DescribeExecution'], resources: [executions] }));
      Validations.of(role).acknowledge({
        id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${stateMachineName}:*]`,
        reason: 'DescribeExecution of this state machine\'s own executions, whose names Step Functions generates.',
      });
    };
    for (const placeholder of ['EnsureRuntimeFunctionArn', 'ListChangesFunctionArn'] as const) {
      describeExecutions(roles[placeholder]);
    }
    // LookupEvents, GetMetricData and ListMetrics support no resource-level permissions.
    roles.ListChangesFunctionArn.addToPolicy(
      new iam.PolicyStatement({ actions: ['cloudtrail:LookupEvents'], resources: ['*'] }),
    );
    roles.TransformFunctionArn.addToPolicy(
      new iam.PolicyStatement({ actions: ['cloudwatch:GetMetricData', 'cloudwatch:ListMetrics'], resources: ['*'] }),
    );
    // With push mode, whether a trail logs each target's management write events (PushUnavailable when none
    // does): DescribeTrails supports no resource-level permission, and an organization trail lives in the
    // management account, hence any account in the trails' ARN.
    const detectTrails = (role: iam.Role) => {
      if (!settings.pushMode) return;
      role.addToPolicy(new iam.PolicyStatement({ actions: [...TRAIL_DETECTION_ACTIONS.anyResource], resources: ['*'] }));
      role.addToPolicy(
        new iam.PolicyStatement({
          actions: [...TRAIL_DETECTION_ACTIONS.trails],
          resources: [`arn:${Aws.PARTITION}:cloudtrail:*:*:trail/*`],
        }),
      );
      Validations.of(role).acknowledge({
        id: 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:cloudtrail:*:*:trail/*]',
        reason:
          'Reads (status and event selectors) of whichever trail logs the account-region: an organization trail ' +
          'lives in the management account, under a name the agent does not choose.',
      });
    };
    detectTrails(roles.EnsureRuntimeFunctionArn);
    if (settings.targetAccounts === 'organization' && settings.targetOrganizationalUnits.length > 0) {
      this.addMemberRoleStackSet(settings);
    }
    const acknowledgeApiGatewayReads = (role: iam.Role) => {
      for (const path of apiGatewayPaths(settings.apiTypes).filter((p) => p.includes('*'))) {
        for (const region of settings.targetRegions.length ? settings.targetRegions : ['<AWS::Region>']) {
          Validations.of(role).acknowledge({
            id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:apigateway:${region}::${path}]`,
            reason:
              'The agent federates every API of the selected types in the account and region, with their stages and ' +
              'custom domain routes, so it reads them all (GET only).',
          });
        }
      }
    };
    const anyResource =
      'Only actions without resource-level permissions use "*": X-Ray trace upload, cloudtrail:LookupEvents, ' +
      'cloudwatch:GetMetricData and cloudwatch:ListMetrics, the organization\'s account listing, and with push ' +
      'mode cloudtrail:DescribeTrails.';
    for (const role of Object.values(roles)) {
      Validations.of(role).acknowledge({ id: 'AwsSolutions-IAM5[Resource::*]', reason: anyResource });
      acknowledgeApiGatewayReads(role);
    }

    const workflowLogs = new logs.LogGroup(this, 'WorkflowLogs', {
      retention: settings.logRetention,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    const syncAliases = Object.entries(aliases).filter(([placeholder]) => placeholder !== 'TargetsFunctionArn');
    const definitionSubstitutions = Object.fromEntries(
      syncAliases.map(([placeholder, alias]) => [placeholder, alias.functionArn]),
    );
    this.stateMachine = new sfn.StateMachine(this, 'Workflow', {
      stateMachineName,
      comment: 'Federates Amazon API Gateway into webMethods API Control Plane',
      definitionBody: sfn.DefinitionBody.fromString(readFileSync(props.definitionFile, 'utf8')),
      definitionSubstitutions,
      stateMachineType: settings.express ? sfn.StateMachineType.EXPRESS : sfn.StateMachineType.STANDARD,
      // Errors only by default, without the states' input and output (API names, descriptions, URLs).
      logs: {
        destination: workflowLogs,
        level: sfn.LogLevel[settings.workflowLogLevel],
        includeExecutionData: settings.workflowLogExecutionData,
      },
      tracingEnabled: true,
    });
    for (const [, alias] of syncAliases) {
      alias.grantInvoke(this.stateMachine);
    }
    Validations.of(this.stateMachine).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'Log delivery and X-Ray actions that Step Functions needs support no resource-level permissions.',
    });
    if (settings.workflowLogLevel !== 'ALL') {
      Validations.of(this.stateMachine).acknowledge({
        id: 'AwsSolutions-SF1',
        reason:
          'Errors only by default: every state\'s events would log the API names, descriptions and URLs the states ' +
          'carry; the console keeps each execution\'s history, and -c workflowLogLevel=ALL logs everything.',
      });
    }
    Validations.of(this.stateMachine).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::<EnsureRuntimeLive*>:*]',
      reason: 'grantInvoke also allows the qualified ARNs of the alias; the alias is still the only function reachable.',
    });

    // With more than one account-region, the tick hands its targets over to the fan-out, which starts one
    // run of the workflow per target.
    this.fanOut = fanOut
      ? this.addFanOut(props, settings, aliases.TargetsFunctionArn, workflowLogs)
      : undefined;
    // What the schedule invokes: the targets binary as the tick (tasks/core/src/handlers/tick.rs), which runs
    // idle targets in-process with the tasks' own code and hands the others over to one execution. No state
    // machine invokes it, so its environment may name them.
    const tick = deploy('Tick', 'targets', 'tick', Duration.seconds(TICK_TIMEOUT_SECONDS), {
      ...environment,
      SYNC_STATE_MACHINE_ARN: this.stateMachine.stateMachineArn,
      ...(this.fanOut ? { FAN_OUT_STATE_MACHINE_ARN: this.fanOut.stateMachineArn } : {}),
    });
    // A quiet target's run: ensure-runtime (a small account's discovery included), list-changes of a quiet
    // window, the periodic metrics read (transform, publish), ack-watermark. It never re-reads a changed API nor
    // stores a listing or a snapshot: a target that needs that is handed over.
    readSecret(tick.role);
    tick.role.addToPolicy(readApiGateway);
    acknowledgeApiGatewayReads(tick.role);
    tick.role.addToPolicy(new iam.PolicyStatement({ actions: ['cloudtrail:LookupEvents'], resources: ['*'] }));
    tick.role.addToPolicy(
      new iam.PolicyStatement({ actions: ['cloudwatch:GetMetricData', 'cloudwatch:ListMetrics'], resources: ['*'] }),
    );
    table(tick.role, ['dynamodb:GetItem'], [
      'stage', '#discovery', '#catalog#*', '#registry', '#applied#*', '#run#*', '#lock#listing', '#progress#*', '#report#*',
      ...pushStatus,
    ]);
    table(tick.role, ['dynamodb:UpdateItem'], ['stage', '#registry', '#run#*', '#lock#listing', '#pace#apigateway']);
    table(tick.role, ['dynamodb:PutItem'], ['#applied#*', '#discovery', '#progress#*', '#report#*', ...pushStatus]);
    tick.role.addToPolicy(registryScan(this.table));
    describeExecutions(tick.role);
    detectTrails(tick.role);
    // One execution a tick, of the machine it hands over to.
    (this.fanOut ?? this.stateMachine).grantStartExecution(tick.role);
    if (fanOut) this.grantTargets(settings, roles, tick.role);
    Validations.of(tick.role).acknowledge({ id: 'AwsSolutions-IAM5[Resource::*]', reason: anyResource });

    // Push mode: API Gateway's management calls, as CloudTrail events, start a run within seconds. The starter
    // is the targets binary again (PUSH_STARTER names it in its logs): it reads the events and starts one
    // execution of the workflow per target they name. No state machine invokes it, so its environment may name one.
    const push = settings.pushMode
      ? this.addPush(settings, fanOut, () =>
          deploy('PushStarter', 'targets', 'push starter', Duration.seconds(PUSH_STARTER_TIMEOUT_SECONDS), {
            ...environment,
            SYNC_STATE_MACHINE_ARN: this.stateMachine.stateMachineArn,
            PUSH_STARTER: 'true',
          }),
        )
      : undefined;

    // The schedule may only invoke the tick.
    const scheduleRole = new iam.Role(this, 'ScheduleRole', {
      assumedBy: new iam.ServicePrincipal('scheduler.amazonaws.com', {
        conditions: { StringEquals: { 'aws:SourceAccount': Aws.ACCOUNT_ID } },
      }),
      description: 'Invokes the tick of the API Gateway agent',
    });
    tick.alias.grantInvoke(scheduleRole);
    new scheduler.CfnSchedule(this, 'Schedule', {
      description: 'Runs the API Gateway agent\'s tick: idle targets in-process, the others in one execution',
      scheduleExpression: rateExpression(settings.scheduleRate),
      flexibleTimeWindow: { mode: 'OFF' },
      state: settings.scheduleEnabled ? 'ENABLED' : 'DISABLED',
      target: {
        arn: tick.alias.functionArn,
        roleArn: scheduleRole.roleArn,
        // The tick names its execution after the scheduled time: a repeated invocation starts none.
        input: JSON.stringify({ action: 'tick', scheduledTime: '<aws.scheduler.scheduled-time>' }),
        // A missed run is caught up by the next one: the watermarks make runs cumulative.
        retryPolicy: { maximumRetryAttempts: 0 },
      },
    });
    // The same for Lambda's own retries of the asynchronous invocation (two by default).
    tick.alias.configureAsyncInvoke({ retryAttempts: 0 });

    this.addAlarms(settings, tick.fn, push);
    this.addDashboard(push);

    new CfnOutput(this, 'StateMachineArn', { value: this.stateMachine.stateMachineArn });
    if (this.fanOut) new CfnOutput(this, 'FanOutStateMachineArn', { value: this.fanOut.stateMachineArn });
    new CfnOutput(this, 'TickFunctionName', { value: tick.fn.functionName });
    new CfnOutput(this, 'StateTableName', { value: this.table.tableName });
    new CfnOutput(this, 'ControlPlaneSecretArn', { value: secret.secretArn });
    if (push) {
      new CfnOutput(this, 'PushQueueUrl', { value: push.queue.queueUrl });
      new CfnOutput(this, 'PushDeadLettersUrl', { value: push.deadLetters.queueUrl });
    }
  }

  /**
   * Push mode: the default bus's rule (and with several targets, the push bus's) sends API Gateway's management
   * events to a queue, from which the starter starts runs of the workflow. What the queue cannot deliver, and
   * what EventBridge cannot put on the queue, ends in the dead-letter queue, which alarms.
   */
  private addPush(settings: AgentSettings, fanOut: boolean, deployStarter: () => Deployed): Push {
    const starter = deployStarter();
    // Only the workflow: one execution per target, named push-....
    this.stateMachine.grantStartExecution(starter.role);
    Validations.of(starter.role).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'X-Ray trace upload supports no resource-level permissions.',
    });
    const deadLetters = new sqs.Queue(this, 'PushDeadLetters', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    const queue = new sqs.Queue(this, 'PushQueue', {
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(1),
      // AWS's advice for a queue a function reads: six times the function's timeout.
      visibilityTimeout: Duration.seconds(6 * PUSH_STARTER_TIMEOUT_SECONDS),
      deadLetterQueue: { queue: deadLetters, maxReceiveCount: 5 },
    });
    // The queue's policy lets events.amazonaws.com send only from these rules (aws:SourceArn).
    const toQueue = () =>
      new eventsTargets.SqsQueue(queue, { deadLetterQueue: deadLetters, retryAttempts: 8, maxEventAge: Duration.hours(1) });
    const eventPattern: events.EventPattern = {
      source: PUSH_EVENT_PATTERN.source,
      detailType: PUSH_EVENT_PATTERN['detail-type'],
      detail: PUSH_EVENT_PATTERN.detail,
    };
    new events.Rule(this, 'PushRule', {
      description: 'API Gateway management calls in this account-region, to the agent\'s push queue',
      eventPattern,
      targets: [toQueue()],
    });
    if (fanOut) {
      // The other account-regions forward their events here (cdk/lib/push-forwarder.ts).
      const bus = new events.EventBus(this, 'PushBus', { eventBusName: `${this.stackName}-push` });
      const accounts = settings.targetAccounts;
      if (accounts === 'organization') {
        const organizationId = this.node.tryGetContext('organizationId') as string | undefined;
        if (!organizationId || !/^o-[a-z0-9]{10,32}$/.test(organizationId)) {
          throw new Error(
            'push mode with targetAccounts=organization lets the organization\'s accounts put events on the push bus: ' +
              `pass -c organizationId=o-... (the organization's id${organizationId ? `, not ${JSON.stringify(organizationId)}` : ''})`,
          );
        }
        bus.addToResourcePolicy(
          new iam.PolicyStatement({
            sid: 'OrganizationForwarders',
            principals: [new iam.AnyPrincipal()],
            actions: ['events:PutEvents'],
            resources: [bus.eventBusArn],
            conditions: { StringEquals: { 'aws:PrincipalOrgID': organizationId } },
          }),
        );
      } else if (Array.isArray(accounts)) {
        bus.addToResourcePolicy(
          new iam.PolicyStatement({
            sid: 'TargetAccountForwarders',
            principals: accounts.map((account) => new iam.AccountPrincipal(account)),
            actions: ['events:PutEvents'],
            resources: [bus.eventBusArn],
          }),
        );
      }
      // With `self`, only this account's other regions forward: their roles' own grant suffices, no bus policy.
      new events.Rule(this, 'PushForwardedRule', {
        description: 'API Gateway management calls forwarded from the other target account-regions, to the push queue',
        eventBus: bus,
        eventPattern,
        targets: [toQueue()],
      });
      if (accounts === 'organization' && settings.targetOrganizationalUnits.length > 0) {
        this.addPushForwarderStackSet(settings, bus);
      }
      new CfnOutput(this, 'PushBusArn', { value: bus.eventBusArn });
    }
    // Batches of up to 100 events gathered for the batching window (more than 10 a batch needs a window of at
    // least a second); a failed event alone is retried, and at most two starters run at once.
    const window = settings.pushBatchWindow.toSeconds();
    starter.alias.addEventSource(
      new lambdaEventSources.SqsEventSource(queue, {
        batchSize: window > 0 ? 100 : 10,
        maxBatchingWindow: window > 0 ? settings.pushBatchWindow : undefined,
        reportBatchItemFailures: true,
        maxConcurrency: 2,
      }),
    );
    return { starter: starter.fn, queue, deadLetters };
  }

  /**
   * The push forwarder (cdk/lib/push-forwarder.ts) in every account of the named organizational units, in every
   * target region, as the member role is rolled out (same administrator, `-c memberRoleCallAs`). StackSets never
   * deploy to the management account: deploy `<stackName>-PushForwarder` there by hand if it runs APIs, as in
   * accounts outside the units. The home account's own region needs none (the template skips it).
   */
  private addPushForwarderStackSet(settings: AgentSettings, bus: events.EventBus): void {
    const callAs = (this.node.tryGetContext('memberRoleCallAs') as string | undefined) ?? 'DELEGATED_ADMIN';
    new cloudformation.CfnStackSet(this, 'PushForwarderStackSet', {
      stackSetName: `${this.stackName}-push-forwarder`,
      description: 'Forwards API Gateway management events of each target account-region to the API Gateway agent',
      permissionModel: 'SERVICE_MANAGED',
      callAs,
      autoDeployment: { enabled: true, retainStacksOnAccountRemoval: false },
      capabilities: ['CAPABILITY_IAM'],
      managedExecution: { Active: true },
      operationPreferences: { maxConcurrentPercentage: 100, failureTolerancePercentage: 100, regionConcurrencyType: 'PARALLEL' },
      parameters: [
        { parameterKey: 'PushBusArn', parameterValue: bus.eventBusArn },
        { parameterKey: 'AgentAccountId', parameterValue: Aws.ACCOUNT_ID },
        { parameterKey: 'AgentRegion', parameterValue: Aws.REGION },
      ],
      stackInstancesGroup: [
        { deploymentTargets: { organizationalUnitIds: settings.targetOrganizationalUnits }, regions: targetRegions(settings) },
      ],
      templateBody: this.toJsonString(pushForwarderTemplate()),
    });
  }

  /**
   * The functions' way into the target accounts: the member role (TARGET_ROLE_NAME) of each listed account, or
   * of every account of the organization; and the organization's account listing for the fan-out and the tick.
   */
  private grantTargets(settings: AgentSettings, roles: Record<Placeholder, iam.Role>, tick: iam.Role): void {
    const roleArn = (account: string) => `arn:${Aws.PARTITION}:iam::${account}:role/${settings.targetRoleName}`;
    const accounts = settings.targetAccounts;
    const organization = accounts === 'organization';
    const assume = new iam.PolicyStatement({
      actions: ['sts:AssumeRole'],
      resources: accounts === 'organization' ? [roleArn('*')] : accounts === 'self' ? [] : accounts.map(roleArn),
      // Within the organization only: the member role's ARN names any account.
      conditions: organization ? { StringEquals: { 'aws:ResourceOrgID': '${aws:PrincipalOrgID}' } } : undefined,
    });
    for (const role of [roles.EnsureRuntimeFunctionArn, roles.ListChangesFunctionArn, roles.TransformFunctionArn, tick]) {
      if (assume.resources.length > 0) role.addToPolicy(assume);
      if (organization) {
        Validations.of(role).acknowledge({
          id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:iam::*:role/${settings.targetRoleName}]`,
          reason: 'The read-only member role in every account of the organization (aws:ResourceOrgID limits it to the organization).',
        });
      }
    }
    if (organization) {
      // Organizations' listings support no resource-level permissions.
      const listing = new iam.PolicyStatement({
        actions: settings.targetOrganizationalUnits.length
          ? ['organizations:ListAccountsForParent', 'organizations:ListOrganizationalUnitsForParent']
          : ['organizations:ListAccounts'],
        resources: ['*'],
      });
      roles.TargetsFunctionArn.addToPolicy(listing);
      tick.addToPolicy(listing);
    }
  }

  /**
   * The member role in every account of the named organizational units, now and as accounts join them: a
   * service-managed StackSet, run from the organization's management account or a delegated administrator
   * (`-c memberRoleCallAs=SELF` in the management account). One region per account: IAM is global. StackSets
   * never deploy to the management account: deploy `<stackName>-MemberRole` there if it runs APIs.
   */
  private addMemberRoleStackSet(settings: AgentSettings): void {
    const callAs = (this.node.tryGetContext('memberRoleCallAs') as string | undefined) ?? 'DELEGATED_ADMIN';
    const organizationId = this.node.tryGetContext('organizationId') as string | undefined;
    new cloudformation.CfnStackSet(this, 'MemberRoleStackSet', {
      stackSetName: `${this.stackName}-member-role`,
      description: `The read-only role ${settings.targetRoleName} the API Gateway agent assumes in each target account`,
      permissionModel: 'SERVICE_MANAGED',
      callAs,
      autoDeployment: { enabled: true, retainStacksOnAccountRemoval: false },
      capabilities: ['CAPABILITY_NAMED_IAM'],
      managedExecution: { Active: true },
      operationPreferences: { maxConcurrentPercentage: 100, failureTolerancePercentage: 100, regionConcurrencyType: 'PARALLEL' },
      parameters: [
        { parameterKey: 'AgentAccountId', parameterValue: Aws.ACCOUNT_ID },
        ...(organizationId ? [{ parameterKey: 'OrganizationId', parameterValue: organizationId }] : []),
      ],
      stackInstancesGroup: [
        { deploymentTargets: { organizationalUnitIds: settings.targetOrganizationalUnits }, regions: [Aws.REGION] },
      ],
      templateBody: this.toJsonString(memberRoleTemplate(settings, { stackName: this.stackName })),
    });
  }

  /** The fan-out: statemachine/targets.asl.json, one run of the workflow per target. */
  private addFanOut(
    props: AgentStackProps,
    settings: AgentSettings,
    targetsAlias: lambda.Alias,
    logGroup: logs.LogGroup,
  ): sfn.StateMachine {
    if (!props.fanOutDefinitionFile) throw new Error('the settings name several targets: fanOutDefinitionFile is required');
    const fanOut = new sfn.StateMachine(this, 'FanOut', {
      stateMachineName: `${this.stackName}-targets`,
      comment: 'Runs the API Gateway agent workflow once per target account-region',
      definitionBody: sfn.DefinitionBody.fromString(readFileSync(props.fanOutDefinitionFile, 'utf8')),
      definitionSubstitutions: {
        TargetsFunctionArn: targetsAlias.functionArn,
        SyncStateMachineArn: this.stateMachine.stateMachineArn,
      },
      // `.sync` waits for each run: a Standard workflow only.
      stateMachineType: sfn.StateMachineType.STANDARD,
      logs: {
        destination: logGroup,
        level: sfn.LogLevel[settings.workflowLogLevel],
        includeExecutionData: settings.workflowLogExecutionData,
      },
      tracingEnabled: true,
    });
    targetsAlias.grantInvoke(fanOut);
    // What `states:startExecution.sync:2` needs: start the runs, follow and stop them, and the managed rule
    // Step Functions uses to learn that a run ended.
    this.stateMachine.grantStartExecution(fanOut);
    fanOut.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['states:DescribeExecution', 'states:StopExecution'],
        resources: [`arn:${Aws.PARTITION}:states:${Aws.REGION}:${Aws.ACCOUNT_ID}:execution:${this.stackName}-workflow:*`],
      }),
    );
    fanOut.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['events:PutTargets', 'events:PutRule', 'events:DescribeRule'],
        resources: [
          `arn:${Aws.PARTITION}:events:${Aws.REGION}:${Aws.ACCOUNT_ID}:rule/StepFunctionsGetEventsForStepFunctionsExecutionRule`,
        ],
      }),
    );
    Validations.of(fanOut).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'Log delivery and X-Ray actions that Step Functions needs support no resource-level permissions.',
    });
    Validations.of(fanOut).acknowledge({
      id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${this.stackName}-workflow:*]`,
      reason: 'The runs this fan-out starts, whose names Step Functions generates.',
    });
    Validations.of(fanOut).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::<TargetsLive*>:*]',
      reason: 'grantInvoke also allows the qualified ARNs of the alias; the alias is still the only function reachable.',
    });
    if (settings.workflowLogLevel !== 'ALL') {
      Validations.of(fanOut).acknowledge({
        id: 'AwsSolutions-SF1',
        reason: 'Errors only by default, as the workflow; -c workflowLogLevel=ALL logs everything.',
      });
    }
    return fanOut;
  }

  /** What is behind, per target: sync lag, failures, metrics windows sent and in doubt, refused APIs. */
  private addDashboard(push?: Push): void {
    const graph = (title: string, metrics: cloudwatch.IMetric[], width = 12) =>
      new cloudwatch.GraphWidget({ title, left: metrics, width, height: 6, legendPosition: cloudwatch.LegendPosition.RIGHT });
    const period = Duration.minutes(5);
    const agentSum = (metricName: string) =>
      new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName, statistic: 'Sum', period });
    // Push mode: the starter, the queue and its dead letters, the events the agent took or ignored, and the
    // targets whose changes only polling sees (no trail logs their management write events).
    const pushRow = push
      ? [
          [
            graph('Push starter invocations and errors', [
              push.starter.metricInvocations({ statistic: 'Sum', period }),
              push.starter.metricErrors({ statistic: 'Sum', period }),
            ], 6),
            graph('Push queue: oldest message age (s), dead letters', [
              push.queue.metricApproximateAgeOfOldestMessage({ statistic: 'Maximum', period }),
              push.deadLetters.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period }),
            ], 6),
            graph('Push events received, ignored, executions started', [
              agentSum('PushEventsReceived'),
              agentSum('PushEventsIgnored'),
              agentSum('PushExecutionsStarted'),
            ], 6),
            // No per-target series (one would cost more than the target's runs): the execution output names
            // the target whose trail is missing.
            graph('Push unavailable (1: a target has no trail logging its write events)', [
              new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName: 'PushUnavailable', statistic: 'Maximum', period }),
            ], 6),
          ],
        ]
      : [];
    new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `${this.stackName}`,
      widgets: [
        [
          graph('Assets sync lag (seconds) by target', [perTarget('SyncLagSeconds', 'Minimum', '', 'Kind,Target', ' Kind="assets"')]),
          graph('Metrics sync lag (seconds) by target', [perTarget('SyncLagSeconds', 'Minimum', '', 'Kind,Target', ' Kind="metrics"')]),
        ],
        [
          graph('APIs federated, by target', [perTarget('ApisFederated', 'Maximum', '')]),
          graph('Failed runs by target (1 = the last run failed)', [perTarget('TargetFailed', 'Maximum', '')]),
        ],
        [
          graph('APIs the control plane refuses, by target', [perTarget('RefusedApis', 'Maximum', '')]),
          graph('Metrics windows sent, by target', [perTarget('MetricsWindowsSent', 'Sum', '')]),
        ],
        [
          graph('Metrics windows in doubt, by target', [perTarget('MetricsWindowsInDoubt', 'Sum', '')]),
        ],
        ...pushRow,
      ],
    });
  }

  private addAlarms(settings: AgentSettings, tick: lambda.Function, push?: Push): void {
    const topic = settings.alarmTopicArn ? sns.Topic.fromTopicArn(this, 'AlarmTopic', settings.alarmTopicArn) : undefined;
    const period = Duration.minutes(5);
    // The metrics branch acks only every fetch interval, and its windows are that much older
    // by then: its alarm looks over a longer period and allows for it.
    const fetchAllowance = (kind: string) => (kind === 'metrics' ? settings.metricsFetchInterval.toSeconds() : 0);
    const syncLag = (kind: string) =>
      new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName: 'SyncLagSeconds',
        dimensionsMap: { Kind: kind },
        statistic: 'Minimum',
        period: Duration.seconds(Math.ceil((900 + fetchAllowance(kind)) / 60) * 60),
      });
    const anyExecution = (id: string, alarmDescription: string, metric: cloudwatch.IMetric) =>
      new cloudwatch.Alarm(this, id, {
        alarmDescription,
        metric,
        threshold: 1,
        evaluationPeriods: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
    const alarms = [
      anyExecution(
        'ExecutionsFailedAlarm',
        'An execution of the API Gateway agent failed; its error names the cause.',
        this.stateMachine.metricFailed({ period, statistic: 'Sum' }),
      ),
      anyExecution(
        'ExecutionsTimedOutAlarm',
        'An execution of the API Gateway agent timed out.',
        this.stateMachine.metricTimedOut({ period, statistic: 'Sum' }),
      ),
      // A window recorded as sent whose answer was lost (or whose task was cut off): the
      // control plane may lack it, and nobody resends it.
      anyExecution(
        'MetricsWindowsInDoubtAlarm',
        'A metrics window may be missing in the control plane: its answer was lost, so it is recorded as sent and not resent ("metrics window in doubt" in the publish log names it).',
        new cloudwatch.Metric({
          namespace: METRICS_NAMESPACE,
          metricName: 'MetricsWindowsInDoubt',
          statistic: 'Sum',
          period,
        }),
      ),
      // APIs the control plane refuses (each commit counts those of its stages): left out while
      // every other API is published, retried on every run; the execution output names them.
      anyExecution(
        'RefusedApisAlarm',
        'The control plane refuses some APIs: every other API is published, these are retried on every run (the assets summary\'s "refused" and the publish log name them).',
        new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName: 'RefusedApis', statistic: 'Maximum', period }),
      ),
      // The oldest watermark of each branch's stages (a stuck stage is the lag); no ack at all
      // counts as lagging.
      ...['assets', 'metrics'].map(
        (kind) =>
          new cloudwatch.Alarm(this, `${pascal(kind)}SyncLagAlarm`, {
            alarmDescription: `The ${kind} the control plane shows for some stage are more than ${Math.round((settings.syncLagThreshold.toSeconds() + fetchAllowance(kind)) / 60)} minutes old.`,
            metric: syncLag(kind),
            threshold: settings.syncLagThreshold.toSeconds() + fetchAllowance(kind),
            evaluationPeriods: 1,
            comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treatMissingData: cloudwatch.TreatMissingData.BREACHING,
          }),
      ),
      // The tick failing as a whole (its role, the organization's listing, Step Functions refusing the
      // start) runs nothing: three ticks in a row is no passing fault.
      new cloudwatch.Alarm(this, 'TickFailedAlarm', {
        alarmDescription: 'The agent\'s tick fails: no target is synced (the tick function\'s log names the error).',
        metric: tick.metricErrors({ period: settings.scheduleRate, statistic: 'Sum' }),
        threshold: 1,
        evaluationPeriods: 3,
        datapointsToAlarm: 3,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      }),
    ];
    if (this.fanOut) {
      alarms.push(
        // A target whose run failed (a role refused, a region not enabled...): the fan-out's output names it
        // and why; the other targets went on, and the next run tries it again.
        anyExecution(
          'TargetsFailedAlarm',
          'The run of some target account-region failed: the fan-out execution\'s output lists each with its reason, and the dashboard shows which (TargetFailed by target).',
          new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName: 'TargetsFailed', statistic: 'Maximum', period }),
        ),
        anyExecution(
          'FanOutFailedAlarm',
          'An execution of the fan-out over targets failed: no target was planned (its error names the cause).',
          this.fanOut.metricFailed({ period, statistic: 'Sum' }),
        ),
      );
    }
    if (push) {
      alarms.push(
        // Events neither the starter nor EventBridge could deliver: their changes wait for the assets branch's
        // polling (PUSH_POLL_MINUTES).
        anyExecution(
          'PushDeadLettersAlarm',
          'Push events ended in the push dead-letter queue: the starter failed on them five times, or EventBridge could not deliver them; their changes wait for the next poll.',
          push.deadLetters.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' }),
        ),
        new cloudwatch.Alarm(this, 'PushStarterErrorsAlarm', {
          alarmDescription: 'The push starter fails (its log names the error): pushed changes wait for the next poll.',
          metric: push.starter.metricErrors({ period, statistic: 'Sum' }),
          threshold: 1,
          evaluationPeriods: 3,
          datapointsToAlarm: 3,
          comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
          treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
        }),
      );
    }
    if (topic) {
      for (const alarm of alarms) {
        alarm.addAlarmAction(new cloudwatchActions.SnsAction(topic));
        alarm.addOkAction(new cloudwatchActions.SnsAction(topic));
      }
    }
  }
}

/** A line per target (`<account>/<region>`) of one of the agent's metrics. */
function perTarget(metricName: string, statistic: string, label: string, dimensions = 'Target', filter = ''): cloudwatch.MathExpression {
  return new cloudwatch.MathExpression({
    expression: `SEARCH('{${METRICS_NAMESPACE},${dimensions}} MetricName="${metricName}"${filter}', '${statistic}', 300)`,
    label,
    period: Duration.minutes(5),
  });
}

function pascal(kebab: string): string {
  return kebab.replace(/(^|-)(\w)/g, (_, __, c: string) => c.toUpperCase());
}

/** EventBridge Scheduler wants `rate(1 minute)` but `rate(5 minutes)`. */
export function rateExpression(rate: Duration): string {
  const minutes = rate.toMinutes();
  return minutes === 1 ? 'rate(1 minute)' : `rate(${minutes} minutes)`;
}

/**
 * What the agent reads of API Gateway for the selected API types: the APIs and their stages, the
 * custom domain names, and each domain's routes (base path mappings for REST APIs, API mappings
 * for HTTP and WebSocket APIs). Nothing else, and GET only.
 */
export function apiGatewayPaths(apiTypes: readonly ApiType[]): string[] {
  const paths = ['/domainnames'];
  if (apiTypes.includes('REST')) paths.push('/restapis', '/restapis/*', '/domainnames/*/basepathmappings');
  if (apiTypes.includes('HTTP') || apiTypes.includes('WEBSOCKET')) {
    paths.push('/apis', '/apis/*', '/domainnames/*/apimappings');
  }
  return paths;
}

function apiGatewayResources(apiTypes: readonly ApiType[], regions: string[]): string[] {
  return regions.flatMap((region) =>
    apiGatewayPaths(apiTypes).map((path) => `arn:${Aws.PARTITION}:apigateway:${region}::${path}`),
  );
}

/** The regions the functions read API Gateway in: the targets', or the deployment's own. */
function targetRegions(settings: AgentSettings): string[] {
  return settings.targetRegions.length ? settings.targetRegions : [Aws.REGION];
}

/** The one-off scan that starts the registry of an installation from before it: keys and runtime ids only. */
function registryScan(table: dynamodb.Table): iam.PolicyStatement {
  return new iam.PolicyStatement({
    actions: ['dynamodb:Scan'],
    resources: [table.tableArn],
    conditions: {
      'ForAllValues:StringEquals': { 'dynamodb:Attributes': ['stage', 'registeredId'] },
      StringEquals: { 'dynamodb:Select': 'SPECIFIC_ATTRIBUTES' },
    },
  });
}

/**
 * A kind of item of the state table: `stage`, the item of a stage (its key is the stage's name,
 * which cannot start with `#`), or a key pattern of the other items (`#run#*`, `#discovery`...).
 */
type StateItem = 'stage' | `#${string}`;

/**
 * Grants `actions` on the table's items of these kinds only (`dynamodb:LeadingKeys`); with `scoped`, on the
 * same kinds of every target's items too (`<account>/<region>/<key>`, see tasks/core/src/target.rs).
 */
function grantStateItems(role: iam.Role, table: dynamodb.Table, actions: string[], items: StateItem[], scoped = false): void {
  const named = items
    .filter((item) => item !== 'stage')
    .flatMap((item) => (scoped ? [item, `????????????/*/${item}`] : [item]));
  if (items.includes('stage')) {
    // No stage name holds a `#`: every other item's key (a target's too) does.
    role.addToPolicy(
      new iam.PolicyStatement({
        actions,
        resources: [table.tableArn],
        conditions: { 'ForAllValues:StringNotLike': { 'dynamodb:LeadingKeys': [scoped ? '*#*' : '#*'] } },
      }),
    );
  }
  if (named.length > 0) {
    role.addToPolicy(
      new iam.PolicyStatement({
        actions,
        resources: [table.tableArn],
        conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': named } },
      }),
    );
  }
}
