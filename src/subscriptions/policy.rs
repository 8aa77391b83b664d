//! Where push subscriptions may send requests: the webhook target policy
//! ([`WebhookPolicy`], settings `webhook_allow` / `webhook_deny`), applied to
//! a receiver URL's host when a subscription is created and to every
//! address it resolves to when delivery connects (so a name re-pointed
//! after creation — DNS rebinding — is caught).
//!
//! The rules, in order:
//! 1. never a target: unspecified (`0.0.0.0/8`, `::`), multicast,
//!    broadcast and reserved (`240.0.0.0/4`) addresses; host names that
//!    are not DNS names or that look numeric (`2852039166`, `0xa9fea9fe`:
//!    resolvers read them as addresses);
//! 2. anything `webhook_deny` matches (names, `*.domain`, IPs, CIDRs);
//! 3. denied by default, unless an IP/CIDR entry of `webhook_allow` covers
//!    the address (or a name entry names the host): link-local addresses
//!    (`169.254.0.0/16`, `fe80::/10`) and cloud metadata endpoints
//!    (`169.254.169.254`, `fd00:ec2::254`, `100.100.100.200`,
//!    `metadata.google.internal` and friends);
//! 4. when `webhook_allow` is set, only what it matches.
//!
//! Loopback and private ranges are allowed by default (a receiver next to
//! the broker is the common case); `webhook_deny = "127.0.0.0/8,::1"`
//! forbids them. IPv4 addresses inside IPv6 (`::ffff:a.b.c.d`,
//! `64:ff9b::a.b.c.d`) are judged as the IPv4 address.
//!
//! Pure: never resolves names and never connects (`connect.rs` does).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Host names of cloud metadata services, denied by default.
const METADATA_NAMES: [&str; 6] = [
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
];

/// Addresses of cloud metadata services outside the link-local ranges,
/// denied by default (169.254.169.254 is link-local anyway).
const METADATA_ADDRS: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

/// One entry of `webhook_allow` / `webhook_deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// An address or a CIDR block (a bare address is a `/32` or `/128`).
    Net(IpNet),
    /// A host name (lower case, no trailing dot).
    Name(String),
    /// `*.domain`: every name ending in `.domain` (not `domain` itself);
    /// holds `.domain`.
    Suffix(String),
}

impl Rule {
    /// Parses `10.0.0.0/8`, `127.0.0.1`, `[::1]`, `fd00::/8`,
    /// `hooks.internal` or `*.internal`.
    ///
    /// # Errors
    /// Anything else, with what is allowed.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bare = t
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(t);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self::Net(IpNet::from(canonical(ip))));
        }
        if let Ok(net) = t.parse::<IpNet>() {
            return Ok(Self::Net(net.trunc()));
        }
        let name = normalize(t);
        if let Some(domain) = name.strip_prefix("*.") {
            if is_dns_name(domain) {
                return Ok(Self::Suffix(format!(".{domain}")));
            }
        } else if is_dns_name(&name) {
            return Ok(Self::Name(name));
        }
        Err(format!(
            "{t:?} is not an address, CIDR (10.0.0.0/8, fd00::/8), host name or *.domain"
        ))
    }

    fn matches_addr(&self, ip: IpAddr) -> bool {
        matches!(self, Self::Net(n) if n.contains(&ip))
    }

    /// `name` is already lower case without a trailing dot.
    fn matches_name(&self, name: &str) -> bool {
        match self {
            Self::Net(_) => false,
            Self::Name(n) => n == name,
            Self::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
        }
    }
}

/// The webhook target policy (see the module docs for the rules).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WebhookPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

/// Why a webhook target is refused. The message names the host as given,
/// never an address it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Denied {
    /// Unspecified, multicast, broadcast or reserved address.
    #[error(
        "webhook target {host} is refused: unspecified, multicast, broadcast and reserved addresses are never receivers"
    )]
    NeverTarget {
        /// The host as given.
        host: String,
    },
    /// Not a DNS name, or a numeric-looking one.
    #[error(
        "webhook target {host:?} is refused: use a dotted IPv4 address, a bracketed IPv6 address or a DNS name"
    )]
    BadName {
        /// The host as given.
        host: String,
    },
    /// Link-local or cloud metadata address or name.
    #[error(
        "webhook target {host} is refused: link-local and cloud metadata addresses are denied by default (an operator can allow an address or CIDR with --webhook-allow)"
    )]
    LinkLocalOrMetadata {
        /// The host as given.
        host: String,
    },
    /// Matched by `webhook_deny`.
    #[error("webhook target {host} is refused by the operator's --webhook-deny")]
    DenyListed {
        /// The host as given.
        host: String,
    },
    /// `webhook_allow` is set and does not match.
    #[error("webhook target {host} is refused: it is not in the operator's --webhook-allow")]
    NotAllowListed {
        /// The host as given.
        host: String,
    },
}

impl WebhookPolicy {
    /// A policy from parsed `webhook_allow` and `webhook_deny` entries.
    #[must_use]
    pub fn new(allow: Vec<Rule>, deny: Vec<Rule>) -> Self {
        Self { allow, deny }
    }

