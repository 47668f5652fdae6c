//! Test kit for cachelet: a history format for what clients did, and checkers that judge it.
//! Dev-only: the production crates take it as a dev-dependency at most.
//!
//! # Layout
//! - [`history`]: [`HistoryOp`], one operation on one key as a client saw it; JSON-lines I/O
//!   ([`write_jsonl`], [`read_jsonl`]); and the bounded [`Recorder`] that concurrent tasks
//!   share to collect operations on one clock.
//! - [`linear`]: the linearizability checker for single-register histories. It reports each
//!   failing key's anomalies with a small sub-history that shows them.
//! - [`staleness`]: the bounded-staleness checker, for reads that may lag by a known bound
//!   (which linearizability cannot express).
//! - [`moto`]: the moto S3 emulator as a child process ([`moto::Moto`]), which the S3 tests and
//!   `cache-bench check` start, stop, freeze and restart.
//! - [`azurite`]: the Azurite blob service as a child process ([`azurite::Azurite`]), and
//!   Microsoft's Python client to make containers and to write and read blobs behind the
//!   cache's back, for the tests of the `az://` store.
//! - [`kubernetes`]: a fake Kubernetes API server ([`kubernetes::FakeKubernetes`]) that
//!   speaks list-and-watch for EndpointSlices, and writes a kubeconfig for it, so that the
//!   real `kube` client runs against it.
//! - [`dns`]: a name server ([`dns::FakeDns`]) whose A records the test sets, for DNS
//!   discovery.
//! - [`certs`]: test certificates made at run time ([`certs::TestPki`]): a CA, a node
//!   certificate for `127.0.0.1` and `localhost`, a client certificate, and a CA nobody
//!   trusts, written to a temporary directory.
//! - [`error`]: the crate's [`Error`].
//!
//! A history flows: each task calls [`Recorder::now_ns`] before an operation and
//! [`Recorder::record`] after it → [`Recorder::take`] → optionally [`write_jsonl`] to a file
//! and [`read_jsonl`] back → [`linear::check`], which groups the operations by key, leaves out
//! the ones that say nothing, splits each key's history at quiescent points, searches for a
//! linearization, and labels and shrinks what fails → [`linear::Report`]. For bounded
//! staleness, [`staleness::events_from_history`] → [`staleness::check`] instead.

pub mod azurite;
pub mod certs;
pub mod dns;
pub mod error;
pub mod history;
pub mod kubernetes;
pub mod linear;
pub mod moto;
pub mod staleness;

pub use error::{Error, Result};
pub use history::{HistoryOp, OpKind, Recorder, read_jsonl, write_jsonl};
