// The deployment's settings: typed props of the stack, read from CDK context values
// (`cdk deploy -c controlPlaneUrl=https://...`). One checker validates them: settingsFromContext
// hands the context values, as the functions' environment variables, to `check-settings`
// (tasks/settings) and builds the settings from the normalized JSON it prints; the functions run
// the same checker at cold start. No rule is written here.
import { spawnSync } from 'node:child_process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { Duration } from 'aws-cdk-lib';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';

export const API_TYPES = ['REST', 'HTTP', 'WEBSOCKET'] as const;
export type ApiType = (typeof API_TYPES)[number];

export interface AgentSettings {
  /** APICP_URL: base URL of the control plane (https). Required. */
  readonly controlPlaneUrl: string;
  /** An existing Secrets Manager secret `{"username","password"}`; a new one is created when absent. */
  readonly controlPlaneSecretArn?: string;
  /** APICP_CA_BUNDLE: path, inside the function (e.g. from a layer), of a PEM bundle of extra CAs. */
  readonly controlPlaneCaBundle?: string;
  /** APICP_TIMEOUT_SECONDS. */
  readonly controlPlaneTimeout: Duration;
  /** APICP_RUNTIME_TYPE. */
  readonly runtimeType: string;
  /** STAGES: stage names, or `['*']` for every stage with a deployment. */
  readonly stages: string[];
  /** API_TYPES: the kinds of API federated, any of REST, HTTP and WEBSOCKET (default all three). */
  readonly apiTypes: ApiType[];
  readonly runtimeIdTemplate: string;
  readonly runtimeNameTemplate: string;
  readonly runtimeDescriptionTemplate: string;
  readonly runtimeLocation?: string;
  readonly runtimeTags: string[];
  /** RUNTIME_CAPACITY, e.g. `10000 per second`. */
  readonly runtimeCapacity?: string;
  readonly heartbeatInterval: Duration;
  readonly changeBuffer: Duration;
  /** CHANGE_OVERLAP_SECONDS: how much of the previous CloudTrail window each window reads again. */
  readonly changeOverlap: Duration;
  /** CHANGE_MAX_WINDOW_SECONDS: the longest CloudTrail window one run reads (catch-up steps). */
  readonly changeMaxWindow: Duration;
  readonly reconcileInterval: Duration;
  readonly allowEmptyListingDeletes: boolean;
  readonly chunkSize: number;
  readonly metricsInterval: Duration;
  readonly metricsBuffer: Duration;
  /** METRICS_FETCH_INTERVAL_SECONDS: how much must be due before CloudWatch is read (its cost). */
  readonly metricsFetchInterval: Duration;
  /** METRICS_BACKFILL_SECONDS: how far back a new installation's first metrics window starts. */
  readonly metricsBackfill: Duration;
  readonly metricsMaxWindowsPerRun: number;
  /** DISCOVERY_INTERVAL_SECONDS: with `stages: ['*']`, how long a discovery of the account's stages is reused. */
  readonly discoveryInterval: Duration;
  /** CLAIM_TTL_SECONDS: how long a branch's claim on a stage outlives an execution that died holding it. */
  readonly claimTtl: Duration;
  /** ORPHAN_GRACE_SECONDS: how long the runtime of a stage no longer federated stays before it is deleted with its APIs. */
  readonly orphanGrace: Duration;
  /** APIGATEWAY_REQUESTS_PER_SECOND: the agent's share of API Gateway's quota (10/s per account and region). */
  readonly apiGatewayRequestsPerSecond: number;
  /** SCHEDULE_RATE_MINUTES: how often the schedule starts an execution (the functions get it too). */
  readonly scheduleRate: Duration;
  readonly scheduleEnabled: boolean;
  /** EXPRESS: an Express workflow instead of a Standard one (cheaper; executions end after 5 minutes). */
  readonly express: boolean;
  readonly functionMemoryMb: number;
  readonly logRetention: RetentionDays;
  /** Alarm when the newest acked watermark of a branch is older than this. */
  readonly syncLagThreshold: Duration;
  /** SNS topic notified of alarms (and of their recovery). */
  readonly alarmTopicArn?: string;
  /** WORKFLOW_LOG_LEVEL: what the state machine logs (ALL, ERROR, FATAL, OFF). */
  readonly workflowLogLevel: 'ALL' | 'ERROR' | 'FATAL' | 'OFF';
  /** WORKFLOW_LOG_EXECUTION_DATA: whether the state machine's log lines carry each state's input and output. */
  readonly workflowLogExecutionData: boolean;
  /** APICP_SECRET_KMS_KEY_ARN: the customer managed key encrypting the control plane secret. */
  readonly controlPlaneSecretKmsKeyArn?: string;
  /** TARGET_ACCOUNTS: `self`, `organization`, or account ids. */
  readonly targetAccounts: 'self' | 'organization' | string[];
  /** TARGET_ORGANIZATIONAL_UNITS: OU (or root) ids limiting `organization`; the member role's StackSet deploys there. */
  readonly targetOrganizationalUnits: string[];
  /** TARGET_REGIONS: the regions federated; empty for the deployment's own. */
  readonly targetRegions: string[];
  /** TARGET_ROLE_NAME: the read-only role assumed in every target account but the deployment's own. */
  readonly targetRoleName: string;
  /** TARGET_ROLE_EXTERNAL_ID: what the member role's trust policy requires. */
  readonly targetRoleExternalId?: string;
  /** TARGET_CONCURRENCY: targets synced at once. */
  readonly targetConcurrency: number;
  /**
   * PUSH_MODE: API Gateway's management calls reach the agent as CloudTrail events through EventBridge, an SQS
   * queue and a starter function, which starts a run within seconds; the schedule's polling stays as a backstop.
   */
  readonly pushMode: boolean;
  /** PUSH_POLL_MINUTES: with push mode, how often the assets branch still polls CloudTrail (passed only then). */
  readonly pushPollInterval: Duration;
  /** PUSH_BATCH_WINDOW_SECONDS: how long the queue gathers events before the starter reads them (0 to 300). */
  readonly pushBatchWindow: Duration;
}

