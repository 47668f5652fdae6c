//! The `cachectl` command line, as a library so that it can be tested.
//!
//! Exit codes: 0 success; 1 the blob was not found; 2 invalid input (a bad key, value or
//! flag); 3 the cache or the store could not be reached, or another failure; 4 the node
//! refused the credentials (no valid token, or a token whose role or app does not allow the
//! call).

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use std::path::PathBuf;

use cache_core::auth::{Role, token_entry};

use crate::{CacheClient, Error};

/// Talk to a cachelet cache: read, write and delete blobs, and show counters and members.
#[derive(Debug, Clone, Parser)]
#[command(name = "cachectl", version, about)]
pub struct Args {
    /// The cache nodes, as host:port,host:port,...
    #[arg(long, env = "CACHELET_NODES", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// The application whose cache to use.
    #[arg(long, env = "CACHELET_APP")]
    pub app: Option<String>,
    /// The token to send as `authorization: Bearer TOKEN`, for nodes that run with --auth.
    #[arg(long, env = "CACHELET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Talk TLS to the nodes, verifying them against this CA (PEM).
    #[arg(long, env = "CACHELET_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for nodes that require mutual TLS.
    #[arg(long, env = "CACHELET_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "CACHELET_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Deadline of each call, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `cachectl` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Write the blob KEY to stdout.
    Get {
        /// The blob's key.
        key: String,
    },
    /// Write the contents of FILE (or stdin, for -) as the blob KEY.
    Put {
        /// The blob's key.
        key: String,
        /// A file to read, or - for stdin.
        file: String,
    },
    /// Delete the blob KEY.
    Del {
        /// The blob's key.
        key: String,
    },
    /// Print each node's counters, one JSON object per line, then the client's.
    Stats,
    /// Print the member list and its epoch, or set a new one.
    Members {
        /// `set ADDR,ADDR,...` to change the members.
        #[command(subcommand)]
        action: Option<MembersAction>,
    },
    /// Print the scaling advice: how many nodes the cache should have, and why.
    Advice,
    /// Make tokens for a node's auth file.
    Token {
        /// `new --role ROLE [--app APP]`.
        #[command(subcommand)]
        action: TokenAction,
    },
}

/// `cachectl token` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenAction {
    /// Print a fresh random token on the first line, then its `[[token]]` entry for the
    /// nodes' auth file. Needs no node.
    New {
        /// The token's role: data, admin or peer.
        #[arg(long)]
        role: Role,
        /// The app a data token is for (data tokens only).
        #[arg(long)]
        app: Option<String>,
    },
}

/// `cachectl members` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum MembersAction {
    /// Set the member list, as a platform does on a scale event.
    Set {
        /// Every member's address, as host:port,host:port,...
        #[arg(value_delimiter = ',', required = true)]
        members: Vec<String>,
        /// The new epoch (default: one more than the highest known).
        #[arg(long)]
        epoch: Option<u64>,
    },
}

/// The exit code for an error.
pub fn exit_code(err: &Error) -> u8 {
    match err {
        Error::NotFound(_) => 1,
        e if e.is_denied() => 4,
        e if e.is_invalid_argument() => 2,
        Error::Config(_) | Error::StoreRejected(_) => 2,
        _ => 3,
    }
}

/// Runs `args`, writing results to `out` and messages to `err`.
pub async fn run(args: Args, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    match execute(args, out).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(err, "cachectl: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// A fresh random token: 32 bytes from the OS's generator, as 64 hex digits.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    cache_core::auth::to_hex(&bytes)
}

/// The output of `cachectl token new`: the token, then its `[[token]]` entry.
///
/// # Errors
/// [`Error::InvalidRequest`] for a data token without an app, or another role with one.
pub fn token_new(role: Role, app: Option<&str>) -> Result<String, Error> {
    match (role, app) {
        (Role::Data, None | Some("")) => {
            Err(Error::InvalidRequest("a data token needs --app".into()))
        }
        (Role::Admin | Role::Peer, Some(_)) => {
            Err(Error::InvalidRequest("only data tokens name an app".into()))
        }
        _ => {
            let token = new_token();
            Ok(format!("{token}\n{}", token_entry(&token, role, app)))
        }
    }
}

fn read_pem(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("{flag}: cannot read {}: {e}", path.display())))
}

async fn execute(args: Args, out: &mut dyn Write) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::Internal(format!("i/o: {e}"));
    if let Command::Token {
        action: TokenAction::New { role, app },
    } = &args.command
    {
        let text = token_new(*role, app.as_deref())?;
        out.write_all(text.as_bytes()).map_err(io)?;
        return out.flush().map_err(io);
    }
    if args.nodes.is_empty() {
        return Err(Error::Config(
            "no nodes: give --nodes or CACHELET_NODES".into(),
        ));
    }
    let app = args
        .app
        .ok_or_else(|| Error::Config("no app: give --app or CACHELET_APP".into()))?;
    let mut builder = CacheClient::builder()
        .app(app)
        .nodes(args.nodes)
        .timeout(std::time::Duration::from_millis(args.timeout_ms));
    if let Some(token) = args.token {
        builder = builder.token(token);
    }
    if let Some(ca) = &args.tls_ca {
        builder = builder.tls_ca_pem(read_pem("--tls-ca", ca)?);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        builder =
            builder.tls_identity_pem(read_pem("--tls-cert", cert)?, read_pem("--tls-key", key)?);
    }
    let client = builder.build().await?;
    match args.command {
        Command::Get { key } => match client.get(&key).await? {
            Some(value) => out.write_all(&value).map_err(io)?,
            None => return Err(Error::NotFound(key)),
        },
        Command::Put { key, file } => {
            let mut value = Vec::new();
            if file == "-" {
                std::io::stdin().read_to_end(&mut value).map_err(io)?;
            } else {
                value = std::fs::read(&file)
                    .map_err(|e| Error::InvalidRequest(format!("cannot read {file}: {e}")))?;
            }
            let version = client.put(&key, value).await?;
            writeln!(out, "{version}").map_err(io)?;
        }
        Command::Del { key } => client.delete(&key).await?,
        Command::Stats => {
            let stats = client.stats().await?;
            for node in &stats.nodes {
                writeln!(out, "{}", json(node)?).map_err(io)?;
            }
        }
        Command::Members { action: None } => {
            let m = client.members().await?;
            let view = serde_json::json!({ "epoch": m.epoch, "members": m.members });
            writeln!(out, "{view}").map_err(io)?;
        }
        Command::Members {
            action: Some(MembersAction::Set { members, epoch }),
        } => {
            let epoch = client.set_members(epoch, members.clone()).await?;
            let view = serde_json::json!({ "epoch": epoch, "members": members });
            writeln!(out, "{view}").map_err(io)?;
        }
        Command::Token { .. } => {}
        Command::Advice => {
            let a = client.advice().await?;
            let view = serde_json::json!({
                "current_nodes": a.current_nodes,
                "desired_nodes": a.desired_nodes,
                "reason": a.reason,
                "bytes_used": a.bytes_used,
                "capacity_bytes": a.capacity_bytes,
                "ghost_hit_ratio": a.ghost_hit_ratio,
                "requests_per_s": a.requests_per_s,
                "bytes_served_per_s": a.bytes_served_per_s,
                "mean_object_bytes": a.mean_object_bytes,
            });
            writeln!(out, "{view}").map_err(io)?;
        }
    }
    out.flush().map_err(io)
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))
}
