//! Load generation and the demo for cachelet.
//!
//! # Layout
//! - [`workload`]: reproducible synthetic request sequences (Zipf, uniform or hotspot keys,
//!   value sizes, a read ratio, a seed) and the [`workload::Plan`] a run replays.
//! - [`trace`]: the Azure Functions Blob Access Trace 2020 schema: loading a trace for replay,
//!   and the synthetic generator behind `gen-trace`.
//! - [`runner`]: runs a plan against one system (cachelet, the bare store, or Redis as a
//!   cache-aside) with many requests in flight, and measures it.
//! - [`sim`]: offline OPT (Belady, sizes counted) and LRU simulators.
//! - [`bench`]: `cache-bench run`: the target, the baselines and the simulators in one run,
//!   then the table, the JSON and the plots.
//! - [`plot`]: the charts (`plotters`): hit ratio over time and latency CDFs.
//! - [`report`]: the terminal tables.
//! - [`demo`]: `cache-bench demo`, the project's main job, on the same machinery.
//! - [`ping`]: one-request-at-a-time get latency, cachelet against `redis-server`.
//! - [`redis_server`]: a `redis-server` process on a free port, for baselines.
//! - [`ring`]: `cache-bench ring`, the ring at scale: balance, moves, rebuild time and memory.
//! - [`s3`]: `cache-bench s3`, the S3 endpoint against moto, Azurite and `CacheClient::get`.
//! - [`modes`]: the local tier's hit ratio and each consistency mode's cost.
//! - [`scale`]: `cache-bench scale`, scale events under load: handoff, drain, pre-warming.
//! - [`security`]: `--security plain|token|tls` for the embedded cluster of `run` and `ping`.
//! - [`check`]: `cache-bench check`, a Jepsen-style correctness run: real `cache-server`
//!   processes under changes of members, kills, stops and store outages, every op recorded
//!   and the history checked.
//! - [`procs`]: `cache-server` and moto processes that can be killed, restarted, stopped and
//!   continued.
//!
//! A run flows: [`workload::Plan`] (synthetic or [`trace::load`]) → preload the store →
//! [`runner::drive`] per system (client → nodes → store) → [`sim::opt`] and [`sim::lru`] on the
//! same sequence → [`bench::Report`] → table, JSON, [`plot`].

pub mod bench;
pub mod check;
pub mod demo;
pub mod modes;
pub mod ping;
pub mod plot;
pub mod procs;
pub mod redis_server;
pub mod report;
pub mod ring;
pub mod runner;
pub mod s3;
pub mod scale;
pub mod security;
pub mod sim;
pub mod trace;
pub mod workload;