/**
 * The defaults, as the checker (tasks/settings) applies them: written out for readers and tools
 * (tests/stack/benchmarks.py reads functionMemoryMb); the CDK tests keep them equal to the checker's.
 */
export const DEFAULTS = {
  controlPlaneTimeout: Duration.seconds(10),
  runtimeType: 'AWS_API_GATEWAY',
  stages: ['*'],
  apiTypes: [...API_TYPES],
  runtimeIdTemplate: '{account}_{region}_{stage}',
  runtimeNameTemplate: '{stage} ({region} {account})',
  runtimeDescriptionTemplate: 'Amazon API Gateway stage {stage} in {region}, account {account}',
  runtimeTags: [] as string[],
  heartbeatInterval: Duration.seconds(60),
  changeBuffer: Duration.seconds(300),
  changeOverlap: Duration.seconds(900),
  changeMaxWindow: Duration.hours(1),
  reconcileInterval: Duration.days(1),
  allowEmptyListingDeletes: false,
  chunkSize: 100,
  metricsInterval: Duration.minutes(5),
  metricsBuffer: Duration.seconds(180),
  metricsFetchInterval: Duration.minutes(30),
  metricsBackfill: Duration.hours(1),
  metricsMaxWindowsPerRun: 60,
  claimTtl: Duration.hours(1),
  discoveryInterval: Duration.hours(1),
  orphanGrace: Duration.days(1),
  apiGatewayRequestsPerSecond: 5,
  scheduleRate: Duration.minutes(1),
  scheduleEnabled: true,
  express: false,
  functionMemoryMb: 256,
  logRetention: RetentionDays.ONE_MONTH,
  syncLagThreshold: Duration.minutes(30),
  workflowLogLevel: 'ERROR',
  workflowLogExecutionData: false,
  targetAccounts: 'self',
  targetOrganizationalUnits: [] as string[],
  targetRegions: [] as string[],
  targetRoleName: 'ApicpAgentReader',
  targetConcurrency: 10,
  pushMode: false,
  pushPollInterval: Duration.minutes(15),
  pushBatchWindow: Duration.seconds(5),
} satisfies Partial<AgentSettings>;

/**
 * Each CDK context key the checker validates, and the environment variable it becomes: the
 * functions' variables, then the deployment's own (which only the checker reads).
 */
