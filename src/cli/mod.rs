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
}

impl ServerArgs {
    /// A client for these servers.
    ///
    /// # Errors
    /// An invalid URL.
    pub fn client(&self) -> Result<Client, ClientError> {
        let c = Client::with_servers(&self.server)?;
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
