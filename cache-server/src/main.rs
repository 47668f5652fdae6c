//! `cache-server`: runs one cachelet node. See `cache-server --help`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = cache_server::cli::Args::parse();
    cache_server::cli::run(args, cache_server::cli::shutdown_signal()).await
}
