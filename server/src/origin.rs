//! The Origin rule: which web pages may open a WebSocket to this server.
//!
//! A browser lets any web page open a WebSocket to any address, the
//! visitor's own 127.0.0.1 included, and sends the page's origin along.
//! Without a check, a page on `evil.example` could read and post in a
//! natter on the visitor's machine or intranet (cross-site WebSocket
//! hijacking). So an upgrade that carries `Origin` is accepted only when
//! the page came from this server itself — the origin's host and port equal
//! the request's `Host` — or when the operator listed it with
//! `--allowed-origin`. A request without `Origin` is not from a browser
//! page and is accepted: the check protects browsers' users, it is not
//! authentication.
//!
//! Everything here is a pure function of the header values and the list,
//! so the rule is tested without sockets. What the contract leaves open is
//! decided here and in protocol/README.md "Decisions":
//! - a `Host` without a port takes the default port of the *Origin's*
//!   scheme (the request line carries no scheme, and the scheme itself is
//!   not compared): `Origin: https://chat.example` matches `Host:
//!   chat.example` and `Host: chat.example:443`;
//! - only `http`, `https`, `ws` and `wss` origins can be same-origin (other
//!   schemes have no default port and no page a browser would serve from
//!   here); others, and malformed origins, are refused unless listed;
//! - `null` (sandboxed frames, `file:` pages, some redirects) is refused
//!   unless `null` or `*` is listed: any page can make its origin `null`;
//! - bracketed IPv6 hosts are compared as addresses (`[::1]` equals
//!   `[0:0::1]`), other hosts byte for byte, ASCII case-insensitively.
//!
//! Same-origin does not stop DNS rebinding (a page on `evil.example:7878`
//! whose name later resolves to 127.0.0.1 is same-origin with
//! `Host: evil.example:7878`); that needs a check of `Host` itself.

use std::net::Ipv6Addr;

/// The `--allowed-origin` list, normalized once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OriginPolicy {
    /// `*` was listed: every origin is accepted.
    any: bool,
    /// Listed origins in [`normalize`]d form (`null` as is).
    allowed: Vec<String>,
}

impl OriginPolicy {
    /// Checks and normalizes the listed origins. Empty entries (a stray
    /// comma in `NATTER_ALLOWED_ORIGIN`) are skipped; anything else that is
    /// not `*`, `null` or `scheme://host[:port]` is an error, so a typo such
    /// as a trailing `/` is caught at start instead of refusing everyone.
    pub(crate) fn new<S: AsRef<str>>(list: &[S]) -> Result<OriginPolicy, String> {
        let mut policy = OriginPolicy {
            any: false,
            allowed: Vec::new(),
        };
        for entry in list.iter().map(|s| s.as_ref().trim()) {
            match entry {
                "" => {}
                "*" => policy.any = true,
                "null" => policy.allowed.push("null".into()),
                _ => match normalize(entry) {
                    Some(origin) => policy.allowed.push(origin),
                    None => {
                        return Err(format!(
                            "--allowed-origin {entry:?} is not an origin: expected *, null or \
                             SCHEME://HOST[:PORT] with no path (e.g. https://chat.example)"
                        ));
                    }
                },
            }
        }
        Ok(policy)
    }

    /// Whether an upgrade with this `Origin` and this `Host` may proceed.
    pub(crate) fn allows(&self, origin: &str, host: &str) -> bool {
        let origin = origin.trim();
        if self.any || same_origin(origin, host.trim()) {
            return true;
        }
        let key = if origin == "null" {
            Some("null".to_owned())
        } else {
            normalize(origin)
        };
        key.is_some_and(|key| self.allowed.contains(&key))
    }
}

/// A host as written in an origin or a `Host` header.
#[derive(Debug, PartialEq, Eq)]
enum HostName<'a> {
    /// `[...]`: compared as an address.
    V6(Ipv6Addr),
    /// A name or an IPv4 address: compared ASCII case-insensitively.
    Name(&'a str),
}