export const CONTEXT_VARIABLES = {
  controlPlaneUrl: 'APICP_URL',
  controlPlaneSecretArn: 'APICP_SECRET_ARN',
  controlPlaneCaBundle: 'APICP_CA_BUNDLE',
  controlPlaneTimeoutSeconds: 'APICP_TIMEOUT_SECONDS',
  runtimeType: 'APICP_RUNTIME_TYPE',
  stages: 'STAGES',
  apiTypes: 'API_TYPES',
  runtimeIdTemplate: 'RUNTIME_ID_TEMPLATE',
  runtimeNameTemplate: 'RUNTIME_NAME_TEMPLATE',
  runtimeDescriptionTemplate: 'RUNTIME_DESCRIPTION_TEMPLATE',
  runtimeLocation: 'RUNTIME_LOCATION',
  runtimeTags: 'RUNTIME_TAGS',
  runtimeCapacity: 'RUNTIME_CAPACITY',
  heartbeatIntervalSeconds: 'HEARTBEAT_INTERVAL_SECONDS',
  changeBufferSeconds: 'CHANGE_BUFFER_SECONDS',
  changeOverlapSeconds: 'CHANGE_OVERLAP_SECONDS',
  changeMaxWindowSeconds: 'CHANGE_MAX_WINDOW_SECONDS',
  reconcileIntervalSeconds: 'RECONCILE_INTERVAL_SECONDS',
  allowEmptyListingDeletes: 'ALLOW_EMPTY_LISTING_DELETES',
  chunkSize: 'CHUNK_SIZE',
  metricsIntervalSeconds: 'METRICS_INTERVAL_SECONDS',
  metricsBufferSeconds: 'METRICS_BUFFER_SECONDS',
  metricsFetchIntervalSeconds: 'METRICS_FETCH_INTERVAL_SECONDS',
  metricsBackfillSeconds: 'METRICS_BACKFILL_SECONDS',
  metricsMaxWindowsPerRun: 'METRICS_MAX_WINDOWS_PER_RUN',
  apiGatewayRequestsPerSecond: 'APIGATEWAY_REQUESTS_PER_SECOND',
  discoveryIntervalSeconds: 'DISCOVERY_INTERVAL_SECONDS',
  claimTtlSeconds: 'CLAIM_TTL_SECONDS',
  orphanGraceSeconds: 'ORPHAN_GRACE_SECONDS',
  scheduleRateMinutes: 'SCHEDULE_RATE_MINUTES',
  express: 'EXPRESS',
  scheduleEnabled: 'SCHEDULE_ENABLED',
  functionMemoryMb: 'FUNCTION_MEMORY_MB',
  logRetentionDays: 'LOG_RETENTION_DAYS',
  syncLagThresholdMinutes: 'SYNC_LAG_THRESHOLD_MINUTES',
  workflowLogLevel: 'WORKFLOW_LOG_LEVEL',
  workflowLogExecutionData: 'WORKFLOW_LOG_EXECUTION_DATA',
  controlPlaneSecretKmsKeyArn: 'APICP_SECRET_KMS_KEY_ARN',
  targetAccounts: 'TARGET_ACCOUNTS',
  targetOrganizationalUnits: 'TARGET_ORGANIZATIONAL_UNITS',
  targetRegions: 'TARGET_REGIONS',
  targetRoleName: 'TARGET_ROLE_NAME',
  targetRoleExternalId: 'TARGET_ROLE_EXTERNAL_ID',
  targetConcurrency: 'TARGET_CONCURRENCY',
  pushMode: 'PUSH_MODE',
  pushPollMinutes: 'PUSH_POLL_MINUTES',
  pushBatchWindowSeconds: 'PUSH_BATCH_WINDOW_SECONDS',
} as const;

type ContextKey = keyof typeof CONTEXT_VARIABLES;

