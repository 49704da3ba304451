//! `check-settings`: validates the agent's settings, given as the functions' environment
//! variables plus the deployment's own (SCHEDULE_RATE_MINUTES, SYNC_LAG_THRESHOLD_MINUTES,
//! EXPRESS, FUNCTION_MEMORY_MB, LOG_RETENTION_DAYS, SCHEDULE_ENABLED), with the rules the
//! functions apply at cold start. The CDK app runs it at synth.
//!
//! Prints the normalized settings as one JSON object (keys: the CDK context keys) on stdout and
//! exits 0, or prints `invalid configuration VARIABLE: reason` on stderr and exits 1.

use std::process::ExitCode;

use agent_settings::{Scope, Settings};

fn main() -> ExitCode {
    match Settings::from_env(Scope::Deployment) {
        Ok(settings) => match serde_json::to_string(&settings) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("cannot print the settings: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
