//! `dns:NAME:PORT`: the A and AAAA records of a name, resolved again at an interval with
//! hickory-resolver. A headless Kubernetes Service's name resolves to its ready pods.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver as Hickory, TokioResolver};
use tokio::sync::watch;

use super::View;

/// A name resolved periodically.
pub(crate) struct Resolver {
    name: String,
    port: u16,
    every: Duration,
    resolver: TokioResolver,
}

impl Resolver {
    /// A resolver of `name` that asks `server`, or the system's name servers.
    pub(crate) fn new(
        name: String,
        port: u16,
        server: Option<SocketAddr>,
        every: Duration,
    ) -> crate::Result<Self> {
        let config_error = |e: NetError| crate::Error::Config(format!("DNS discovery: {e}"));
        let mut builder = match server {
            Some(server) => {
                let mut ns = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut ns.connections {
                    connection.port = server.port();
                }
                Hickory::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(config_error)?,
        };
        // Every round asks the server: a cached answer would hide pods that came or went.
        builder.options_mut().cache_size = 0;
        let resolver = builder.build().map_err(config_error)?;
        Ok(Self {
            name,
            port,
            every,
            resolver,
        })
    }

    /// The members the name resolves to now.
    async fn resolve(&self) -> Result<BTreeSet<String>, NetError> {
        let found = self.resolver.lookup_ip(self.name.as_str()).await?;
        Ok(found
            .iter()
            .map(|ip| member(ip, self.port))
            .collect::<BTreeSet<_>>())
    }

    /// Reports what the name resolves to, every interval, until `stop`. A failed lookup
    /// reports nothing: the last view stands rather than an empty one.
    pub(crate) async fn run(self, view: View, mut stop: watch::Receiver<bool>) {
        loop {
            match tokio::time::timeout(self.every.max(Duration::from_secs(1)), self.resolve()).await
            {
                Ok(Ok(alive)) => {
                    view.send_if_modified(|v| {
                        let changed = v.as_ref() != Some(&alive);
                        *v = Some(alive);
                        changed
                    });
                }
                Ok(Err(e)) => {
                    tracing::warn!(name = %self.name, error = %e, "DNS discovery: lookup failed")
                }
                Err(_) => tracing::warn!(name = %self.name, "DNS discovery: lookup timed out"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(self.every) => {}
            }
        }
    }
}

/// A member address: `IP:PORT`, with IPv6 in brackets.
pub(crate) fn member(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_socket_addresses() {
        assert_eq!(member("10.1.2.3".parse().unwrap(), 7070), "10.1.2.3:7070");
        assert_eq!(member("fd00::1".parse().unwrap(), 7070), "[fd00::1]:7070");
    }
}
