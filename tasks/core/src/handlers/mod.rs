//! The tasks (the workflow's five, the fan-out's and the tick), each a plain async function over the adapters' traits so tests can call it
//! with stand-ins. `main.rs` of each Lambda only wires real clients to one of these.

pub mod ack_watermark;
pub mod ensure_runtime;
pub mod fan_out;
pub mod list_changes;
pub mod publish;
pub mod push;
pub mod tick;
pub mod transform;

use std::collections::BTreeMap;

use crate::aws::apigateway::{ApiGateway, DeployedApi, routes_to};
use crate::aws::executions::Executions;
use crate::aws::state::{Claim, ClaimOn, Discovery, StateStore, listing_key};
use crate::changes::split_by_bytes;
use crate::config::ApiTypes;
use crate::error::Result;

/// What the account deploys to each stage, by stage name.
pub(crate) type Deployments = BTreeMap<String, Vec<DeployedApi>>;

/// Stored listing parts expire by the table's TTL well after anyone may reuse them.
const LISTING_TTL_SECONDS: i64 = 3600;

/// How long the listing's claim outlives an execution that died listing: Lambda's longest
/// timeout, the longest a listing can go on.
const LISTING_CLAIM_SECONDS: i64 = 900;

/// Claims `on` for the execution `me` for `ttl` seconds. A claim another execution holds is
/// taken over at once when that execution has ended (stopped, timed out, or failed with an error
/// no `Catch` sees, such as `States.DataLimitExceeded`); while it runs, or when that cannot be
/// told (an Express execution), the answer names it.
pub(crate) async fn acquire(
    state: &impl StateStore,
    executions: &impl Executions,
    on: ClaimOn<'_>,
    me: &str,
    now: i64,
    ttl: i64,
) -> Result<Claim> {
    let expires_at = now + ttl;
    let holder = match state.claim(on, me, now, expires_at).await? {
        Claim::Taken => return Ok(Claim::Taken),
        Claim::HeldBy(Some(holder)) => holder,
        // Released between the claim and the read: the next run takes it.
        Claim::HeldBy(None) => return Ok(Claim::HeldBy(None)),
    };
    let running = executions.is_running(&holder).await.unwrap_or_else(|error| {
        tracing::warn!(?on, holder, %error, "cannot tell whether the claim's holder still runs");
        true
    });
    if running {
        return Ok(Claim::HeldBy(Some(holder)));
    }
    tracing::info!(?on, holder, "the execution holding the claim has ended; taking it over");
    Ok(match state.take_over(on, &holder, me, expires_at).await? {
        true => Claim::Taken,
        false => Claim::HeldBy(None),
    })
}

/// A listing of the account, or who else is listing it.
pub(crate) enum AccountListing {
    Listed(Deployments),
    /// Another execution lists the account now (named when known).
    ListedElsewhere(Option<String>),
}

/// Lists the account under the listing's claim, so that overlapping executions never list it at
/// once: API Gateway's quota is the account's, whatever the number of executions.
pub(crate) async fn list_account(
    gateway: &impl ApiGateway,
    state: &impl StateStore,
    executions: &impl Executions,
    types: &ApiTypes,
    me: &str,
    now: i64,
) -> Result<AccountListing> {
    if let Claim::HeldBy(holder) = acquire(state, executions, ClaimOn::Listing, me, now, LISTING_CLAIM_SECONDS).await? {
        tracing::info!(?holder, "another execution lists the account");
        return Ok(AccountListing::ListedElsewhere(holder));
    }
    let listed = deployments_by_stage(gateway, types).await;
    if let Err(error) = state.release(ClaimOn::Listing, me).await {
        tracing::warn!(%error, "the listing's claim was not released; it is taken over once this execution ends");
    }
    listed.map(AccountListing::Listed)
}

/// The APIs of the selected kinds deployed to each stage, sorted by API id (stages without a
/// deployment serve nothing), with their custom domain routes: per management API one listing
/// of the APIs, one GetStages per API, and (when something is deployed) one listing of the
/// domain names and one of each domain's mappings. The least API Gateway allows.
pub(crate) async fn deployments_by_stage(gateway: &impl ApiGateway, types: &ApiTypes) -> Result<Deployments> {
    let mut by_stage = Deployments::new();
    for generation in types.generations() {
        let mut deployed = Vec::new();
        for api in gateway.list_apis(generation).await? {
            if !types.includes(api.kind) {
                continue;
            }
            for stage in gateway.get_stages(generation, &api.id).await? {
                if stage.deployment_id.is_some() {
                    deployed.push((api.clone(), stage));
                }
            }
        }
        if deployed.is_empty() {
            continue;
        }
        let mappings = gateway.list_domain_mappings(generation).await?;
        for (api, stage) in deployed {
            let domains = routes_to(&mappings, &api.id, &stage.name);
            by_stage.entry(stage.name.clone()).or_default().push(DeployedApi { api, stage, domains });
        }
    }
    for apis in by_stage.values_mut() {
        apis.sort_by(|a, b| a.api.id.cmp(&b.api.id));
    }
    Ok(by_stage)
}

/// Records a discovery the execution `execution_id` made at `at`. With `keep_listing`, the
/// listing itself is stored too, in parts that fit DynamoDB items, so the same execution's full
/// sync does not list the account again.
pub(crate) async fn save_discovery(
    state: &impl StateStore,
    listing: &Deployments,
    execution_id: &str,
    at: i64,
    keep_listing: bool,
) -> Result<()> {
    let mut listing_parts = BTreeMap::new();
    if keep_listing {
        for (stage, apis) in listing {
            let parts = split_by_bytes(apis);
            for (index, part) in parts.iter().enumerate() {
                state.put_snapshot(&listing_key(at, stage, index), part, at + LISTING_TTL_SECONDS).await?;
            }
            listing_parts.insert(stage.clone(), parts.len());
        }
    }
    let stages = listing.keys().cloned().collect();
    state.save_discovery(&Discovery { stages, at, execution_id: execution_id.to_owned(), listing_parts }).await
}

/// The stored listing of `stage` in `discovery`; `None` when the stage was not listed or a part
/// cannot be read, so the caller lists API Gateway rather than act on part of a listing.
pub(crate) async fn stored_deployments(
    state: &impl StateStore,
    discovery: &Discovery,
    stage: &str,
) -> Option<Vec<DeployedApi>> {
    let parts = *discovery.listing_parts.get(stage)?;
    let mut apis = Vec::new();
    for index in 0..parts {
        match state.load_snapshot(&listing_key(discovery.at, stage, index)).await {
            Ok(part) => apis.extend(part),
            Err(error) => {
                tracing::warn!(stage, %error, "stored listing unreadable; listing API Gateway instead");
                return None;
            }
        }
    }
    Some(apis)
}

#[cfg(test)]
mod tests;
