//! Logging setup. Log lines carry interaction, resource type, id and status, never resource content
//! or search values: both are protected health information.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; `format` is `text` or `json`. Level from `RUST_LOG`
/// (default `info`).
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
