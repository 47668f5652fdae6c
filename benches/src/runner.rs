//! Running a [`Plan`] against one [`System`] (cachelet, the bare store, or Redis as a
//! cache-aside) with many requests in flight, and measuring it: hit ratios by tier and by
//! app, latency histograms, throughput, bytes read from the store, and a timeline of samples
//! for plots and the progress bar.
//!
//! ```text
//!  Source (fixed plan, or a seeded stream until a deadline)
//!    │ next request (index, key, get/put, size)
//!    ▼
//!  C workers ──get/put──▶ System ──▶ cachelet nodes / blob store / redis-server
//!    │ latency, tier, per-app counts
//!    ▼
//!  Live counters ──every interval──▶ sampler ──▶ progress bar, timeline, scale events
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cache_client::{CacheClient, Tier};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::workload::{Generator, Plan, Request, request};

/// A system under test.
#[derive(Clone)]
pub enum System {
    /// cachelet, through its client.
    Cachelet(CacheClient),
    /// The blob store itself, with no cache.
    Store(Arc<dyn ObjectStore>),
    /// Redis as an external cache-aside in front of the store: get; on a miss read the store
    /// and set. A put writes the store, then sets.
    Redis {
        /// One multiplexed connection shared by every worker.
        con: redis::aio::MultiplexedConnection,
        /// The store behind it.
        store: Arc<dyn ObjectStore>,
    },
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a successful get found: the tier that served it and the bytes read from the store
/// for it (0 on a cache hit).
type Found = Option<(Tier, u64)>;

impl System {
    /// The system's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            System::Cachelet(_) => "cachelet",
            System::Store(_) => "store",
            System::Redis { .. } => "redis",
        }
    }

    async fn get(&self, key: &str) -> Result<Found, String> {
        match self {
            System::Cachelet(client) => match client.get_entry(key).await {
                Ok(found) => Ok(found.map(|f| (f.tier, 0))),
                Err(e) => Err(e.to_string()),
            },
            System::Store(store) => Ok(store_get(store, key)
                .await?
                .map(|v| (Tier::Store, v.len() as u64))),
            System::Redis { con, store } => {
                let mut con = con.clone();
                let cached: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key)
                    .query_async(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                if cached.is_some() {
                    // Redis holds its data in its own server process, a hop away: a remote hit.
                    return Ok(Some((Tier::Home, 0)));
                }
                let Some(value) = store_get(store, key).await? else {
                    return Ok(None);
                };
                redis::cmd("SET")
                    .arg(key)
                    .arg(value.as_ref())
                    .query_async::<()>(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Some((Tier::Store, value.len() as u64)))
            }
        }
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), String> {
        match self {
            System::Cachelet(client) => client
                .put(key, value)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            System::Store(store) => store_put(store, key, value).await,
            System::Redis { con, store } => {
                store_put(store, key, value.clone()).await?;
                let mut con = con.clone();
                redis::cmd("SET")
                    .arg(key)
                    .arg(value.as_ref())
                    .query_async::<()>(&mut con)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

async fn store_get(store: &Arc<dyn ObjectStore>, key: &str) -> Result<Option<Bytes>, String> {
    match store.get(&Path::from(key)).await {
        Ok(got) => got.bytes().await.map(Some).map_err(|e| e.to_string()),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

async fn store_put(store: &Arc<dyn ObjectStore>, key: &str, value: Bytes) -> Result<(), String> {
    store
        .put(&Path::from(key), PutPayload::from(value))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Gets counted by the tier that served them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TierCounts {
    /// In-process copies.
    pub local: u64,
    /// The home node's cache (for Redis: the Redis server).
    pub home: u64,
    /// The previous owner during a handoff.
    pub handoff: u64,
    /// The blob store.
    pub store: u64,
}

impl TierCounts {
    fn add(&mut self, tier: Tier) {
        match tier {
            Tier::Local => self.local += 1,
            Tier::Home => self.home += 1,
            Tier::Handoff => self.handoff += 1,
            Tier::Store => self.store += 1,
        }
    }

    fn merge(&mut self, other: TierCounts) {
        self.local += other.local;
        self.home += other.home;
        self.handoff += other.handoff;
        self.store += other.store;
    }

    /// Gets served by any cache tier.
    pub fn hits(&self) -> u64 {
        self.local + self.home + self.handoff
    }

    /// Gets that returned a value.
    pub fn total(&self) -> u64 {
        self.hits() + self.store
    }
}

/// One app's requests in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppCounts {
    /// Gets made.
    pub gets: u64,
    /// Gets served by a cache tier.
    pub hits: u64,
    /// Puts made.
    pub puts: u64,
}

/// The cumulative counters at one moment of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Requests finished.
    pub ops: u64,
    /// Gets that returned a value.
    pub gets: u64,
    /// Of those, served by a cache tier.
    pub hits: u64,
}

/// A change of the cluster's member list seen during a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScaleEvent {
    /// Milliseconds since the run started.
    pub t_ms: u64,
    /// The new epoch.
    pub epoch: u64,
    /// Members after the change.
    pub members: usize,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The system's name.
    pub system: String,
    /// Requests made.
    pub ops: u64,
    /// Gets made.
    pub gets: u64,
    /// Gets that returned a value, by tier.
    pub by_tier: TierCounts,
    /// Gets of blobs that did not exist.
    pub not_found: u64,
    /// Puts made.
    pub puts: u64,
    /// Requests that failed.
    pub errors: u64,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
    /// Latency of every request, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Latency of gets served by a cache tier.
    pub hit_latency_us: Histogram<u64>,
    /// Latency of gets served by the store.
    pub miss_latency_us: Histogram<u64>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Bytes read from the blob store.
    pub store_read_bytes: u64,
    /// Reads of the blob store.
    pub store_reads: u64,
    /// Counts per app (indexed like [`Plan::apps`]).
    pub per_app: Vec<AppCounts>,
    /// Cumulative counters over time.
    pub samples: Vec<Sample>,
    /// Member-list changes seen (cachelet only).
    pub scale_events: Vec<ScaleEvent>,
}

impl RunResult {
    fn empty(system: &str, apps: usize) -> Self {
        Self {
            system: system.to_owned(),
            ops: 0,
            gets: 0,
            by_tier: TierCounts::default(),
            not_found: 0,
            puts: 0,
            errors: 0,
            first_error: None,
            latency_us: histogram(),
            hit_latency_us: histogram(),
            miss_latency_us: histogram(),
            elapsed: Duration::ZERO,
            store_read_bytes: 0,
            store_reads: 0,
            per_app: vec![AppCounts::default(); apps],
            samples: Vec::new(),
            scale_events: Vec::new(),
        }
    }

    fn merge(&mut self, part: RunResult) {
        self.ops += part.ops;
        self.gets += part.gets;
        self.by_tier.merge(part.by_tier);
        self.not_found += part.not_found;
        self.puts += part.puts;
        self.errors += part.errors;
        if self.first_error.is_none() {
            self.first_error = part.first_error;
        }
        let _ = self.latency_us.add(&part.latency_us);
        let _ = self.hit_latency_us.add(&part.hit_latency_us);
        let _ = self.miss_latency_us.add(&part.miss_latency_us);
        self.store_read_bytes += part.store_read_bytes;
        self.store_reads += part.store_reads;
        for (a, b) in self.per_app.iter_mut().zip(part.per_app) {
            a.gets += b.gets;
            a.hits += b.hits;
            a.puts += b.puts;
        }
    }

    /// The share of gets (that returned a value) served from a cache tier.
    pub fn hit_ratio(&self) -> f64 {
        ratio(self.by_tier.hits(), self.by_tier.total())
    }

    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `num / den`, or 0 when `den` is 0.
pub fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// A latency histogram from 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Where the requests of a run come from.
#[derive(Debug)]
pub enum Source {
    /// A fixed sequence, each request once.
    Fixed {
        /// The sequence.
        requests: Arc<Vec<Request>>,
        /// The next index to hand out.
        next: AtomicUsize,
    },
    /// A seeded stream, drawn until the run's deadline; what was drawn is logged so that
    /// baselines and simulators replay exactly the same sequence.
    Stream(Box<std::sync::Mutex<StreamState>>),
}

/// The state of a [`Source::Stream`].
#[derive(Debug)]
pub struct StreamState {
    generator: Generator,
    sizes: Arc<Vec<u32>>,
    log: Vec<Request>,
}

impl Source {
    /// Every request of `requests`, in order.
    pub fn fixed(requests: Arc<Vec<Request>>) -> Self {
        Source::Fixed {
            requests,
            next: AtomicUsize::new(0),
        }
    }

    /// An endless stream from `generator`, each key with its size from `sizes`.
    pub fn stream(generator: Generator, sizes: Arc<Vec<u32>>) -> Self {
        Source::Stream(Box::new(std::sync::Mutex::new(StreamState {
            generator,
            sizes,
            log: Vec::new(),
        })))
    }

    fn next(&self, stop_at: Option<Instant>) -> Option<(usize, Request)> {
        if stop_at.is_some_and(|t| Instant::now() >= t) {
            return None;
        }
        match self {
            Source::Fixed { requests, next } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                requests.get(i).map(|r| (i, *r))
            }
            Source::Stream(state) => {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                let r = request(s.generator.next_op(), &s.sizes);
                s.log.push(r);
                Some((s.log.len() - 1, r))
            }
        }
    }

    /// The requests handed out, in order (for a fixed source, the whole sequence).
    pub fn into_requests(self) -> Arc<Vec<Request>> {
        match self {
            Source::Fixed { requests, .. } => requests,
            Source::Stream(state) => {
                Arc::new(state.into_inner().unwrap_or_else(|e| e.into_inner()).log)
            }
        }
    }
}

/// How to drive a run.
#[derive(Debug, Clone)]
pub struct DriveOptions {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Stop handing out requests after this long.
    pub duration: Option<Duration>,
    /// Replay trace timestamps at this multiple of real time (none: as fast as possible).
    pub speed: Option<f64>,
    /// Show a progress bar (it draws only on a terminal).
    pub progress: bool,
    /// How often to sample the counters for the timeline.
    pub sample_interval: Duration,
}

#[derive(Debug, Default)]
struct Live {
    ops: AtomicU64,
    gets: AtomicU64,
    hits: AtomicU64,
}

fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Runs the requests of `source` against `system` with `opts.concurrency` requests in flight.
/// Puts write `size` bytes of filler. The sampler records the timeline, feeds the progress
/// bar and, for cachelet, watches the member list for scale events.
pub async fn drive(
    system: &System,
    plan: &Plan,
    source: &Arc<Source>,
    opts: &DriveOptions,
) -> RunResult {
    let filler = Bytes::from(vec![b'x'; plan.max_size().max(1) as usize]);
    let live = Arc::new(Live::default());
    let started = Instant::now();
    let stop_at = opts.duration.map(|d| started + d);
    let total = match &**source {
        Source::Fixed { requests, .. } => Some(requests.len() as u64),
        Source::Stream(_) => None,
    };
    let bar = progress_bar(system.name(), total, opts);
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(
        system.clone(),
        live.clone(),
        done.clone(),
        bar.clone(),
        started,
        opts.clone(),
    ));
    let apps = plan.apps.len();
    let workers = (0..opts.concurrency.max(1)).map(|_| {
        let (system, source, live, filler) =
            (system.clone(), source.clone(), live.clone(), filler.clone());
        let (names, app_of_key, times) = (
            plan.names.clone(),
            plan.app_of_key.clone(),
            plan.times_ms.clone(),
        );
        let speed = opts.speed;
        let name = system.name();
        tokio::spawn(async move {
            let mut r = RunResult::empty(name, apps);
            while let Some((i, req)) = source.next(stop_at) {
                if let (Some(times), Some(speed)) = (&times, speed)
                    && let Some(&t) = times.get(i)
                {
                    let due = started + Duration::from_secs_f64(t as f64 / 1000.0 / speed);
                    tokio::time::sleep_until(due.into()).await;
                }
                let key = &names[req.key as usize];
                let app = &mut r.per_app[app_of_key[req.key as usize] as usize];
                let t = Instant::now();
                if req.write {
                    r.puts += 1;
                    app.puts += 1;
                    if let Err(e) = system.put(key, filler.slice(..req.size as usize)).await {
                        r.errors += 1;
                        r.first_error.get_or_insert(e);
                    }
                    let _ = r.latency_us.record(micros(t));
                } else {
                    r.gets += 1;
                    app.gets += 1;
                    let got = system.get(key).await;
                    let us = micros(t);
                    let _ = r.latency_us.record(us);
                    match got {
                        Ok(Some((tier, store_bytes))) => {
                            r.by_tier.add(tier);
                            live.gets.fetch_add(1, Ordering::Relaxed);
                            if tier == Tier::Store {
                                let _ = r.miss_latency_us.record(us);
                                if store_bytes > 0 {
                                    r.store_reads += 1;
                                    r.store_read_bytes += store_bytes;
                                }
                            } else {
                                app.hits += 1;
                                live.hits.fetch_add(1, Ordering::Relaxed);
                                let _ = r.hit_latency_us.record(us);
                            }
                        }
                        Ok(None) => r.not_found += 1,
                        Err(e) => {
                            r.errors += 1;
                            r.first_error.get_or_insert(e);
                        }
                    }
                }
                r.ops += 1;
                live.ops.fetch_add(1, Ordering::Relaxed);
            }
            r
        })
    });
    let parts = futures::future::join_all(workers).await;
    let elapsed = started.elapsed();
    done.store(true, Ordering::SeqCst);
    let (samples, scale_events) = sampler.await.unwrap_or_default();
    bar.finish_and_clear();
    let mut total = RunResult::empty(system.name(), apps);
    for part in parts.into_iter().flatten() {
        total.merge(part);
    }
    total.elapsed = elapsed;
    total.samples = samples;
    total.scale_events = scale_events;
    total
}

fn progress_bar(name: &str, total: Option<u64>, opts: &DriveOptions) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let (bar, template) = match (total, opts.duration) {
        (Some(n), _) => (
            ProgressBar::new(n),
            "{prefix:>9} [{bar:30}] {pos}/{len} ops, {elapsed} {msg}",
        ),
        (None, Some(d)) => (
            ProgressBar::new(d.as_millis() as u64),
            "{prefix:>9} [{bar:30}] {elapsed}/{duration} {msg}",
        ),
        (None, None) => (
            ProgressBar::no_length(),
            "{prefix:>9} {pos} ops, {elapsed} {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(name.to_owned());
    bar
}

async fn sample(
    system: System,
    live: Arc<Live>,
    done: Arc<AtomicBool>,
    bar: ProgressBar,
    started: Instant,
    opts: DriveOptions,
) -> (Vec<Sample>, Vec<ScaleEvent>) {
    let mut samples = vec![Sample {
        t_s: 0.0,
        ops: 0,
        gets: 0,
        hits: 0,
    }];
    let mut events = Vec::new();
    let mut epoch = None;
    let mut tick = tokio::time::interval(opts.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let finished = done.load(Ordering::SeqCst);
        if !finished {
            tick.tick().await;
        }
        let now = Sample {
            t_s: started.elapsed().as_secs_f64(),
            ops: live.ops.load(Ordering::Relaxed),
            gets: live.gets.load(Ordering::Relaxed),
            hits: live.hits.load(Ordering::Relaxed),
        };
        let prev = *samples.last().expect("starts with one sample");
        let dt = (now.t_s - prev.t_s).max(1e-9);
        let window_hits = ratio(now.hits - prev.hits, now.gets - prev.gets);
        bar.set_message(format!(
            "{:.0} ops/s, hit ratio {:.3} (now {:.3})",
            (now.ops - prev.ops) as f64 / dt,
            ratio(now.hits, now.gets),
            window_hits
        ));
        if opts.duration.is_some() {
            bar.set_position(started.elapsed().as_millis() as u64);
        } else {
            bar.set_position(now.ops);
        }
        samples.push(now);
        if let System::Cachelet(client) = &system
            && !finished
            && let Ok(m) = client.members().await
        {
            if epoch.is_some_and(|e| e != m.epoch) {
                events.push(ScaleEvent {
                    t_ms: started.elapsed().as_millis() as u64,
                    epoch: m.epoch,
                    members: m.members.len(),
                });
            }
            epoch = Some(m.epoch);
        }
        if finished {
            return (samples, events);
        }
    }
}