impl HostName<'_> {
    fn same(&self, other: &HostName) -> bool {
        match (self, other) {
            (HostName::V6(a), HostName::V6(b)) => a == b,
            (HostName::Name(a), HostName::Name(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
    }
}

/// `scheme://authority` of a serialized origin: the scheme lowercased, the
/// host and the port if one is written.
struct Origin<'a> {
    scheme: String,
    host: HostName<'a>,
    port: Option<u16>,
}

/// The default port of the schemes a browser page or WebSocket can use.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Same-origin: the origin's host and port equal the `Host` header's; a
/// missing port on either side is the origin scheme's default.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some(origin) = parse_origin(origin) else {
        return false;
    };
    let Some(default) = default_port(&origin.scheme) else {
        return false;
    };
    let Some((host_name, host_port)) = parse_authority(host) else {
        return false;
    };
    origin.host.same(&host_name) && origin.port.unwrap_or(default) == host_port.unwrap_or(default)
}

/// An origin in one spelling: lowercase scheme and host, the port written
/// out (the scheme's default when missing; unknown schemes need one), an
/// IPv6 host in its canonical form. `None` if it is not an origin.
fn normalize(origin: &str) -> Option<String> {
    let o = parse_origin(origin)?;
    let port = o.port.or_else(|| default_port(&o.scheme))?;
    let host = match o.host {
        HostName::V6(addr) => format!("[{addr}]"),
        HostName::Name(name) => name.to_ascii_lowercase(),
    };
    Some(format!("{}://{host}:{port}", o.scheme))
}

/// Parses `scheme://host[:port]`, as browsers serialize an origin: no
/// user info, path, query or fragment.
fn parse_origin(origin: &str) -> Option<Origin<'_>> {
    let (scheme, authority) = origin.split_once("://")?;
    let mut chars = scheme.chars();
    let valid_scheme = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid_scheme {
        return None;
    }
    let (host, port) = parse_authority(authority)?;
    Some(Origin {
        scheme: scheme.to_ascii_lowercase(),
        host,
        port,
    })
}

