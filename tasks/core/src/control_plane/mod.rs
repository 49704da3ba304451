//! The webMethods API Control Plane: its contract types and its HTTP client.

mod client;
pub mod types;

pub use client::{ControlPlane, Credentials, CredentialsSource, HttpControlPlane, Upserted, status_error};
