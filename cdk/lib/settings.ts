// The deployment's settings: typed props of the stack, each also readable from CDK context
// (`cdk deploy -c controlPlaneUrl=https://...`). They become the functions' environment, which
// the Rust side validates again at cold start (tasks/core/src/config.rs).
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
  /** APIGATEWAY_REQUESTS_PER_SECOND: the agent's share of API Gateway's quota (10/s per account and region). */
  readonly apiGatewayRequestsPerSecond: number;
  /** How often the schedule starts an execution. */
  readonly scheduleRate: Duration;
  readonly scheduleEnabled: boolean;
  /** An Express workflow instead of a Standard one (cheaper; executions end after 5 minutes). */
  readonly express: boolean;
  readonly functionMemoryMb: number;
  readonly logRetention: RetentionDays;
  /** Alarm when the newest acked watermark of a branch is older than this. */
  readonly syncLagThreshold: Duration;
  /** SNS topic notified of alarms (and of their recovery). */
  readonly alarmTopicArn?: string;
}

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
  apiGatewayRequestsPerSecond: 5,
  scheduleRate: Duration.minutes(1),
  scheduleEnabled: true,
  express: false,
  functionMemoryMb: 256,
  logRetention: RetentionDays.ONE_MONTH,
  syncLagThreshold: Duration.minutes(30),
} satisfies Partial<AgentSettings>;

type Lookup = (key: string) => unknown;

