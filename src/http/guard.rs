//! Browser defences: what keeps a web page from using a broker it can
//! reach (a tokenless broker on the visitor's own machine, typically).
//!
//! - **Host** ([`check_host`], every request): when the listener is on a
//!   loopback address (or `allowed_hosts` is set) the `Host` header must
//!   name `localhost`, an address in `127.0.0.0/8`, `[::1]`, the listen
//!   address, an `allowed_hosts` entry (any port), or a single-label name
//!   (no dot: an intranet name such as `broker` or `x`, which the public
//!   DNS cannot serve, so no web site can rebind it). A DNS-rebinding page
//!   (`evil.example` re-pointed at 127.0.0.1) sends its own dotted name and
//!   is refused, so it can neither read nor change anything.
//! - **Cross-site** ([`check_origin`], endpoints that change state, see
//!   [`changes_state`]): refused when `Sec-Fetch-Site` is anything but
//!   `same-origin` or `none` (`cross-site`, and `same-site`, which includes
//!   other ports of the same host); when `Origin` is present and is not
//!   the broker's own (`http[s]://` + `Host`; `null` included); and, when
//!   neither header is there (older browsers), when `Referer` names
//!   another origin.
//! - **JSON bodies** ([`require_json`]): a JSON body must be declared
//!   `application/json` or not declared at all; `text/plain`, forms and
//!   anything else are `415` (the types a page may send cross-site without
//!   a CORS preflight are refused whatever the other headers say).
//!
//! Clients that send none of these headers (curl, the chukcha Go client,
//! the project's client and peers) are unaffected, and so is the status
//! page, whose requests are same-origin reads. Refusals are `403`
//! (`415` for the media type). Never reads bodies.

use std::net::IpAddr;

use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE, HOST, ORIGIN, REFERER};

use super::routes::Endpoint;
use crate::config::Startup;
use crate::error::{DomainError, ErrorKind};

/// The Fetch Metadata header browsers send with every request.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// A request refused by the browser defences.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The `Host` header names something this listener does not serve.
    #[error(
        "Host {0:?} is not served here: use localhost, a 127.0.0.0/8 address, [::1], a name without dots or a name in --allowed-hosts (DNS rebinding defence)"
    )]
    Host(String),
    /// `Sec-Fetch-Site` says another site (or origin) sent it.
    #[error(
        "cross-site browser request refused (Sec-Fetch-Site: {0}): requests that change state are taken only from the broker's own pages and from non-browser clients"
    )]
    FetchSite(String),
    /// `Origin` is not the broker's own.
    #[error(
        "cross-origin browser request refused (Origin: {0}): requests that change state are taken only from the broker's own origin and from clients that send no Origin"
    )]
    Origin(String),
    /// No `Origin` nor `Sec-Fetch-Site`, and `Referer` is another origin.
    #[error(
        "cross-origin browser request refused (Referer of another origin): requests that change state are taken only from the broker's own pages and from non-browser clients"
    )]
    Referer,
    /// A JSON body declared as something else.
    #[error("Content-Type {0:?} is not accepted here: send the JSON body as application/json")]
    MediaType(String),
}

impl DomainError for GuardError {
    /// `UnsupportedMediaType` for the body type, else `Forbidden`.
    fn kind(&self) -> ErrorKind {
        match self {
            Self::MediaType(_) => ErrorKind::UnsupportedMediaType,
            _ => ErrorKind::Forbidden,
        }
    }
}

/// Whether a request to `endpoint` changes state (writes, acks, group,
/// subscription and peer-protocol changes) and so gets the cross-site
/// check. Every endpoint is listed, so a new one must be classified.
#[must_use]
pub fn changes_state(endpoint: Endpoint) -> bool {
    match endpoint {
        Endpoint::Write
        | Endpoint::AckChunk
        | Endpoint::AckGroup
        | Endpoint::DeleteGroup
        | Endpoint::AddSubscription
        | Endpoint::RemoveSubscription
        | Endpoint::PeerChanges
        | Endpoint::PeerAck => true,
        Endpoint::StatusPage
        | Endpoint::Read
        | Endpoint::ListChunks
        | Endpoint::ListCategories
        | Endpoint::ListGroups
        | Endpoint::ListSubscriptions
        | Endpoint::Healthz
        | Endpoint::Metrics
        | Endpoint::Peers
        | Endpoint::Tier
        | Endpoint::PeerFetch
        | Endpoint::PeerHeld
        | Endpoint::PeerRead
        | Endpoint::PeerKafkaOffsets => false,
    }
}

