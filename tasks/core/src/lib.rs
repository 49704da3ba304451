//! The library of the Amazon API Gateway -> webMethods API Control Plane agent.
//!
//! - [`handlers`]: the five tasks of the state machine, over small traits;
//! - [`aws`] and [`control_plane`]: one module per external system, each a trait and an adapter;
//! - [`mapping`], [`changes`], [`metrics`]: the rules, as pure functions;
//! - [`model`]: the JSON contracts between tasks; [`config`]; [`error`]: the one error enum;
//! - [`target`]: the account-regions federated, and how each scopes the state;
//! - [`telemetry`]: the agent's own metrics (sync lag).

pub mod aws;
pub mod bootstrap;
pub mod changes;
pub mod config;
pub mod control_plane;
pub mod error;
pub mod handlers;
pub mod mapping;
pub mod metrics;
pub mod model;
pub mod target;
pub mod telemetry;

#[cfg(test)]
mod bad_input;
#[cfg(test)]
mod properties;

pub use error::{AgentError, Result};