    /// Parses a comma-separated list of [`Rule`]s (a setting's value).
    ///
    /// # Errors
    /// The first invalid entry.
    pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
        text.split(',')
            .filter(|e| !e.trim().is_empty())
            .map(Rule::parse)
            .collect()
    }

    /// Checks a receiver URL's host (`Uri::host()`: a name, an IPv4
    /// address or a bracketed IPv6 address) without resolving it; a name
    /// is checked again, with its addresses, at every connect.
    ///
    /// # Errors
    /// [`Denied`] with the reason.
    pub fn check_host(&self, host: &str) -> Result<(), Denied> {
        match literal(host) {
            Some(ip) => self.check_addr(host, None, ip),
            None => self.check_name(host),
        }
    }

    /// Checks a host name before it is resolved.
    ///
    /// # Errors
    /// [`Denied`] with the reason.
    pub fn check_name(&self, host: &str) -> Result<(), Denied> {
        let name = normalize(host);
        let denied = |f: fn(String) -> Denied| Err(f(host.to_owned()));
        if !is_dns_name(&name) || looks_numeric(&name) {
            return denied(|host| Denied::BadName { host });
        }
        if self.deny.iter().any(|r| r.matches_name(&name)) {
            return denied(|host| Denied::DenyListed { host });
        }
        let named = self.allow.iter().any(|r| r.matches_name(&name));
        if METADATA_NAMES.contains(&name.as_str()) && !named {
            return denied(|host| Denied::LinkLocalOrMetadata { host });
        }
        // Only address entries could still admit it, once resolved.
        if !self.allow.is_empty() && !named && !self.allow.iter().any(|r| matches!(r, Rule::Net(_)))
        {
            return denied(|host| Denied::NotAllowListed { host });
        }
        Ok(())
    }

    /// Checks one address of `host` (`name`: the host name it was resolved
    /// from, None for an address literal).
    ///
    /// # Errors
    /// [`Denied`] with the reason (naming `host`, not the address).
    pub fn check_addr(&self, host: &str, name: Option<&str>, ip: IpAddr) -> Result<(), Denied> {
        let ip = canonical(ip);
        let name = name.map(normalize);
        let by_name = |rules: &[Rule]| {
            name.as_deref()
                .is_some_and(|n| rules.iter().any(|r| r.matches_name(n)))
        };
        let denied = |f: fn(String) -> Denied| Err(f(host.to_owned()));
        if never_target(ip) {
            return denied(|host| Denied::NeverTarget { host });
        }
        if self.deny.iter().any(|r| r.matches_addr(ip)) || by_name(&self.deny) {
            return denied(|host| Denied::DenyListed { host });
        }
        let allowed_addr = self.allow.iter().any(|r| r.matches_addr(ip));
        if default_denied(ip) && !allowed_addr {
            return denied(|host| Denied::LinkLocalOrMetadata { host });
        }
        if !self.allow.is_empty() && !allowed_addr && !by_name(&self.allow) {
            return denied(|host| Denied::NotAllowListed { host });
        }
        Ok(())
    }
}

/// The address of a host that is an address literal (`1.2.3.4`, `[::1]`).
#[must_use]
pub fn literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Lower case, without a trailing dot.
fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// Labels of `[a-z0-9_-]`, 1–63 characters, at most 253 in all.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// A name a resolver might read as an address (`inet_aton` forms): its
/// last label is decimal or hexadecimal `0x…` (no top-level domain is).
fn looks_numeric(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// IPv4 addresses carried in IPv6 (mapped, NAT64) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return IpAddr::V4(Ipv4Addr::new(a, b, c, d));
            }
            ip
        }
        IpAddr::V4(_) => ip,
    }
}

/// Never a receiver, whatever the settings.
fn never_target(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let first = v4.octets()[0];
            first == 0 || v4.is_broadcast() || v4.is_multicast() || first >= 240
        }
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

