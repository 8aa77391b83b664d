//! The static peer list: `--peers name=http://host:port,...`.

use std::fmt;

use crate::names::ServerName;

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

/// Parses a peer list. Empty entries are ignored; names must be valid,
/// unique and differ from `me`; URLs are `http://host:port` (no path).
///
/// # Errors
/// A message saying which entry is wrong and what is expected.
pub fn parse_peers(list: &str, me: &ServerName) -> Result<Vec<Peer>, String> {
    let mut peers: Vec<Peer> = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, url) = entry
            .split_once('=')
            .ok_or_else(|| format!("entry {entry:?} is not name=url"))?;
        let name = ServerName::parse(name.trim()).map_err(|e| e.to_string())?;
        if &name == me {
            return Err(format!(
                "entry {entry:?} names this server ({me}); list only the other servers"
            ));
        }
        if peers.iter().any(|p| p.name == name) {
            return Err(format!("server {name} is listed twice"));
        }
        let url = parse_url(url.trim()).map_err(|why| format!("entry {entry:?}: {why}"))?;
        peers.push(Peer { name, url });
    }
    Ok(peers)
}

fn parse_url(url: &str) -> Result<String, String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        ("https", rest)
    } else {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| "expected http://host:port or https://host:port".to_owned())?;
        ("http", rest)
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err("expected http://host:port with no path".into());
    }
    let uri: hyper::Uri = format!("{scheme}://{authority}/")
        .parse()
        .map_err(|e| format!("not a URL: {e}"))?;
    if uri.port_u16().is_none() {
        return Err(format!(
            "give the port explicitly, e.g. {scheme}://127.0.0.1:8082"
        ));
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
}
