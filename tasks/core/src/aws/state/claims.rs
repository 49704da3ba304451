//! Claims: a conditional write that makes one execution the only one working on something
//! (a stage's branch, the account's listing) until it releases the claim or the claim expires.

use std::future::Future;

use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;

use super::progress::attributes;
use super::{DynamoStateStore, conditional_update, string};
use crate::error::Result;
use crate::model::Kind;

/// What a claim is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClaimOn<'a> {
    /// One branch's work on one stage: overlapping executions never publish the same work twice.
    Branch { stage: &'a str, kind: Kind },
    /// A listing of the account's APIs (a discovery or a full sync's listing): at most one at a
    /// time, so overlapping executions share API Gateway's quota instead of each listing it all.
    Listing,
}

/// The item holding the listing's claim.
const LISTING_ITEM: &str = "#lock#listing";

impl ClaimOn<'_> {
    /// The item and its two attributes: who holds the claim, and until when.
    fn location(&self) -> (&str, &'static str, &'static str) {
        match self {
            Self::Branch { stage, kind } => {
                let names = attributes(*kind);
                (stage, names.claimed_by, names.claim_expires_at)
            }
            Self::Listing => (LISTING_ITEM, "claimedBy", "claimExpiresAt"),
        }
    }
}

/// The outcome of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Taken,
    /// Another execution's live claim (unknown when it was released meanwhile).
    HeldBy(Option<String>),
}

pub trait Claims: Send + Sync {
    /// Claims `on` for `holder` until `expires_at`, unless another holder's claim is still live
    /// at `now`, whom the answer then names.
    fn claim(
        &self,
        on: ClaimOn<'_>,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> impl Future<Output = Result<Claim>> + Send;
    /// Takes the claim over from `previous` (an execution that has ended); `false` when someone
    /// else changed the claim meanwhile.
    fn take_over(
        &self,
        on: ClaimOn<'_>,
        previous: &str,
        holder: &str,
        expires_at: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Gives up `holder`'s claim; a claim someone else holds is left alone.
    fn release(&self, on: ClaimOn<'_>, holder: &str) -> impl Future<Output = Result<()>> + Send;
}

impl DynamoStateStore {
    fn claim_update(&self, on: ClaimOn<'_>, holder: &str) -> UpdateItemFluentBuilder {
        let (item, by, until) = on.location();
        self.update(item)
            .expression_attribute_names("#by", by)
            .expression_attribute_names("#until", until)
            .expression_attribute_values(":holder", AttributeValue::S(holder.to_owned()))
    }

    /// The update that makes `holder` hold the claim until `expires_at`.
    fn claim_set(&self, on: ClaimOn<'_>, holder: &str, expires_at: i64) -> UpdateItemFluentBuilder {
        self.claim_update(on, holder)
            .update_expression("SET #by = :holder, #until = :until")
            .expression_attribute_values(":until", AttributeValue::N(expires_at.to_string()))
    }
}

impl Claims for DynamoStateStore {
    async fn claim(&self, on: ClaimOn<'_>, holder: &str, now: i64, expires_at: i64) -> Result<Claim> {
        let request = self
            .claim_set(on, holder, expires_at)
            .condition_expression("attribute_not_exists(#by) OR #by = :holder OR #until < :now")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        if conditional_update(request).await? {
            return Ok(Claim::Taken);
        }
        let (item, by, _) = on.location();
        let item = self.item(item).await?.unwrap_or_default();
        Ok(Claim::HeldBy(string(&item, by)))
    }

    async fn take_over(&self, on: ClaimOn<'_>, previous: &str, holder: &str, expires_at: i64) -> Result<bool> {
        let request = self
            .claim_set(on, holder, expires_at)
            .condition_expression("#by = :previous")
            .expression_attribute_values(":previous", AttributeValue::S(previous.to_owned()));
        conditional_update(request).await
    }

    async fn release(&self, on: ClaimOn<'_>, holder: &str) -> Result<()> {
        let request =
            self.claim_update(on, holder).update_expression("REMOVE #by, #until").condition_expression("#by = :holder");
        // False: someone else holds the claim now, which is theirs to release.
        conditional_update(request).await.map(drop)
    }
}