/// Checks the `Host` header (see the module docs). A request without one
/// (HTTP/1.0 tools) passes: browsers always send it.
///
/// # Errors
/// [`GuardError::Host`].
pub fn check_host(startup: &Startup, headers: &HeaderMap) -> Result<(), GuardError> {
    if startup.allowed_hosts.is_none() && !startup.listen.ip().is_loopback() {
        return Ok(());
    }
    let Some(value) = headers.get(HOST) else {
        return Ok(());
    };
    let host = value
        .to_str()
        .ok()
        .and_then(split_host_port)
        .map(|(host, _)| host);
    match host {
        Some(h) if host_allowed(startup, h) => Ok(()),
        _ => Err(GuardError::Host(shown(value))),
    }
}

/// Checks that a request to `endpoint` does not come from another site or
/// origin (see the module docs).
///
/// # Errors
/// [`GuardError::FetchSite`], [`GuardError::Origin`] or
/// [`GuardError::Referer`].
pub fn check_origin(
    startup: &Startup,
    endpoint: Endpoint,
    headers: &HeaderMap,
) -> Result<(), GuardError> {
    if !changes_state(endpoint) {
        return Ok(());
    }
    let scheme = if startup.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let own = |url: &HeaderValue| {
        url.to_str()
            .ok()
            .zip(host)
            .is_some_and(|(u, h)| same_origin(u, scheme, h))
    };
    let site = headers.get(SEC_FETCH_SITE);
    if let Some(site) = site {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err(GuardError::FetchSite(shown(site)));
        }
    }
    let origin = headers.get(ORIGIN);
    if let Some(origin) = origin {
        if !own(origin) {
            return Err(GuardError::Origin(shown(origin)));
        }
    }
    if site.is_none() && origin.is_none() {
        if let Some(referer) = headers.get(REFERER) {
            if !own(referer) {
                return Err(GuardError::Referer);
            }
        }
    }
    Ok(())
}

/// Checks that a JSON body is declared `application/json` (parameters
/// allowed) or not declared at all.
///
/// # Errors
/// [`GuardError::MediaType`].
pub fn require_json(headers: &HeaderMap) -> Result<(), GuardError> {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(str::trim);
    match essence {
        Some(t) if t.eq_ignore_ascii_case("application/json") => Ok(()),
        _ => Err(GuardError::MediaType(shown(value))),
    }
}

/// Loopback names and addresses, the listen address, `allowed_hosts`,
/// single-label names.
fn host_allowed(startup: &Startup, host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let extra = startup.allowed_hosts.as_deref().unwrap_or_default();
    match name.parse::<IpAddr>() {
        Ok(ip) => {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                IpAddr::V4(_) => ip,
            };
            ip.is_loopback()
                || ip == startup.listen.ip()
                || extra.iter().any(|e| e.parse::<IpAddr>() == Ok(ip))
        }
        // A dotted name must be listed; a single label is an intranet name.
        Err(_) => !name.contains('.') || extra.iter().any(|e| e.eq_ignore_ascii_case(name)),
    }
}

