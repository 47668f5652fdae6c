//! Load generation and the demo for cachelet.
//!
//! # Layout
//! - [`workload`]: reproducible synthetic request sequences (Zipf or uniform keys, a read
//!   ratio, a seed).
//! - [`runner`]: runs a sequence through a `CacheClient` with many requests in flight and
//!   measures hit ratios by tier, latency percentiles and throughput.
//! - [`demo`]: `cache-bench demo`, the project's main job.
//! - [`modes`]: the local tier's hit ratio and each consistency mode's cost.
//! - [`ping`]: one-request-at-a-time get latency, cachelet against `redis-server`.
//! - [`redis_server`]: a `redis-server` process on a free port, for baselines.
//! - [`scale`]: `cache-bench scale`, scale events under load: handoff, drain, pre-warming.
//! - [`report`]: the terminal table.
//!
//! A run flows: [`workload::Workload::generate`] → [`runner::run`] (client → nodes → store)
//! → counters from the client and the nodes → [`report::Table`].

pub mod demo;
pub mod modes;
pub mod ping;
pub mod redis_server;
pub mod report;
pub mod runner;
pub mod scale;
pub mod workload;