/** Settings from CDK context values; anything missing takes its default. Throws naming the key. */
export function settingsFromContext(lookup: Lookup): AgentSettings {
  const text = (key: string): string | undefined => {
    const value = lookup(key);
    if (value === undefined || value === null || value === '') return undefined;
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
      throw new Error(`context ${key} must be a string`);
    }
    return String(value);
  };
  const integer = (key: string, fallback: number, min = 0): number => {
    const value = text(key);
    if (value === undefined) return fallback;
    if (!/^\d+$/.test(value) || Number(value) < min) throw new Error(`context ${key}=${value} must be a whole number >= ${min}`);
    return Number(value);
  };
  const seconds = (key: string, fallback: Duration, min = 0) =>
    Duration.seconds(integer(key, fallback.toSeconds(), min));
  const rate = (key: string, fallback: number): number => {
    const value = text(key);
    if (value === undefined) return fallback;
    const parsed = Number(value);
    if (!(parsed > 0 && parsed <= 10)) throw new Error(`context ${key}=${value} must be above 0 and at most 10`);
    return parsed;
  };
  const flag = (key: string, fallback: boolean): boolean => {
    const value = text(key);
    if (value === undefined) return fallback;
    if (value !== 'true' && value !== 'false') throw new Error(`context ${key}=${value} must be true or false`);
    return value === 'true';
  };
  const list = (key: string, fallback: string[]): string[] => {
    const value = lookup(key);
    if (Array.isArray(value)) return value.map(String);
    const joined = text(key);
    return joined === undefined ? fallback : joined.split(',').map((s) => s.trim()).filter(Boolean);
  };

  const controlPlaneUrl = text('controlPlaneUrl');
  if (!controlPlaneUrl || !/^https:\/\//.test(controlPlaneUrl)) {
    throw new Error('context controlPlaneUrl is required and must start with https:// (cdk deploy -c controlPlaneUrl=https://...)');
  }
  const retention = integer('logRetentionDays', DEFAULTS.logRetention, 1);
  if (!Object.values(RetentionDays).includes(retention)) {
    throw new Error(`context logRetentionDays=${retention} is not a CloudWatch Logs retention`);
  }
  const metricsInterval = seconds('metricsIntervalSeconds', DEFAULTS.metricsInterval, 60);
  const metricsFetchInterval = seconds('metricsFetchIntervalSeconds', DEFAULTS.metricsFetchInterval);
  const metricsMaxWindowsPerRun = integer('metricsMaxWindowsPerRun', DEFAULTS.metricsMaxWindowsPerRun, 1);
  if (metricsMaxWindowsPerRun * metricsInterval.toSeconds() < metricsFetchInterval.toSeconds()) {
    throw new Error('context metricsMaxWindowsPerRun times metricsIntervalSeconds must cover metricsFetchIntervalSeconds');
  }
  const isApiType = (t: string): t is ApiType => (API_TYPES as readonly string[]).includes(t);
  const requestedTypes = list('apiTypes', DEFAULTS.apiTypes).map((t) => t.toUpperCase());
  const apiTypes = requestedTypes.filter(isApiType);
  if (apiTypes.length === 0 || apiTypes.length !== requestedTypes.length) {
    const unknown = requestedTypes.find((t) => !isApiType(t));
    throw new Error(`context apiTypes must list some of ${API_TYPES.join(', ')}${unknown ? ` (not ${unknown})` : ''}`);
  }
  return {
    controlPlaneUrl,
    controlPlaneSecretArn: text('controlPlaneSecretArn'),
    controlPlaneCaBundle: text('controlPlaneCaBundle'),
    controlPlaneTimeout: seconds('controlPlaneTimeoutSeconds', DEFAULTS.controlPlaneTimeout, 1),
    runtimeType: text('runtimeType') ?? DEFAULTS.runtimeType,
    stages: list('stages', DEFAULTS.stages),
    apiTypes,
    runtimeIdTemplate: text('runtimeIdTemplate') ?? DEFAULTS.runtimeIdTemplate,
    runtimeNameTemplate: text('runtimeNameTemplate') ?? DEFAULTS.runtimeNameTemplate,
    runtimeDescriptionTemplate: text('runtimeDescriptionTemplate') ?? DEFAULTS.runtimeDescriptionTemplate,
    runtimeLocation: text('runtimeLocation'),
    runtimeTags: list('runtimeTags', DEFAULTS.runtimeTags),
    runtimeCapacity: text('runtimeCapacity'),
    heartbeatInterval: seconds('heartbeatIntervalSeconds', DEFAULTS.heartbeatInterval, 1),
    apiGatewayRequestsPerSecond: rate('apiGatewayRequestsPerSecond', DEFAULTS.apiGatewayRequestsPerSecond),
    changeBuffer: seconds('changeBufferSeconds', DEFAULTS.changeBuffer),
    changeOverlap: seconds('changeOverlapSeconds', DEFAULTS.changeOverlap),
    changeMaxWindow: seconds('changeMaxWindowSeconds', DEFAULTS.changeMaxWindow, 60),
    reconcileInterval: seconds('reconcileIntervalSeconds', DEFAULTS.reconcileInterval, 60),
    allowEmptyListingDeletes: flag('allowEmptyListingDeletes', DEFAULTS.allowEmptyListingDeletes),
    chunkSize: integer('chunkSize', DEFAULTS.chunkSize, 1),
    metricsInterval,
    metricsBuffer: seconds('metricsBufferSeconds', DEFAULTS.metricsBuffer),
    metricsFetchInterval,
    metricsBackfill: seconds('metricsBackfillSeconds', DEFAULTS.metricsBackfill),
    metricsMaxWindowsPerRun,
    claimTtl: seconds('claimTtlSeconds', DEFAULTS.claimTtl, 60),
    discoveryInterval: seconds('discoveryIntervalSeconds', DEFAULTS.discoveryInterval),
    scheduleRate: Duration.minutes(integer('scheduleRateMinutes', DEFAULTS.scheduleRate.toMinutes(), 1)),
    scheduleEnabled: flag('scheduleEnabled', DEFAULTS.scheduleEnabled),
    express: flag('express', DEFAULTS.express),
    functionMemoryMb: integer('functionMemoryMb', DEFAULTS.functionMemoryMb, 128),
    logRetention: retention,
    syncLagThreshold: Duration.minutes(integer('syncLagThresholdMinutes', DEFAULTS.syncLagThreshold.toMinutes(), 1)),
    alarmTopicArn: text('alarmTopicArn'),
  };
}

/** The environment variables of tasks/core/src/config.rs, less the table and the secret. */
export function functionEnvironment(settings: AgentSettings): Record<string, string> {
  const optional: Record<string, string | undefined> = {
    APICP_CA_BUNDLE: settings.controlPlaneCaBundle,
    RUNTIME_LOCATION: settings.runtimeLocation,
    RUNTIME_CAPACITY: settings.runtimeCapacity,
    RUNTIME_TAGS: settings.runtimeTags.length ? settings.runtimeTags.join(',') : undefined,
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
    ...(Object.fromEntries(Object.entries(optional).filter(([, v]) => v !== undefined)) as Record<string, string>),
  };
}