/// Parses `host[:port]` (a `Host` header, or an origin's authority):
/// `[v6]` or a name; the port, if written, 1 to 5 digits. An empty port
/// (`host:`) or anything that cannot be a host is `None`.
fn parse_authority(authority: &str) -> Option<(HostName<'_>, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (HostName::V6(addr.parse().ok()?), port)
    } else {
        let (name, port) = match authority.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        };
        let valid_name = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"/?#@[]\\:".contains(&b));
        if !valid_name {
            return None;
        }
        (HostName::Name(name), port)
    };
    let port = match port {
        None => None,
        Some(p) if (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse().ok()?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_policy() -> OriginPolicy {
        OriginPolicy::new::<&str>(&[]).unwrap()
    }

    #[test]
    fn same_origin_matches_host_and_port() {
        let p = default_policy();
        assert!(p.allows("http://127.0.0.1:7878", "127.0.0.1:7878"));
        assert!(p.allows("http://Chat.Example:7878", "chat.EXAMPLE:7878"));
        assert!(p.allows("ws://localhost:7878", "localhost:7878"));
        // The scheme is not compared.
        assert!(p.allows("https://chat.example:7878", "chat.example:7878"));
        assert!(!p.allows("http://127.0.0.1:7879", "127.0.0.1:7878"));
        assert!(!p.allows("http://localhost:7878", "127.0.0.1:7878"));
        assert!(!p.allows("http://evil.example", "127.0.0.1:7878"));
        assert!(!p.allows("http://127.0.0.1.evil.example:7878", "127.0.0.1:7878"));
    }

    #[test]
    fn a_missing_port_is_the_origin_schemes_default_on_both_sides() {
        let p = default_policy();
        assert!(p.allows("https://chat.example", "chat.example"));
        assert!(p.allows("https://chat.example", "chat.example:443"));
        assert!(p.allows("https://chat.example:443", "chat.example"));
        assert!(p.allows("wss://chat.example:443", "chat.example"));
        assert!(p.allows("http://chat.example", "chat.example:80"));
        assert!(p.allows("http://chat.example:80", "chat.example"));
        assert!(!p.allows("http://chat.example", "chat.example:443"));
        assert!(!p.allows("https://chat.example", "chat.example:80"));
        assert!(!p.allows("http://chat.example:8080", "chat.example"));
        // A scheme without a default port is never same-origin.
        assert!(!p.allows("chrome-extension://chat.example", "chat.example"));
        assert!(!p.allows("foo://chat.example:7878", "chat.example:7878"));
    }

    #[test]
    fn ipv6_hosts_compare_as_addresses() {
        let p = default_policy();
        assert!(p.allows("http://[::1]:7878", "[::1]:7878"));
        assert!(p.allows("http://[0:0::1]:7878", "[::1]:7878"));
        assert!(p.allows("http://[::1]", "[::1]:80"));
        assert!(!p.allows("http://[::2]:7878", "[::1]:7878"));
        assert!(!p.allows("http://[::1]:7879", "[::1]:7878"));
        assert!(!p.allows("http://[::1]:7878", "::1:7878"));
        assert!(!p.allows("http://[nonsense]:7878", "[nonsense]:7878"));
    }

    #[test]
    fn malformed_origins_and_hosts_are_not_same_origin() {
        let p = default_policy();
        for origin in [
            "",
            "127.0.0.1:7878",
            "http://",
            "http://127.0.0.1:7878/",
            "http://127.0.0.1:7878/path",
            "http://user@127.0.0.1:7878",
            "http://127.0.0.1:",
            "http://127.0.0.1:99999",
            "http://127.0.0.1:+80",
            "1http://127.0.0.1:7878",
            "http://127.0.0.1 :7878",
        ] {
            assert!(!p.allows(origin, "127.0.0.1:7878"), "{origin:?}");
        }
        for host in ["", ":7878", "127.0.0.1:", "127.0.0.1:x", "a b:7878"] {
            assert!(!p.allows("http://127.0.0.1:7878", host), "{host:?}");
        }
    }

    #[test]
    fn null_is_refused_unless_listed() {
        assert!(!default_policy().allows("null", "127.0.0.1:7878"));
        assert!(
            OriginPolicy::new(&["null"])
                .unwrap()
                .allows("null", "127.0.0.1:7878")
        );
        assert!(
            OriginPolicy::new(&["*"])
                .unwrap()
                .allows("null", "127.0.0.1:7878")
        );
        // Listing a real origin does not let `null` in.
        let p = OriginPolicy::new(&["https://app.example"]).unwrap();
        assert!(!p.allows("null", "127.0.0.1:7878"));
    }

    #[test]
    fn listed_origins_match_by_scheme_host_and_port() {
        let p = OriginPolicy::new(&["https://App.Example", "http://[::1]:8080", ""]).unwrap();
        assert!(p.allows("https://app.example", "127.0.0.1:7878"));
        assert!(p.allows("https://APP.example:443", "127.0.0.1:7878"));
        assert!(p.allows("http://[0::1]:8080", "127.0.0.1:7878"));
        // The scheme is part of a listed origin.
        assert!(!p.allows("http://app.example", "127.0.0.1:7878"));
        assert!(!p.allows("https://app.example:8443", "127.0.0.1:7878"));
        assert!(!p.allows("https://other.example", "127.0.0.1:7878"));
    }

    #[test]
    fn star_allows_everything() {
        let p = OriginPolicy::new(&["*"]).unwrap();
        for origin in ["http://evil.example", "null", "garbage", ""] {
            assert!(p.allows(origin, "127.0.0.1:7878"), "{origin:?}");
        }
    }

    #[test]
    fn bad_list_entries_are_errors() {
        for entry in [
            "https://app.example/",
            "app.example",
            "https://",
            "foo://no-port",
        ] {
            assert!(OriginPolicy::new(&[entry]).is_err(), "{entry:?}");
        }
        assert!(OriginPolicy::new(&["foo://with-port:1"]).is_ok());
        assert!(OriginPolicy::new(&[" https://app.example ", ""]).is_ok());
    }
}
