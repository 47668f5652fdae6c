//! `cache-server`: runs one cachelet node. See `cache-server --help`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// jemalloc, unless the `jemalloc` feature is off: it holds less freed memory than the system
/// allocator (see the README's "Memory").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,s3s=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cache_server::cli::Args::parse();
    cache_server::cli::runtime(&args)?.block_on(async {
        cache_server::cli::run(args, cache_server::cli::shutdown_signal()).await
    })
}
