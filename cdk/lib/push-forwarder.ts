// Push mode across accounts and regions: API Gateway's management calls reach EventBridge's default bus of the
// account-region they are made in, as "AWS API Call via CloudTrail" events. A rule there forwards them to the
// agent's push bus (`<stackName>-push`, in the agent's account and region), whose rule feeds the push queue.
// One CloudFormation template, rolled out two ways from this app, as the member role is:
// - by a service-managed StackSet of the agent's stack, to the accounts of the named organizational units, in
//   every target region (TARGET_ACCOUNTS=organization with TARGET_ORGANIZATIONAL_UNITS);
// - as the stack `<stackName>-PushForwarder`, deployed by hand in each other target account-region (listed
//   accounts, the home account's other regions, the management account): `cdk deploy <stackName>-PushForwarder
//   --parameters PushBusArn=<the agent stack's PushBusArn output>` with that account's credentials and region.
import { CfnCondition, CfnResource, Fn, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { declareParameters } from './member-role.ts';

/**
 * The events push mode reacts to: API Gateway's management calls as CloudTrail records them. Read-only calls
 * never reach a rule in state ENABLED, so the pattern need not filter them out.
 */
export const PUSH_EVENT_PATTERN = {
  source: ['aws.apigateway'],
  'detail-type': ['AWS API Call via CloudTrail'],
  detail: { eventSource: ['apigateway.amazonaws.com'] },
};

/** Where the push bus is, as far as known at synth. */
export interface PushBusLocation {
  /** The agent's account: the default of AgentAccountId (which the StackSet always sets). */
  readonly account?: string;
}

/**
 * The forwarder's template: a rule on the default bus with the push pattern, whose target is the push bus
 * (PushBusArn), through a role allowed only events:PutEvents on that bus. Nothing is created in the push bus's
 * own account-region (AgentAccountId and AgentRegion), whose events the agent's own rule already reads.
 */
export function pushForwarderTemplate(location: PushBusLocation = {}): Record<string, unknown> {
  return {
    AWSTemplateFormatVersion: '2010-09-09',
    Description: "Forwards this account-region's API Gateway management events to the API Gateway agent's push bus",
    Parameters: {
      PushBusArn: {
        Type: 'String',
        AllowedPattern: '^arn:aws[a-z-]*:events:[a-z0-9-]+:\\d{12}:event-bus/[A-Za-z0-9._-]+$',
        Description: "The agent's push bus (the PushBusArn output of the agent's stack)",
      },
      AgentAccountId: {
        Type: 'String',
        Default: location.account ?? '',
        AllowedPattern: '^(\\d{12})?$',
        Description: "The push bus's account: with AgentRegion, where no forwarder is needed (optional)",
      },
      AgentRegion: {
        Type: 'String',
        Default: '',
        AllowedPattern: '^([a-z]{2}(-[a-z]+)+-\\d)?$',
        Description: "The push bus's region: with AgentAccountId, where no forwarder is needed (optional)",
      },
    },
    // CloudFormation's conditions cannot read the account and region out of the bus's ARN: they are parameters.
    Conditions: {
      Forwards: {
        'Fn::Not': [
          {
            'Fn::And': [
              { 'Fn::Equals': [{ Ref: 'AWS::AccountId' }, { Ref: 'AgentAccountId' }] },
              { 'Fn::Equals': [{ Ref: 'AWS::Region' }, { Ref: 'AgentRegion' }] },
            ],
          },
        ],
      },
    },
    Resources: {
      ForwarderRole: {
        Type: 'AWS::IAM::Role',
        Condition: 'Forwards',
        Properties: {
          // No name: the StackSet deploys one per region, and IAM is global.
          Description: "Puts this account-region's API Gateway management events on the API Gateway agent's push bus",
          MaxSessionDuration: 3600,
          AssumeRolePolicyDocument: {
            Version: '2012-10-17',
            Statement: [
              {
                Effect: 'Allow',
                Principal: { Service: 'events.amazonaws.com' },
                Action: 'sts:AssumeRole',
                Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
              },
            ],
          },
          Policies: [
            {
              PolicyName: 'PutEventsOnThePushBus',
              PolicyDocument: {
                Version: '2012-10-17',
                Statement: [{ Effect: 'Allow', Action: 'events:PutEvents', Resource: { Ref: 'PushBusArn' } }],
              },
            },
          ],
        },
      },
      ForwardRule: {
        Type: 'AWS::Events::Rule',
        Condition: 'Forwards',
        Properties: {
          Description: "API Gateway management calls, to the API Gateway agent's push bus",
          EventBusName: 'default',
          EventPattern: PUSH_EVENT_PATTERN,
          State: 'ENABLED',
          Targets: [{ Id: 'PushBus', Arn: { Ref: 'PushBusArn' }, RoleArn: { 'Fn::GetAtt': ['ForwarderRole', 'Arn'] } }],
        },
      },
    },
  };
}

/** The forwarder as a stack of its own, for account-regions the StackSet does not reach. */
export class PushForwarderStack extends Stack {
  constructor(scope: Construct, id: string, props: StackProps & { location?: PushBusLocation }) {
    super(scope, id, props);
    const template = pushForwarderTemplate(props.location) as {
      Description: string;
      Parameters: Record<string, Record<string, unknown>>;
      Resources: Record<string, { Type: string; Condition?: string; Properties: Record<string, unknown> }>;
    };
    declareParameters(this, template.Parameters);
    this.templateOptions.description = template.Description;
    const forwards = new CfnCondition(this, 'Forwards', {
      expression: Fn.conditionNot(
        Fn.conditionAnd(
          Fn.conditionEquals(Fn.ref('AWS::AccountId'), Fn.ref('AgentAccountId')),
          Fn.conditionEquals(Fn.ref('AWS::Region'), Fn.ref('AgentRegion')),
        ),
      ),
    });
    forwards.overrideLogicalId('Forwards');
    for (const [logicalId, resource] of Object.entries(template.Resources)) {
      const cfn = new CfnResource(this, logicalId, { type: resource.Type, properties: resource.Properties });
      cfn.overrideLogicalId(logicalId);
      if (resource.Condition === 'Forwards') cfn.cfnOptions.condition = forwards;
    }
  }
}
