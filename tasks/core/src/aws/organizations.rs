//! AWS Organizations: the accounts `TARGET_ACCOUNTS=organization` federates.

use std::future::Future;

use aws_sdk_organizations::types::{Account, AccountState, AccountStatus};

use super::sdk_error;
use crate::error::Result;

pub trait Organization: Send + Sync {
    /// The ids of the organization's ACTIVE accounts, sorted.
    fn active_accounts(&self) -> impl Future<Output = Result<Vec<String>>> + Send;

    /// The ids of the ACTIVE accounts under `parent` (an OU or the root) and its child OUs, sorted.
    fn active_accounts_under(&self, parent: &str) -> impl Future<Output = Result<Vec<String>>> + Send;
}

#[derive(Debug, Clone)]
pub struct SdkOrganization {
    client: aws_sdk_organizations::Client,
}

impl SdkOrganization {
    pub fn new(client: aws_sdk_organizations::Client) -> Self {
        Self { client }
    }
}

/// An account that is a member in good standing: `State` ACTIVE, or, where the service answers
/// only the older `Status`, ACTIVE there. Suspended, closing and pending accounts cannot be
/// reached (or soon cannot).
fn is_active(account: &Account) -> bool {
    match account.state() {
        Some(state) => *state == AccountState::Active,
        None => account.status() == Some(&AccountStatus::Active),
    }
}

fn active_ids<'a>(accounts: impl IntoIterator<Item = &'a Account>) -> impl Iterator<Item = String> {
    accounts.into_iter().filter(|a| is_active(a)).filter_map(|a| a.id().map(str::to_owned))
}

impl Organization for SdkOrganization {
    async fn active_accounts(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut pages = self.client.list_accounts().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("organizations:ListAccounts", e))?;
            ids.extend(active_ids(page.accounts()));
        }
        ids.sort();
        Ok(ids)
    }

    async fn active_accounts_under(&self, parent: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut parents = vec![parent.to_owned()];
        while let Some(parent) = parents.pop() {
            let mut accounts = self.client.list_accounts_for_parent().parent_id(&parent).into_paginator().send();
            while let Some(page) = accounts.next().await {
                let page = page.map_err(|e| sdk_error("organizations:ListAccountsForParent", e))?;
                ids.extend(active_ids(page.accounts()));
            }
            let mut units =
                self.client.list_organizational_units_for_parent().parent_id(&parent).into_paginator().send();
            while let Some(page) = units.next().await {
                let page = page.map_err(|e| sdk_error("organizations:ListOrganizationalUnitsForParent", e))?;
                parents.extend(page.organizational_units().iter().filter_map(|unit| unit.id().map(str::to_owned)));
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}
