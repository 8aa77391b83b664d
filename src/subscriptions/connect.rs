//! [`GuardedConnector`]: the TCP connector of the webhook HTTP client. It
//! resolves the receiver's host itself, checks **every** address against
//! the [`WebhookPolicy`], and connects only to those checked addresses, so
//! a name that resolved to an allowed address when the subscription was
//! created and to a forbidden one now (DNS rebinding) is refused without a
//! packet being sent to it.
//!
//! Never reads or writes HTTP; never connects to an address it has not
//! checked.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::policy::{self, Denied, WebhookPolicy};

/// Why a connection to a receiver was not made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL has no host.
    #[error("receiver URL {0} has no host")]
    NoHost(String),
    /// The host or one of its addresses is refused by the policy.
    #[error("{denied} (resolved to {addr})")]
    Denied {
        /// The refusal (names the host, not the address).
        denied: Denied,
        /// The refused address (for the server log).
        addr: String,
    },
    /// The name could not be resolved.
    #[error("resolving {host} failed")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// No checked address accepted a connection in time.
    #[error("connecting to {addr} failed")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// The cause (refused, unreachable, timed out).
        #[source]
        source: std::io::Error,
    },
}

/// Resolves, checks and connects (see the module docs).
#[derive(Debug, Clone)]
pub struct GuardedConnector {
    policy: Arc<WebhookPolicy>,
    timeout: Duration,
}

impl GuardedConnector {
    /// A connector applying `policy`, giving each address `timeout` to
    /// accept.
    #[must_use]
    pub fn new(policy: Arc<WebhookPolicy>, timeout: Duration) -> Self {
        Self { policy, timeout }
    }

    /// The checked addresses of `host`.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        let denied = |denied, ip: IpAddr| ConnectError::Denied {
            denied,
            addr: ip.to_string(),
        };
        if let Some(ip) = policy::literal(host) {
            self.policy
                .check_addr(host, None, ip)
                .map_err(|d| denied(d, ip))?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        self.policy
            .check_name(host)
            .map_err(|denied| ConnectError::Denied {
                denied,
                addr: "(not resolved)".to_owned(),
            })?;
        let resolve_err = |source| ConnectError::Resolve {
            host: host.to_owned(),
            source,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(resolve_err)?
            .collect();
        if addrs.is_empty() {
            return Err(resolve_err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no addresses",
            )));
        }
        // Every address must pass: one forbidden answer refuses the name.
        for a in &addrs {
            self.policy
                .check_addr(host, Some(host), a.ip())
                .map_err(|d| denied(d, a.ip()))?;
        }
        Ok(addrs)
    }

    async fn connect(self, dst: Uri) -> Result<TokioIo<TcpStream>, ConnectError> {
        let host = dst
            .host()
            .ok_or_else(|| ConnectError::NoHost(dst.to_string()))?;
        let port = dst.port_u16().unwrap_or(80);
        let addrs = self.resolve(host, port).await?;
        let mut last = None;
        for addr in addrs {
            let err = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    // Latency over batching: one request in flight anyway.
                    let _ = stream.set_nodelay(true);
                    return Ok(TokioIo::new(stream));
                }
                Ok(Err(e)) => e,
                Err(_elapsed) => std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", self.timeout.as_millis()),
                ),
            };
            last = Some((addr, err));
        }
        let (addr, source) = last.unwrap_or_else(|| {
            (
                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
                std::io::Error::other("no address"),
            )
        });
        Err(ConnectError::Connect { addr, source })
    }
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        Box::pin(self.clone().connect(dst))
    }
}

/// The policy refusal inside a client error, if that is what it was.
#[must_use]
pub fn denial<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a Denied> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(ConnectError::Denied { denied, .. }) = err.downcast_ref::<ConnectError>() {
            return Some(denied);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(deny: &str) -> GuardedConnector {
        GuardedConnector::new(
            Arc::new(WebhookPolicy::new(
                Vec::new(),
                WebhookPolicy::parse_rules(deny).unwrap(),
            )),
            Duration::from_secs(1),
        )
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_denied_address_is_refused_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let uri: Uri = format!("http://localhost:{port}/").parse().unwrap();
        let e = connector("127.0.0.0/8,::1")
            .connect(uri.clone())
            .await
            .unwrap_err();
        assert!(
            matches!(denial(&e), Some(Denied::DenyListed { host }) if host == "localhost"),
            "{e}"
        );
        // Nothing connected.
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "a connection reached the listener");
        // Allowed: the same name connects.
        let _io = connector("").connect(uri).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(accepted.is_ok());
    }

    #[tokio::test]
    async fn address_literals_are_checked_too() {
        let uri: Uri = "http://[::ffff:169.254.169.254]:80/".parse().unwrap();
        let e = connector("").connect(uri).await.unwrap_err();
        assert!(
            matches!(denial(&e), Some(Denied::LinkLocalOrMetadata { .. })),
            "{e}"
        );
    }
}
