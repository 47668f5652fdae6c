//! `cache-bench`: the demo and load tests for cachelet. See `cache-bench --help`.

use std::process::ExitCode;

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
    /// A correctness run: real cache-server processes under changes of members, kills,
    /// stops and store outages; every op is recorded and the history checked. Exits with 2
    /// when the checker finds anomalies.
    Check(Box<cache_bench::check::CheckArgs>),
    /// The ring at scale: the balance of shares, keys moved by a join or a leave, and the
    /// time and memory of a rebuild, for several member counts and points per member.
    Ring(cache_bench::ring::RingArgs),
    /// The S3 endpoint against moto, Azurite and `CacheClient::get`: GetObject latency, and
    /// the throughput of a large object on a miss and cached.
    S3(cache_bench::s3::S3Args),
    /// Measures for `s3`, in a process whose environment points at Azurite.
    #[command(hide = true)]
    S3Client(Box<cache_bench::s3::S3ClientArgs>),
    /// Holds a read lease on one key until killed (the process `modes` stops).
    #[command(hide = true)]
    Hold(cache_bench::modes::HoldArgs),
    /// Runs one cache-server node, exactly as the cache-server binary does (used by `check`
    /// when no cache-server binary is at hand).
    #[command(hide = true)]
    Node(Box<cache_server::cli::Args>),
}

/// The exit code of a check that found anomalies.
const ANOMALIES_FOUND: u8 = 2;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    // A node logs at info by default, as cache-server does: its address is in that log.
    let default_filter = match cli.command {
        Command::Node(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Demo(args) => cache_bench::demo::run(args).await?,
        Command::Run(args) => {
            cache_bench::bench::run(*args, cache_bench::bench::Missing::Fail).await?;
        }
        Command::GenTrace(args) => {
            cache_bench::trace::generate(&args)?;
            println!("trace written to {}", args.out.display());
        }
        Command::Ping(args) => cache_bench::ping::run(args).await?,
        Command::Modes(args) => cache_bench::modes::run(args).await?,
        Command::Hold(args) => cache_bench::modes::hold(args).await?,
        Command::S3(args) => cache_bench::s3::run(args).await?,
        Command::Ring(args) => cache_bench::ring::run(&args)?,
        Command::S3Client(args) => cache_bench::s3::measure(*args).await?,
        Command::Scale(args) => {
            cache_bench::scale::run(args).await?;
        }
        Command::Check(args) => {
            let summary = cache_bench::check::run(*args).await?;
            if summary.anomalies_total > 0 {
                eprintln!(
                    "cache-bench check: FAILED: the checker found {} anomalies ({} lost writes); \
                     see the table and the first anomalies above",
                    summary.anomalies_total, summary.lost_writes
                );
                return Ok(ExitCode::from(ANOMALIES_FOUND));
            }
            println!("cache-bench check: no anomalies");
        }
        Command::Node(args) => {
            cache_server::cli::run(*args, cache_server::cli::shutdown_signal()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
