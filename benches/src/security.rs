//! `--security plain|token|tls` for the clusters of `cache-bench run` and `ping` (embedded,
//! or `cache-server` processes): the cost of token checks and of TLS, measured against the
//! same build without them.

use cache_client::CacheClientBuilder;
use cache_core::auth::{Credentials, Role, token_entry};
use cache_server::{CacheNodeBuilder, TlsConfig};
use cache_testkit::certs::TestPki;

/// What the embedded cluster and its client use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SecurityMode {
    /// Plaintext, no credentials (the default).
    #[default]
    Plain,
    /// Plaintext, with an auth file: every call carries a token that is checked.
    Token,
    /// TLS (certificates generated for the run) and tokens.
    Tls,
}

const DATA_TOKEN: &str = "bench-data-token";
const PEER_TOKEN: &str = "bench-peer-token";
const ADMIN_TOKEN: &str = "bench-admin-token";

/// The certificates and tokens of one run.
#[derive(Debug)]
pub struct BenchSecurity {
    mode: SecurityMode,
    app: String,
    pki: Option<TestPki>,
}

impl BenchSecurity {
    /// Generates what `mode` needs for `app`.
    ///
    /// # Errors
    /// When the certificates cannot be generated.
    pub fn new(mode: SecurityMode, app: &str) -> anyhow::Result<Self> {
        let pki = match mode {
            SecurityMode::Tls => Some(TestPki::generate()?),
            _ => None,
        };
        Ok(Self {
            mode,
            app: app.to_owned(),
            pki,
        })
    }

    /// Configures a node of the embedded cluster.
    ///
    /// # Panics
    /// When the generated certificates do not load (a bug).
    pub fn node(&self, b: CacheNodeBuilder) -> CacheNodeBuilder {
        if self.mode == SecurityMode::Plain {
            return b;
        }
        let file = [
            token_entry(DATA_TOKEN, Role::Data, Some(&self.app)),
            token_entry(PEER_TOKEN, Role::Peer, None),
            token_entry(ADMIN_TOKEN, Role::Admin, None),
        ]
        .join("\n");
        let b = b
            .auth(Credentials::parse(&file).expect("generated auth file"))
            .peer_token(PEER_TOKEN);
        match &self.pki {
            Some(pki) => b.tls(
                TlsConfig::from_pem(pki.read(&pki.node_cert), pki.read(&pki.node_key))
                    .and_then(|t| t.peer_ca(pki.read(&pki.ca)))
                    .expect("generated certificates"),
            ),
            None => b,
        }
    }

    /// The flags that give a `cache-server` process the same configuration as
    /// [`BenchSecurity::node`], with the files they name written to `dir`.
    ///
    /// # Errors
    /// When a file cannot be written.
    pub fn node_args(&self, dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
        if self.mode == SecurityMode::Plain {
            return Ok(Vec::new());
        }
        let auth = dir.join("auth.toml");
        let file = [
            token_entry(DATA_TOKEN, Role::Data, Some(&self.app)),
            token_entry(PEER_TOKEN, Role::Peer, None),
            token_entry(ADMIN_TOKEN, Role::Admin, None),
        ]
        .join("\n");
        std::fs::write(&auth, file)?;
        let peer = dir.join("peer-token");
        std::fs::write(&peer, PEER_TOKEN)?;
        let path = |p: &std::path::Path| p.display().to_string();
        let mut args = vec![
            "--auth".to_owned(),
            path(&auth),
            "--peer-token-file".to_owned(),
            path(&peer),
        ];
        if let Some(pki) = &self.pki {
            args.extend([
                "--tls-cert".to_owned(),
                path(&pki.node_cert),
                "--tls-key".to_owned(),
                path(&pki.node_key),
                "--tls-ca".to_owned(),
                path(&pki.ca),
            ]);
        }
        Ok(args)
    }

    /// Configures the workload's client (a data token).
    pub fn client(&self, b: CacheClientBuilder) -> CacheClientBuilder {
        self.with_token(b, DATA_TOKEN)
    }

    /// Configures a client for counters (an admin token).
    pub fn admin(&self, b: CacheClientBuilder) -> CacheClientBuilder {
        self.with_token(b, ADMIN_TOKEN)
    }

    fn with_token(&self, b: CacheClientBuilder, token: &str) -> CacheClientBuilder {
        if self.mode == SecurityMode::Plain {
            return b;
        }
        let b = b.token(token);
        match &self.pki {
            Some(pki) => b.tls_ca_pem(pki.read(&pki.ca)),
            None => b,
        }
    }
}