/** What `check-settings` prints: the normalized settings, under the context keys. */
interface CheckedSettings {
  controlPlaneUrl: string;
  controlPlaneSecretArn: string | null;
  controlPlaneCaBundle: string | null;
  controlPlaneTimeoutSeconds: number;
  runtimeType: string;
  stages: string[];
  apiTypes: ApiType[];
  runtimeIdTemplate: string;
  runtimeNameTemplate: string;
  runtimeDescriptionTemplate: string;
  runtimeLocation: string | null;
  runtimeTags: string[];
  runtimeCapacity: string | null;
  heartbeatIntervalSeconds: number;
  changeBufferSeconds: number;
  changeOverlapSeconds: number;
  changeMaxWindowSeconds: number;
  reconcileIntervalSeconds: number;
  allowEmptyListingDeletes: boolean;
  chunkSize: number;
  metricsIntervalSeconds: number;
  metricsBufferSeconds: number;
  metricsFetchIntervalSeconds: number;
  metricsBackfillSeconds: number;
  metricsMaxWindowsPerRun: number;
  claimTtlSeconds: number;
  discoveryIntervalSeconds: number;
  orphanGraceSeconds: number;
  apiGatewayRequestsPerSecond: number;
  scheduleRateMinutes: number;
  scheduleEnabled: boolean;
  express: boolean;
  functionMemoryMb: number;
  logRetentionDays: number;
  syncLagThresholdMinutes: number;
  workflowLogLevel: 'ALL' | 'ERROR' | 'FATAL' | 'OFF';
  workflowLogExecutionData: boolean;
  controlPlaneSecretKmsKeyArn: string | null;
  targetAccounts: string;
  targetOrganizationalUnits: string[];
  targetRegions: string[];
  targetRoleName: string;
  targetRoleExternalId: string | null;
  targetConcurrency: number;
  // Optional until the checker prints them (see pushSettings).
  pushMode?: boolean;
  pushPollMinutes?: number;
  pushBatchWindowSeconds?: number | null;
}

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * `cargo build -p agent-settings --bin check-settings`'s output, which `make lambdas` (and so the
 * cdk.json app command) builds before every synth.
 */
export const CHECKER = join(resolve(repo, process.env.CARGO_TARGET_DIR ?? 'target'), 'debug', 'check-settings');

/** APICP_SECRET_ARN for the checker when the stack creates the secret. */
const CREATED_SECRET = 'created-by-the-stack';

type Lookup = (key: string) => unknown;

/**
 * Settings from CDK context values, checked and normalized by `check-settings`; anything missing
 * takes its default. Throws the checker's message, prefixed with the context key it names.
 */
export function settingsFromContext(lookup: Lookup): AgentSettings {
  const text = (key: string): string | undefined => {
    const value = lookup(key);
    if (value === undefined || value === null || value === '') return undefined;
    if (Array.isArray(value)) return value.map(String).join(',');
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      throw new Error(`context ${key} must be a string, not ${JSON.stringify(value)}`);
    }
    return String(value);
  };
  const given = new Map<ContextKey, string>();
  for (const key of Object.keys(CONTEXT_VARIABLES) as ContextKey[]) {
    const value = text(key);
    if (value !== undefined) given.set(key, value);
  }
  const checked = runChecker(given);
  const seconds = Duration.seconds;
  return {
    controlPlaneUrl: checked.controlPlaneUrl,
    // The checker saw a stand-in when the stack creates the secret.
    controlPlaneSecretArn: given.has('controlPlaneSecretArn') ? (checked.controlPlaneSecretArn ?? undefined) : undefined,
    controlPlaneCaBundle: checked.controlPlaneCaBundle ?? undefined,
    controlPlaneTimeout: seconds(checked.controlPlaneTimeoutSeconds),
    runtimeType: checked.runtimeType,
    stages: checked.stages,
    apiTypes: checked.apiTypes,
    runtimeIdTemplate: checked.runtimeIdTemplate,
    runtimeNameTemplate: checked.runtimeNameTemplate,
    runtimeDescriptionTemplate: checked.runtimeDescriptionTemplate,
    runtimeLocation: checked.runtimeLocation ?? undefined,
    runtimeTags: checked.runtimeTags,
    runtimeCapacity: checked.runtimeCapacity ?? undefined,
    heartbeatInterval: seconds(checked.heartbeatIntervalSeconds),
    changeBuffer: seconds(checked.changeBufferSeconds),
    changeOverlap: seconds(checked.changeOverlapSeconds),
    changeMaxWindow: seconds(checked.changeMaxWindowSeconds),
    reconcileInterval: seconds(checked.reconcileIntervalSeconds),
    allowEmptyListingDeletes: checked.allowEmptyListingDeletes,
    chunkSize: checked.chunkSize,
    metricsInterval: seconds(checked.metricsIntervalSeconds),
    metricsBuffer: seconds(checked.metricsBufferSeconds),
    metricsFetchInterval: seconds(checked.metricsFetchIntervalSeconds),
    metricsBackfill: seconds(checked.metricsBackfillSeconds),
    metricsMaxWindowsPerRun: checked.metricsMaxWindowsPerRun,
    discoveryInterval: seconds(checked.discoveryIntervalSeconds),
    claimTtl: seconds(checked.claimTtlSeconds),
    orphanGrace: seconds(checked.orphanGraceSeconds),
    apiGatewayRequestsPerSecond: checked.apiGatewayRequestsPerSecond,
    scheduleRate: Duration.minutes(checked.scheduleRateMinutes),
    scheduleEnabled: checked.scheduleEnabled,
    express: checked.express,
    functionMemoryMb: checked.functionMemoryMb,
    logRetention: checked.logRetentionDays as RetentionDays,
    syncLagThreshold: Duration.minutes(checked.syncLagThresholdMinutes),
    alarmTopicArn: text('alarmTopicArn'),
    workflowLogLevel: checked.workflowLogLevel,
    workflowLogExecutionData: checked.workflowLogExecutionData,
    controlPlaneSecretKmsKeyArn: checked.controlPlaneSecretKmsKeyArn ?? undefined,
    targetAccounts:
      checked.targetAccounts === 'self' || checked.targetAccounts === 'organization'
        ? checked.targetAccounts
        : checked.targetAccounts.split(','),
    targetOrganizationalUnits: checked.targetOrganizationalUnits,
    targetRegions: checked.targetRegions,
    targetRoleName: checked.targetRoleName,
    targetRoleExternalId: checked.targetRoleExternalId ?? undefined,
    targetConcurrency: checked.targetConcurrency,
    ...pushSettings(checked, given),
  };
}