/// Whether `url` (an `Origin` or `Referer`) has `scheme` and the host and
/// port of the `Host` header `host` (default ports filled in).
fn same_origin(url: &str, scheme: &str, host: &str) -> bool {
    let Some((s, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let default = if scheme == "https" { 443 } else { 80 };
    match (split_host_port(authority), split_host_port(host)) {
        (Some((h1, p1)), Some((h2, p2))) => {
            s.eq_ignore_ascii_case(scheme)
                && h1.eq_ignore_ascii_case(h2)
                && p1.unwrap_or(default) == p2.unwrap_or(default)
        }
        _ => false,
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` → (host without brackets,
/// port). None for anything else (an unbracketed IPv6 address, a bad
/// port, user info, an empty host).
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || (host.contains(['@', ':', '[', ']']) && !authority.starts_with('[')) {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host, port))
}

/// A header value for an error message: lossy, at most 100 characters.
fn shown(v: &HeaderValue) -> String {
    String::from_utf8_lossy(v.as_bytes())
        .chars()
        .take(100)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn startup(listen: &str, allowed: Option<&[&str]>) -> Startup {
        let mut c = Config::defaults().startup;
        c.listen = listen.parse().unwrap();
        c.allowed_hosts = allowed.map(|a| a.iter().map(|s| (*s).to_owned()).collect());
        c
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn loopback_listener_answers_loopback_hosts_only() {
        let s = startup("127.0.0.1:8080", None);
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:1",
            "LOCALHOST.",
            "[::1]:8080",
            "127.9.9.9:80",
            "[::ffff:127.0.0.1]:8080",
            "x",
            "broker:8080",
        ] {
            assert!(check_host(&s, &headers(&[("host", ok)])).is_ok(), "{ok}");
        }
        assert!(check_host(&s, &HeaderMap::new()).is_ok(), "no Host");
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "10.0.0.1:8080",
            "::1",
            "127.0.0.1:99999",
            "user@127.0.0.1",
            "",
        ] {
            let e = check_host(&s, &headers(&[("host", bad)])).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Forbidden, "{bad}");
        }
        let listed = startup("127.0.0.1:8080", Some(&["broker.internal", "10.0.0.1"]));
        for ok in ["broker.internal:8080", "Broker.Internal", "10.0.0.1:1"] {
            assert!(
                check_host(&listed, &headers(&[("host", ok)])).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn other_listeners_check_hosts_only_when_configured() {
        let open = startup("0.0.0.0:8080", None);
        assert!(check_host(&open, &headers(&[("host", "peer7.example:8080")])).is_ok());
        let strict = startup("0.0.0.0:8080", Some(&["peer7.example"]));
        assert!(check_host(&strict, &headers(&[("host", "peer7.example:8080")])).is_ok());
        assert!(check_host(&strict, &headers(&[("host", "localhost:8080")])).is_ok());
        assert!(check_host(&strict, &headers(&[("host", "evil.example")])).is_err());
    }

    #[test]
    fn cross_site_requests_that_change_state_are_refused() {
        let s = startup("127.0.0.1:8080", None);
        let w = Endpoint::Write;
        let host = ("host", "127.0.0.1:8080");
        // Non-browser clients and same-origin pages pass.
        assert!(check_origin(&s, w, &headers(&[host])).is_ok());
        for ok in [
            [
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
            ],
            [
                ("origin", "HTTP://127.0.0.1:8080"),
                ("sec-fetch-site", "none"),
            ],
            [("referer", "http://127.0.0.1:8080/"), ("x-other", "1")],
        ] {
            let mut h = headers(&ok);
            h.append("host", HeaderValue::from_static("127.0.0.1:8080"));
            assert!(check_origin(&s, w, &h).is_ok(), "{ok:?}");
        }
        let o = headers(&[("host", "localhost"), ("origin", "http://localhost:80")]);
        assert!(check_origin(&s, w, &o).is_ok(), "default port");
        for bad in [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![
                ("sec-fetch-site", "same-origin"),
                ("origin", "http://evil.example"),
            ],
            vec![("origin", "http://evil.example")],
            vec![("origin", "null")],
            vec![("origin", "https://127.0.0.1:8080")],
            vec![("origin", "http://127.0.0.1:8081")],
            vec![("referer", "http://evil.example/page")],
        ] {
            let mut h = headers(&bad);
            h.append("host", HeaderValue::from_static("127.0.0.1:8080"));
            assert!(check_origin(&s, w, &h).is_err(), "{bad:?}");
            // Reads are not checked (the Host check still applies).
            assert!(check_origin(&s, Endpoint::Read, &h).is_ok());
            assert!(check_origin(&s, Endpoint::StatusPage, &h).is_ok());
        }
        // An Origin cannot be verified without a Host.
        assert!(check_origin(&s, w, &headers(&[("origin", "http://127.0.0.1:8080")])).is_err());
    }

    #[test]
    fn json_bodies_must_be_declared_json_or_not_at_all() {
        assert!(require_json(&HeaderMap::new()).is_ok());
        for ok in ["application/json", "Application/JSON; charset=utf-8"] {
            assert!(require_json(&headers(&[("content-type", ok)])).is_ok());
        }
        for bad in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ] {
            let e = require_json(&headers(&[("content-type", bad)])).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::UnsupportedMediaType, "{bad}");
        }
    }
}
