// The read-only role the agent assumes in every target account but its own (TARGET_ROLE_NAME): one
// CloudFormation template, rolled out two ways from this app:
// - by a service-managed StackSet of the agent's stack, deployed automatically to the accounts of the
//   named organizational units (TARGET_ACCOUNTS=organization with TARGET_ORGANIZATIONAL_UNITS);
// - as the stack `<stackName>-MemberRole`, deployed by hand in accounts outside them
//   (`cdk deploy <stackName>-MemberRole` with the member account's credentials).
// IAM is global: one region per account.
import { CfnCondition, CfnParameter, CfnResource, Fn, Stack, type StackProps, Validations } from 'aws-cdk-lib';
import type { Construct } from 'constructs';

import { apiGatewayPaths } from './agent-stack.ts';
import type { AgentSettings } from './settings.ts';


/** Where the agent runs, as the member role's trust policy names it. */
export interface AgentPrincipal {
  /** The account the agent is deployed in (a parameter without default when unknown at synth). */
  readonly account?: string;
  /** The agent's stack name: its function roles' names start with it. */
  readonly stackName: string;
  /** The organization (o-...) whose principals alone may assume the role; a parameter when unknown. */
  readonly organizationId?: string;
}

/**
 * The member role's template: a role named TARGET_ROLE_NAME that only the agent's function roles may assume
 * (the agent's account, roles named after its stack, the external id when one is set, within the organization
 * when its id is given), allowed only the reads the agent makes of a target.
 */
export function memberRoleTemplate(settings: AgentSettings, agent: AgentPrincipal): Record<string, unknown> {
  const externalId = settings.targetRoleExternalId;
  const conditions: Record<string, Record<string, unknown>> = {
    ArnLike: { 'aws:PrincipalArn': { 'Fn::Sub': `arn:\${AWS::Partition}:iam::\${AgentAccountId}:role/\${AgentStackName}-*` } },
  };
  if (externalId) conditions.StringEquals = { 'sts:ExternalId': externalId };
  return {
    AWSTemplateFormatVersion: '2010-09-09',
    Description: `Read-only role ${settings.targetRoleName} the API Gateway agent assumes to federate this account's APIs`,
    Parameters: {
      AgentAccountId: {
        Type: 'String',
        ...(agent.account ? { Default: agent.account } : {}),
        AllowedPattern: '^\\d{12}$',
        Description: 'The account the agent runs in',
      },
      AgentStackName: { Type: 'String', Default: agent.stackName, Description: "The agent's stack name (its function roles' prefix)" },
      OrganizationId: {
        Type: 'String',
        Default: agent.organizationId ?? '',
        AllowedPattern: '^(o-[a-z0-9]{10,32})?$',
        Description: 'o-...: only principals of this organization may assume the role (optional)',
      },
    },
    Conditions: { HasOrganization: { 'Fn::Not': [{ 'Fn::Equals': [{ Ref: 'OrganizationId' }, ''] }] } },
    Resources: {
      ReaderRole: {
        Type: 'AWS::IAM::Role',
        Properties: {
          RoleName: settings.targetRoleName,
          Description: 'Read-only access of the API Gateway agent (webMethods API Control Plane federation)',
          MaxSessionDuration: 3600,
          AssumeRolePolicyDocument: {
            Version: '2012-10-17',
            Statement: [
              {
                Effect: 'Allow',
                Principal: { AWS: { 'Fn::Sub': 'arn:${AWS::Partition}:iam::${AgentAccountId}:root' } },
                Action: 'sts:AssumeRole',
                Condition: {
                  'Fn::If': [
                    'HasOrganization',
                    { ...conditions, StringEquals: { ...conditions.StringEquals, 'aws:PrincipalOrgID': { Ref: 'OrganizationId' } } },
                    conditions,
                  ],
                },
              },
            ],
          },
          Policies: [
            {
              PolicyName: 'ApiGatewayAgentReads',
              PolicyDocument: {
                Version: '2012-10-17',
                Statement: [
                  {
                    Sid: 'ApiGatewayReads',
                    Effect: 'Allow',
                    Action: 'apigateway:GET',
                    // What the functions read at home, of the selected API types, in every region: the role is global.
                    Resource: apiGatewayPaths(settings.apiTypes).map((path) => ({
                      'Fn::Sub': `arn:\${AWS::Partition}:apigateway:*::${path}`,
                    })),
                  },
                  {
                    Sid: 'ChangesAndMetrics',
                    Effect: 'Allow',
                    // No resource-level permissions exist for these.
                    Action: ['cloudtrail:LookupEvents', 'cloudwatch:GetMetricData', 'cloudwatch:ListMetrics'],
                    Resource: '*',
                  },
                  ...(settings.pushMode ? trailDetectionStatements() : []),
                ],
              },
            },
          ],
        },
      },
    },
    Outputs: { ReaderRoleArn: { Value: { 'Fn::GetAtt': ['ReaderRole', 'Arn'] } } },
  };
}