/**
 * The push settings as the checker prints them. A checker from before push mode prints none of them: then the
 * context values as given, read the way the checker reads a flag and a whole number (no range checked), or the
 * defaults, so that synth works with either checker.
 */
function pushSettings(
  checked: CheckedSettings,
  given: Map<ContextKey, string>,
): Pick<AgentSettings, 'pushMode' | 'pushPollInterval' | 'pushBatchWindow'> {
  const refuse = (key: ContextKey, reason: string): never => {
    throw new Error(`context ${key}: invalid configuration ${CONTEXT_VARIABLES[key]}: ${reason}`);
  };
  const flag = (key: ContextKey, value: string | undefined): boolean | undefined => {
    if (value === undefined) return undefined;
    const lower = value.toLowerCase();
    if (lower === 'true' || lower === '1') return true;
    if (lower === 'false' || lower === '0') return false;
    return refuse(key, `${JSON.stringify(value)} is not true or false`);
  };
  const whole = (key: ContextKey, value: string | undefined): number | undefined => {
    if (value === undefined) return undefined;
    if (!/^\d+$/.test(value)) refuse(key, `${JSON.stringify(value)} is not a whole number of 0 or more`);
    return Number(value);
  };
  return {
    pushMode: checked.pushMode ?? flag('pushMode', given.get('pushMode')) ?? DEFAULTS.pushMode,
    pushPollInterval: Duration.minutes(
      checked.pushPollMinutes ?? whole('pushPollMinutes', given.get('pushPollMinutes')) ?? DEFAULTS.pushPollInterval.toMinutes(),
    ),
    pushBatchWindow: Duration.seconds(
      checked.pushBatchWindowSeconds ??
        whole('pushBatchWindowSeconds', given.get('pushBatchWindowSeconds')) ??
        DEFAULTS.pushBatchWindow.toSeconds(),
    ),
  };
}

/** Runs `check-settings` on the given context values, in a clean environment of their variables. */
function runChecker(given: Map<ContextKey, string>): CheckedSettings {
  const environment: Record<string, string> = { APICP_SECRET_ARN: CREATED_SECRET };
  for (const [key, value] of given) environment[CONTEXT_VARIABLES[key]] = value;
  const run = spawnSync(CHECKER, [], { env: environment, encoding: 'utf8' });
  if (run.error) {
    throw new Error(
      `cannot run the settings checker ${CHECKER} (${run.error.message}): build it with ` +
        '`cargo build -p agent-settings --bin check-settings` (`make lambdas` does)',
    );
  }
  if (run.status !== 0) {
    const message = run.stderr.trim() || `check-settings ended with ${run.status ?? run.signal}`;
    const variable = /^invalid configuration ([A-Z0-9_]+):/.exec(message)?.[1];
    const key = (Object.keys(CONTEXT_VARIABLES) as ContextKey[]).find((k) => CONTEXT_VARIABLES[k] === variable);
    if (key === undefined) throw new Error(message);
    // The key, not its value: a URL may carry credentials (which the checker refuses without echoing).
    throw new Error(`context ${key}${given.has(key) ? '' : ' (not set)'}: ${message}`);
  }
  return JSON.parse(run.stdout) as CheckedSettings;
}

