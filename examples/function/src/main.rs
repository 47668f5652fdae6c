//! `cachelet-function`: the example function's command line. With no `--nodes`, it embeds a
//! cache node in the process; with `--nodes`, it uses running nodes (a sidecar).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use cache_client::CacheClient;
use cache_server::CacheNode;
use cache_server::discovery::Discovery;
use clap::Parser;

/// An HTTP function that serves JSON documents from a blob store through cachelet.
#[derive(Debug, Parser)]
#[command(name = "cachelet-function", version, about)]
struct Args {
    /// Where the function listens (default: 127.0.0.1 and FUNCTIONS_CUSTOMHANDLER_PORT, as
    /// Azure Functions sets it for a custom handler, else 8080).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The embedded node's blob store: file:///DIR, s3://BUCKET, az://CONTAINER, gs://BUCKET
    /// (default: the folder --docs).
    #[arg(long, conflicts_with = "nodes")]
    store: Option<String>,
    /// A folder of documents to serve when no --store is given.
    #[arg(long, default_value = "examples/function/docs")]
    docs: PathBuf,
    /// The application whose cache this is.
    #[arg(long, env = "CACHELET_APP", default_value = "documents")]
    app: String,
    /// Cache nodes to use (a sidecar's address, say) instead of embedding one.
    #[arg(long, env = "CACHELET_NODES", value_delimiter = ',')]
    nodes: Vec<String>,
    /// The token for --nodes that require one.
    #[arg(
        long,
        env = "CACHELET_TOKEN",
        hide_env_values = true,
        requires = "nodes"
    )]
    token: Option<String>,
    /// Where the embedded node listens, for the other instances' nodes.
    #[arg(long, default_value = "127.0.0.1:0", conflicts_with = "nodes")]
    cache_listen: SocketAddr,
    /// How the embedded node finds the other instances' nodes (see cache-server --discovery).
    #[arg(long, default_value = "static", conflicts_with = "nodes")]
    discovery: Discovery,
    /// The embedded node's capacity, such as 64MiB.
    #[arg(long, default_value = "64MiB", conflicts_with = "nodes")]
    capacity: bytesize::ByteSize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listen = match args.listen {
        Some(listen) => listen,
        None => {
            let port = std::env::var("FUNCTIONS_CUSTOMHANDLER_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(8080);
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut node_task = None;
    let cache = if args.nodes.is_empty() {
        // Embed a node: it serves this instance's share of the keys by direct call, and the
        // other instances' clients over gRPC.
        let store_url = match &args.store {
            Some(url) => url.clone(),
            None => {
                let dir = std::fs::canonicalize(&args.docs)
                    .with_context(|| format!("the documents folder {}", args.docs.display()))?;
                format!("file://{}", dir.display())
            }
        };
        tracing::info!(store = %store_url, "embedding a cache node");
        let cache_listener = tokio::net::TcpListener::bind(args.cache_listen).await?;
        let addr = cache_listener.local_addr()?.to_string();
        let node = CacheNode::builder()
            .app(&args.app)
            .store(cache_server::store::open_store(&store_url)?)
            .capacity_bytes(args.capacity.as_u64())
            .members([addr.clone()])
            .discovery(args.discovery.clone())
            .build()?;
        let serving = node.clone();
        let mut stop = stop_rx.clone();
        node_task = Some(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = serving.serve(cache_listener, stopped).await {
                tracing::error!(error = %e, "the embedded cache node stopped");
            }
        }));
        node.ready().await;
        if args.discovery == Discovery::Static && !node.membership().contains(&addr) {
            // Static and embedded: this instance is the whole cluster. The store's newest
            // list names the address a previous run had; claim the next epoch for this one.
            node.set_members(None, [addr.clone()]).await?;
        }
        CacheClient::builder()
            .app(&args.app)
            .nodes([addr])
            .embedded(Arc::new(node))
            .build()
            .await?
    } else {
        let mut builder = CacheClient::builder().app(&args.app).nodes(args.nodes);
        if let Some(token) = &args.token {
            builder = builder.token(token.trim());
        }
        builder.build().await?
    };
    tracing::info!(addr = %listener.local_addr()?, "function listening");
    cachelet_function::serve(listener, cache, cache_server::cli::shutdown_signal()).await;
    let _ = stop_tx.send(true);
    if let Some(task) = node_task {
        let _ = task.await;
    }
    Ok(())
}