/**
 * With push mode, whether a trail logs the account-region's management write events (else its changes reach
 * the agent only by polling): DescribeTrails supports no resource-level permission; an organization trail lives
 * in the management account, hence any account in the trails' ARN.
 */
export const TRAIL_DETECTION_ACTIONS = {
  anyResource: ['cloudtrail:DescribeTrails'],
  trails: ['cloudtrail:GetTrailStatus', 'cloudtrail:GetEventSelectors'],
} as const;

function trailDetectionStatements(): Record<string, unknown>[] {
  return [
    { Sid: 'TrailDetection', Effect: 'Allow', Action: [...TRAIL_DETECTION_ACTIONS.anyResource], Resource: '*' },
    {
      Sid: 'TrailStatus',
      Effect: 'Allow',
      Action: [...TRAIL_DETECTION_ACTIONS.trails],
      Resource: { 'Fn::Sub': 'arn:${AWS::Partition}:cloudtrail:*:*:trail/*' },
    },
  ];
}

/** The member role as a stack of its own, for accounts the StackSet does not reach (and the management account). */
/** The parameters of a raw template (one a StackSet deploys as it is) as parameters of the CDK stack that holds it. */
export function declareParameters(stack: Stack, parameters: Record<string, Record<string, unknown>>): void {
  for (const [name, parameter] of Object.entries(parameters)) {
    new CfnParameter(stack, name, {
      type: parameter.Type as string,
      default: parameter.Default,
      allowedPattern: parameter.AllowedPattern as string | undefined,
      description: parameter.Description as string,
    }).overrideLogicalId(name);
  }
}

export class MemberRoleStack extends Stack {
  constructor(scope: Construct, id: string, props: StackProps & { settings: AgentSettings; agent: AgentPrincipal }) {
    super(scope, id, props);
    const template = memberRoleTemplate(props.settings, props.agent) as {
      Description: string;
      Parameters: Record<string, Record<string, unknown>>;
      Conditions: Record<string, unknown>;
      Resources: Record<string, { Type: string; Properties: Record<string, unknown> }>;
    };
    declareParameters(this, template.Parameters);
    this.templateOptions.description = template.Description;
    new CfnCondition(this, 'HasOrganization', {
      expression: Fn.conditionNot(Fn.conditionEquals(Fn.ref('OrganizationId'), '')),
    }).overrideLogicalId('HasOrganization');
    for (const [logicalId, resource] of Object.entries(template.Resources)) {
      const role = new CfnResource(this, logicalId, { type: resource.Type, properties: resource.Properties });
      role.overrideLogicalId(logicalId);
      Validations.of(role).acknowledge({
        id: 'AwsSolutions-IAM5',
        reason:
          'Read-only: GET on every API, stage and custom domain of the account (the agent federates all of them, in ' +
          'every region), CloudTrail and CloudWatch reads that support no resource-level permissions, and with push ' +
          'mode the status of any trail (an organization trail lives in the management account).',
      });
    }
  }
}