/** The environment variables the functions read (tasks/settings), less the table and the secret. */
export function functionEnvironment(settings: AgentSettings): Record<string, string> {
  const optional: Record<string, string | undefined> = {
    APICP_CA_BUNDLE: settings.controlPlaneCaBundle,
    RUNTIME_LOCATION: settings.runtimeLocation,
    RUNTIME_CAPACITY: settings.runtimeCapacity,
    RUNTIME_TAGS: settings.runtimeTags.length ? settings.runtimeTags.join(',') : undefined,
    TARGET_ORGANIZATIONAL_UNITS: settings.targetOrganizationalUnits.length
      ? settings.targetOrganizationalUnits.join(',')
      : undefined,
    TARGET_REGIONS: settings.targetRegions.length ? settings.targetRegions.join(',') : undefined,
    TARGET_ROLE_EXTERNAL_ID: settings.targetRoleExternalId,
    // The assets branch's polling interval means something only with push mode.
    PUSH_POLL_MINUTES: settings.pushMode ? String(settings.pushPollInterval.toMinutes()) : undefined,
  };
  return {
    APICP_URL: settings.controlPlaneUrl,
    APICP_TIMEOUT_SECONDS: String(settings.controlPlaneTimeout.toSeconds()),
    APICP_RUNTIME_TYPE: settings.runtimeType,
    STAGES: settings.stages.join(','),
    API_TYPES: settings.apiTypes.join(','),
    RUNTIME_ID_TEMPLATE: settings.runtimeIdTemplate,
    RUNTIME_NAME_TEMPLATE: settings.runtimeNameTemplate,
    RUNTIME_DESCRIPTION_TEMPLATE: settings.runtimeDescriptionTemplate,
    HEARTBEAT_INTERVAL_SECONDS: String(settings.heartbeatInterval.toSeconds()),
    APIGATEWAY_REQUESTS_PER_SECOND: String(settings.apiGatewayRequestsPerSecond),
    CHANGE_BUFFER_SECONDS: String(settings.changeBuffer.toSeconds()),
    CHANGE_OVERLAP_SECONDS: String(settings.changeOverlap.toSeconds()),
    CHANGE_MAX_WINDOW_SECONDS: String(settings.changeMaxWindow.toSeconds()),
    RECONCILE_INTERVAL_SECONDS: String(settings.reconcileInterval.toSeconds()),
    ALLOW_EMPTY_LISTING_DELETES: String(settings.allowEmptyListingDeletes),
    CHUNK_SIZE: String(settings.chunkSize),
    METRICS_INTERVAL_SECONDS: String(settings.metricsInterval.toSeconds()),
    METRICS_BUFFER_SECONDS: String(settings.metricsBuffer.toSeconds()),
    METRICS_FETCH_INTERVAL_SECONDS: String(settings.metricsFetchInterval.toSeconds()),
    METRICS_BACKFILL_SECONDS: String(settings.metricsBackfill.toSeconds()),
    METRICS_MAX_WINDOWS_PER_RUN: String(settings.metricsMaxWindowsPerRun),
    CLAIM_TTL_SECONDS: String(settings.claimTtl.toSeconds()),
    DISCOVERY_INTERVAL_SECONDS: String(settings.discoveryInterval.toSeconds()),
    ORPHAN_GRACE_SECONDS: String(settings.orphanGrace.toSeconds()),
    // The cross-checks with the schedule and the workflow's type run at cold start too.
    SCHEDULE_RATE_MINUTES: String(settings.scheduleRate.toMinutes()),
    EXPRESS: String(settings.express),
    TARGET_ACCOUNTS: Array.isArray(settings.targetAccounts) ? settings.targetAccounts.join(',') : settings.targetAccounts,
    TARGET_ROLE_NAME: settings.targetRoleName,
    TARGET_CONCURRENCY: String(settings.targetConcurrency),
    PUSH_MODE: String(settings.pushMode),
    ...(Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)) as Record<string, string>),
  };
}
