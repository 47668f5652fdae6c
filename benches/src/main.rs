//! `cache-bench`: the demo and load tests for cachelet. See `cache-bench --help`.

use clap::{Parser, Subcommand};

/// Load tests and the demo for cachelet.
#[derive(Debug, Parser)]
#[command(name = "cache-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Three in-process nodes over a local-file store, a short Zipf workload with baselines,
    /// a table and charts.
    Demo(cache_bench::demo::DemoArgs),
    /// One workload (or a trace) against cachelet and the baselines, in one run.
    Run(Box<cache_bench::bench::RunArgs>),
    /// Write a synthetic trace in the Azure Functions Blob Access Trace 2020 schema.
    GenTrace(cache_bench::trace::GenTraceArgs),
    /// One-at-a-time get latency: cachelet against redis-server, side by side.
    Ping(cache_bench::ping::PingArgs),
    /// The local tier and the consistency modes: local-hit latency per mode, hit ratios.
    Modes(cache_bench::modes::ModesArgs),
    /// Scale events under load: scale-out with and without handoff, drain, pre-warming.
    Scale(cache_bench::scale::ScaleArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo(args) => cache_bench::demo::run(args).await,
        Command::Run(args) => cache_bench::bench::run(*args, cache_bench::bench::Missing::Fail)
            .await
            .map(drop),
        Command::GenTrace(args) => {
            cache_bench::trace::generate(&args)?;
            println!("trace written to {}", args.out.display());
            Ok(())
        }
        Command::Ping(args) => cache_bench::ping::run(args).await,
        Command::Modes(args) => cache_bench::modes::run(args).await,
        Command::Scale(args) => cache_bench::scale::run(args).await.map(|_| ()),
    }
}
