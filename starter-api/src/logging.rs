//! One tracing set-up for both binaries (the API and the worker, which may serve the API):
//! logs go to stderr, filtered by `RUST_LOG` (default `info`, the SDK core's chatter at
//! `warn`, the Vault client's own request logs off: they print paths, never needed twice);
//! `CERTFLOW_LOG_FORMAT=json` gives one JSON object per line.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,temporalio_sdk_core=warn,rustify=off,vaultrs=off")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("CERTFLOW_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
