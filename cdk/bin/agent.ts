// `cdk deploy -c controlPlaneUrl=https://...`: the agent stack, checked by cdk-nag at synth.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { App, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';

import { AgentStack, fansOut } from '../lib/agent-stack.ts';
import { MemberRoleStack } from '../lib/member-role.ts';
import { PushForwarderStack } from '../lib/push-forwarder.ts';
import { type AgentSettings, settingsFromContext } from '../lib/settings.ts';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const app = new App();
let settings: AgentSettings;
try {
  settings = settingsFromContext((key) => app.node.tryGetContext(key));
} catch (error) {
  // The settings checker's message, naming the variable and the context key: no stack trace.
  console.error((error as Error).message);
  process.exit(1);
}
const stackName: string = app.node.tryGetContext('stackName') ?? 'ApiGatewayApicpAgent';
new AgentStack(app, stackName, {
  description: 'Federates Amazon API Gateway into webMethods API Control Plane',
  settings,
  lambdaAssetsDir: join(repo, 'target', 'lambda'),
  definitionFile: join(repo, 'statemachine', 'agent.asl.json'),
  fanOutDefinitionFile: join(repo, 'statemachine', 'targets.asl.json'),
});
// The member role for accounts the StackSet does not reach (`cdk deploy <stackName>-MemberRole` with a member
// account's credentials, `--parameters AgentAccountId=...` unless -c agentAccountId is given).
if (settings.targetAccounts !== 'self') {
  new MemberRoleStack(app, `${stackName}-MemberRole`, {
    description: 'The read-only role the API Gateway agent assumes in this account',
    settings,
    agent: {
      account: app.node.tryGetContext('agentAccountId'),
      stackName,
      organizationId: app.node.tryGetContext('organizationId'),
    },
  });
}
// Push mode over several account-regions: the rule forwarding API Gateway's events to the agent's push bus, for
// account-regions the StackSet does not reach (`cdk deploy <stackName>-PushForwarder --parameters
// PushBusArn=<the agent stack's PushBusArn output>` with the account's credentials, in each target region).
if (settings.pushMode && fansOut(settings)) {
  new PushForwarderStack(app, `${stackName}-PushForwarder`, {
    description: "Forwards this account-region's API Gateway management events to the API Gateway agent's push bus",
    location: { account: app.node.tryGetContext('agentAccountId') },
  });
}
Validations.of(app).addPlugins(new AwsSolutionsChecks(app));
