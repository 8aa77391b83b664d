//! Shell client subcommands: `chunkbus produce` and `chunkbus consume`.

pub mod consume;
pub mod produce;

use chunkbus_client::{Client, ClientError};

/// `--server URL[,URL…]` (default `http://127.0.0.1:8080`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Server address(es), comma separated; later ones are used when a
    /// connection to the current one cannot be established.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080",
        env = "CHUNKBUS_SERVER"
    )]
    pub server: Vec<String>,
    /// Bearer token for servers started with --token.
    #[arg(long, env = "CHUNKBUS_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// PEM CA certificates that https:// servers are verified against.
    #[arg(long, env = "CHUNKBUS_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Bound on each request (sending it and reading the whole answer); a
    /// write that times out may have been stored. ms/s/m/h.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::config::parse_duration)]
    pub timeout: std::time::Duration,
}

impl ServerArgs {
    /// A client for these servers.
    ///
    /// # Errors
    /// An invalid URL or token, an unreadable or unusable `--ca` file.
    pub fn client(&self) -> Result<Client, ClientError> {
        let mut c = Client::with_servers(&self.server)?.with_request_timeout(self.timeout);
        if let Some(path) = &self.ca {
            let pem = std::fs::read(path)
                .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))?;
            c = c.with_ca_pem(&pem)?;
        }
        match &self.token {
            Some(t) => c.with_token(t),
            None => Ok(c),
        }
    }
}

/// A rate over `secs` seconds, human readable.
fn rate(bytes: u64, msgs: u64, secs: f64) -> String {
    let secs = secs.max(1e-9);
    format!(
        "{msgs} messages, {:.1} MB in {secs:.2} s: {:.0} msgs/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        msgs as f64 / secs,
        bytes as f64 / 1e6 / secs
    )
}
