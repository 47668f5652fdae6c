//! Wire format of cachelet: the `cachelet.v1` gRPC services and messages.
//!
//! # Layout
//! - `cachelet/v1/cachelet.proto` is the source of truth; `build.rs` compiles it with `protox`
//!   and `tonic-prost-build`, mapping proto `bytes` to [`bytes::Bytes`] so values are not copied.
//! - [`v1`] holds the generated messages, the `data_client`/`data_server` and
//!   `admin_client`/`admin_server` modules.
//! - [`codec`]: the codec the generated code uses: prost's, with decode errors as
//!   `INVALID_ARGUMENT`.
//! - [`in_process`]: the same ops and replies, for a node in the caller's own process.
//!
//! This crate does no I/O and holds no logic; `cache-server` and `cache-client` build on it.

pub mod codec;
pub mod in_process;

/// The `cachelet.v1` package.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("cachelet.v1");
}