/// Link-local or a metadata address: denied unless explicitly allowed.
fn default_denied(ip: IpAddr) -> bool {
    METADATA_ADDRS.contains(&ip)
        || match ip {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local(),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &str, deny: &str) -> WebhookPolicy {
        WebhookPolicy::new(
            WebhookPolicy::parse_rules(allow).unwrap(),
            WebhookPolicy::parse_rules(deny).unwrap(),
        )
    }

    #[test]
    fn default_policy_refuses_metadata_link_local_and_non_targets() {
        let p = WebhookPolicy::default();
        for host in [
            "169.254.169.254",
            "169.254.1.1",
            "[fe80::1]",
            "[febf::1]",
            "[fd00:ec2::254]",
            "100.100.100.200",
            "[::ffff:169.254.169.254]",
            "[64:ff9b::a9fe:a9fe]",
            "metadata.google.internal",
            "METADATA.Google.Internal.",
            "metadata",
        ] {
            assert!(
                matches!(p.check_host(host), Err(Denied::LinkLocalOrMetadata { .. })),
                "{host}"
            );
        }
        for host in [
            "0.0.0.0",
            "0.1.2.3",
            "[::]",
            "255.255.255.255",
            "224.0.0.1",
            "[ff02::1]",
            "240.0.0.1",
            "[::ffff:0.0.0.0]",
        ] {
            assert!(
                matches!(p.check_host(host), Err(Denied::NeverTarget { .. })),
                "{host}"
            );
        }
        for host in [
            "2852039166",
            "0xa9fea9fe",
            "0xa9.0xfe.0xa9.0xfe",
            "169.254.43518",
            "bad host",
            "",
        ] {
            assert!(
                matches!(p.check_host(host), Err(Denied::BadName { .. })),
                "{host}"
            );
        }
        for host in [
            "127.0.0.1",
            "[::1]",
            "localhost",
            "10.1.2.3",
            "192.168.0.1",
            "hooks.example.com",
            "svc-1.internal",
            "0x10.example.com",
        ] {
            assert_eq!(p.check_host(host), Ok(()), "{host}");
        }
    }

    #[test]
    fn deny_list_covers_names_and_resolved_addresses() {
        let p = policy("", "127.0.0.0/8, [::1], *.corp, db.example.com");
        assert!(matches!(
            p.check_host("127.0.0.9"),
            Err(Denied::DenyListed { .. })
        ));
        assert!(matches!(
            p.check_host("[::ffff:127.0.0.1]"),
            Err(Denied::DenyListed { .. })
        ));
        assert!(matches!(
            p.check_host("x.corp"),
            Err(Denied::DenyListed { .. })
        ));
        assert!(matches!(
            p.check_host("DB.example.com."),
            Err(Denied::DenyListed { .. })
        ));
        assert_eq!(p.check_host("corp"), Ok(()), "*.corp is subdomains only");
        // A name passes by name; its loopback address does not.
        assert_eq!(p.check_name("localhost"), Ok(()));
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert!(matches!(
            p.check_addr("localhost", Some("localhost"), lo),
            Err(Denied::DenyListed { host }) if host == "localhost"
        ));
        assert_eq!(
            p.check_addr("x", Some("x"), "10.0.0.1".parse().unwrap()),
            Ok(())
        );
    }

    #[test]
    fn allow_list_admits_only_its_entries_and_lifts_default_denies_by_address() {
        let p = policy("10.0.0.0/8, hooks.internal, 169.254.10.0/24", "");
        assert_eq!(p.check_host("10.2.3.4"), Ok(()));
        assert!(matches!(
            p.check_host("192.168.1.1"),
            Err(Denied::NotAllowListed { .. })
        ));
        assert_eq!(p.check_host("169.254.10.7"), Ok(()), "explicitly allowed");
        assert!(matches!(
            p.check_host("169.254.169.254"),
            Err(Denied::LinkLocalOrMetadata { .. })
        ));
        // Names: an allowed name may resolve anywhere allowed by default;
        // another name must resolve into an allowed block.
        assert_eq!(p.check_name("other.example"), Ok(()), "decided on connect");
        let v = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            p.check_addr("hooks.internal", Some("hooks.internal"), v("192.168.1.1")),
            Ok(())
        );
        assert!(matches!(
            p.check_addr(
                "hooks.internal",
                Some("hooks.internal"),
                v("169.254.169.254")
            ),
            Err(Denied::LinkLocalOrMetadata { .. })
        ));
        assert!(matches!(
            p.check_addr("other.example", Some("other.example"), v("192.168.1.1")),
            Err(Denied::NotAllowListed { .. })
        ));
        assert_eq!(
            p.check_addr("other.example", Some("other.example"), v("10.9.9.9")),
            Ok(())
        );
        // Names only: other names are refused at creation already.
        let names = policy("hooks.internal", "");
        assert!(matches!(
            names.check_name("other.example"),
            Err(Denied::NotAllowListed { .. })
        ));
        // Even an allowed block never admits non-targets.
        let all = policy("0.0.0.0/0", "");
        assert!(matches!(
            all.check_host("0.0.0.0"),
            Err(Denied::NeverTarget { .. })
        ));
    }

    #[test]
    fn rules_parse_or_say_what_is_allowed() {
        assert_eq!(
            Rule::parse("10.1.2.3/8").unwrap(),
            Rule::Net("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(
            Rule::parse("[::1]").unwrap(),
            Rule::Net("::1/128".parse().unwrap())
        );
        assert_eq!(
            Rule::parse("Hooks.Internal.").unwrap(),
            Rule::Name("hooks.internal".into())
        );
        assert_eq!(Rule::parse("*.corp").unwrap(), Rule::Suffix(".corp".into()));
        for bad in ["10.0.0.0/33", "a b", "*.", "http://x", "*"] {
            let e = Rule::parse(bad).unwrap_err();
            assert!(e.contains("CIDR"), "{bad}: {e}");
        }
        assert_eq!(WebhookPolicy::parse_rules(" , ").unwrap(), vec![]);
    }
}
