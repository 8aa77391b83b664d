//! The static peer list: `--peers name=http://host:port,...`.

use std::fmt;

use crate::names::{NameError, ServerName};

/// One other server of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its `--name`.
    pub name: ServerName,
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:8082`.
    pub url: String,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.url)
    }
}

/// A `--peers` list that cannot be used; the message says which entry is
/// wrong and what is expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerListError {
    /// An entry without `=`.
    #[error("entry {entry:?} is not name=url")]
    NotNameUrl {
        /// The entry.
        entry: String,
    },
    /// An invalid server name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// An entry naming this server.
    #[error("entry {entry:?} names this server ({me}); list only the other servers")]
    IsMe {
        /// The entry.
        entry: String,
        /// This server's name.
        me: String,
    },
    /// A name given twice.
    #[error("server {name} is listed twice")]
    Twice {
        /// The name.
        name: String,
    },
    /// A URL that is not `http(s)://host:port`. The reason is part of the
    /// message (not a `source`) so that `to_string()` alone, which config
    /// errors show, says what is wrong.
    #[error("entry {entry:?}: {why}")]
    Url {
        /// The entry.
        entry: String,
        /// What is wrong with its URL.
        why: UrlError,
    },
}

/// What is wrong with a peer URL. Causes are part of the message, as in
/// [`PeerListError::Url`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Neither `http://` nor `https://`.
    #[error("expected http://host:port or https://host:port")]
    Scheme,
    /// A path, query, user info or space after the authority.
    #[error("expected http://host:port with no path")]
    Path,
    /// Not parseable as a URL.
    #[error("not a URL: {0}")]
    NotUrl(hyper::http::uri::InvalidUri),
    /// No explicit port.
    #[error("give the port explicitly, e.g. {scheme}://127.0.0.1:8082")]
    NoPort {
        /// `http` or `https`.
        scheme: &'static str,
    },
}

/// Parses a peer list. Empty entries are ignored; names must be valid,
/// unique and differ from `me`; URLs are `http://host:port` (no path).
///
/// # Errors
/// [`PeerListError`], saying which entry is wrong and what is expected.
pub fn parse_peers(list: &str, me: &ServerName) -> Result<Vec<Peer>, PeerListError> {
    let mut peers: Vec<Peer> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| PeerListError::NotNameUrl {
                entry: entry.to_owned(),
            })?;
        let name = ServerName::parse(name.trim())?;
        if &name == me {
            return Err(PeerListError::IsMe {
                entry: entry.to_owned(),
                me: me.to_string(),
            });
        }
        if peers.iter().any(|p| p.name == name) {
            return Err(PeerListError::Twice {
                name: name.to_string(),
            });
        }
        let url = parse_url(url.trim()).map_err(|why| PeerListError::Url {
            entry: entry.to_owned(),
            why,
        })?;
        peers.push(Peer { name, url });
    }
    Ok(peers)
}

fn parse_url(url: &str) -> Result<String, UrlError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https", rest)
    } else {
        let rest = url.strip_prefix("http://").ok_or(UrlError::Scheme)?;
        ("http", rest)
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(UrlError::Path);
    }
    let uri: hyper::Uri = format!("{scheme}://{authority}/")
        .parse()
        .map_err(UrlError::NotUrl)?;
    if uri.port_u16().is_none() {
        return Err(UrlError::NoPort { scheme });
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> ServerName {
        ServerName::parse("node1").unwrap()
    }

    #[test]
    fn parses_a_list() {
        let p = parse_peers(
            "node2=http://127.0.0.1:8082, node3=http://127.0.0.1:8083/",
            &me(),
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].url, "http://127.0.0.1:8083");
        assert!(parse_peers("", &me()).unwrap().is_empty());
        let tls = parse_peers("node2=https://127.0.0.1:8443/", &me()).unwrap();
        assert_eq!(tls[0].url, "https://127.0.0.1:8443");
    }

    #[test]
    fn refuses_bad_entries() {
        for bad in [
            "node2",
            "node1=http://127.0.0.1:1",
            "node2=http://a:1,node2=http://b:2",
            "node2=ftp://x:1",
            "node2=http://x",
            "node2=http://x:1/path",
            "no de=http://x:1",
            "node2=https://x",
            "node2=https://x:1/p",
        ] {
            assert!(parse_peers(bad, &me()).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_name_the_entry() {
        let e = |list| parse_peers(list, &me()).unwrap_err().to_string();
        assert_eq!(e("node2"), "entry \"node2\" is not name=url");
        assert_eq!(
            e("node1=http://127.0.0.1:1"),
            "entry \"node1=http://127.0.0.1:1\" names this server (node1); list only the other servers"
        );
        assert_eq!(
            e("node2=http://a:1,node2=http://b:2"),
            "server node2 is listed twice"
        );
        assert_eq!(
            e("node2=ftp://x:1"),
            "entry \"node2=ftp://x:1\": expected http://host:port or https://host:port"
        );
        assert_eq!(
            e("node2=https://x"),
            "entry \"node2=https://x\": give the port explicitly, e.g. https://127.0.0.1:8082"
        );
    }
}
