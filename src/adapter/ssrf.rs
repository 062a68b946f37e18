//! Upstream address policy: which department addresses the gateway may call.
//!
//! A department's `base_url` is data an (authenticated) department admin can
//! change at run time, so it is checked like hostile input: strict URL syntax
//! (no userinfo, no numeric host spellings other than a canonical dotted quad
//! or a bracketed IPv6), then every resolved address against the allow-list.
//! Loopback, private, link-local and other special addresses are refused by
//! default; cloud metadata addresses stay refused even when their category is
//! allowed, unless listed as an exact /32 (or /128). The caller connects to the
//! checked addresses of [`CheckedTarget`], never re-resolves, so there is no
//! DNS-rebinding window between check and use.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;

use ipnet::IpNet;
use thiserror::Error;

use crate::config::{ConfigError, ConfigErrors};

/// Cloud metadata endpoints (AWS/GCP/Azure/OpenStack, AWS ECS, Alibaba, AWS IPv6).
const METADATA_V4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(100, 100, 100, 200),
];
const METADATA_V6: [Ipv6Addr; 1] = [Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)];

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// The host of a base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamHost {
    /// A canonical dotted quad or a bracketed IPv6 literal.
    Ip(IpAddr),
    /// A DNS name (lowercase LDH labels, last label not numeric).
    Name(String),
}

/// A syntactically checked `base_url`; not yet resolved or policy-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    /// Scheme.
    pub scheme: Scheme,
    /// Host.
    pub host: UpstreamHost,
    /// Port (default 80/443).
    pub port: u16,
    /// Path prefix without trailing `/` (empty for none); adapters prepend it.
    pub base_path: String,
}

/// The target after the policy check: what the upstream client connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedTarget {
    /// Scheme.
    pub scheme: Scheme,
    /// Host name or IP literal (without brackets), for `Host` and TLS SNI.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Every address the host resolved to, each allowed by the policy.
    pub addrs: Vec<SocketAddr>,
    /// Path prefix without trailing `/`.
    pub base_path: String,
}

/// What kind of address an IP is, for the policy and for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// Globally routable: allowed.
    Public,
    /// 127/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16, 100.64/10 (CGNAT), fc00::/7, fec0::/10, 64:ff9b:1::/48.
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// A cloud metadata endpoint.
    Metadata,
    /// 0.0.0.0, :: (never allowed).
    Unspecified,
    /// 224/4, ff00::/8 (never allowed).
    Multicast,
    /// 255.255.255.255 (never allowed).
    Broadcast,
    /// Other special-purpose ranges (0/8, 240/4, documentation, benchmarking,
    /// Teredo, deprecated IPv4-compatible IPv6): only by explicit CIDR.
    Reserved,
}

impl fmt::Display for AddrClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddrClass::Public => "public",
            AddrClass::Loopback => "loopback",
            AddrClass::Private => "private",
            AddrClass::LinkLocal => "link-local",
            AddrClass::Metadata => "cloud metadata",
            AddrClass::Unspecified => "unspecified",
            AddrClass::Multicast => "multicast",
            AddrClass::Broadcast => "broadcast",
            AddrClass::Reserved => "reserved",
        })
    }
}

/// Why a base URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SsrfError {
    /// Only `http` and `https`.
    #[error("scheme must be http or https")]
    Scheme,
    /// `user@host` is refused outright.
    #[error("userinfo (`user@`) is not allowed in an upstream URL")]
    Userinfo,
    /// A host that is not a canonical dotted quad, a bracketed IPv6 or a DNS name
    /// (decimal, octal, hex or shortened IPv4 spellings, non-ASCII, zone ids).
    #[error("host `{0}` is not a canonical IPv4 address, bracketed IPv6 address or DNS name")]
    NonCanonicalHost(String),
    /// Other URL syntax problems.
    #[error("malformed upstream URL: {0}")]
    BadUrl(&'static str),
    /// The address is not allowed by the department's allow-list.
    #[error("address {addr} of `{host}` is {class} and not allowed for this department")]
    Refused {
        /// The host as written.
        host: String,
        /// The offending address.
        addr: IpAddr,
        /// Its class.
        class: AddrClass,
    },
    /// Name resolution failed.
    #[error("cannot resolve `{host}`: {reason}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's message.
        reason: String,
    },
}

impl SsrfError {
    /// As a configuration error on `field` of `file`.
    pub fn to_config_error(&self, file: &Path, field: &str) -> ConfigError {
        let fix = match self {
            SsrfError::Refused { .. } => {
                "use the department's public address, or allow the range in gateway.toml \
                 (departments.<name>.allow_upstream = [\"loopback\" | \"private\" | \
                 \"link-local\" | \"10.20.0.0/16\"])"
            }
            SsrfError::Resolve { .. } => "check the host name",
            _ => "write http(s)://host[:port][/path] with a DNS name or a plain IP address",
        };
        ConfigError::new(file, field, self.to_string(), fix)
    }
}

impl UpstreamTarget {
    /// Parses and syntax-checks a base URL.
    pub fn parse(url: &str) -> Result<Self, SsrfError> {
        let (scheme, rest) = url.split_once("://").ok_or(SsrfError::Scheme)?;
        let scheme = if scheme.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else {
            return Err(SsrfError::Scheme);
        };
        let auth_end = rest.find(['/', '?', '#', '\\']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(auth_end);
        if authority.contains('@') {
            return Err(SsrfError::Userinfo);
        }
        if authority.is_empty() {
            return Err(SsrfError::BadUrl("missing host"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (inside, after) = v6
                .split_once(']')
                .ok_or(SsrfError::BadUrl("unclosed `[`"))?;
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| SsrfError::NonCanonicalHost(inside.to_string()))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or(SsrfError::BadUrl("junk after `]`"))?,
                ),
            };
            (UpstreamHost::Ip(IpAddr::V6(ip)), port)
        } else {
            let (h, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            (parse_host(h)?, port)
        };
        let port = match port {
            None => scheme.default_port(),
            Some(p) => {
                if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(SsrfError::BadUrl("port must be 1-65535"));
                }
                match p.parse::<u16>() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(SsrfError::BadUrl("port must be 1-65535")),
                }
            }
        };
        let base_path = path.trim_end_matches('/');
        if !base_path.is_empty() {
            if !base_path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b))
            {
                return Err(SsrfError::BadUrl(
                    "the path may not hold a query, fragment, backslash, spaces or non-ASCII",
                ));
            }
            if base_path.contains("//")
                || base_path.split('/').skip(1).any(|s| s == "." || s == "..")
            {
                return Err(SsrfError::BadUrl("the path may not hold `//`, `.` or `..`"));
            }
        }
        Ok(UpstreamTarget {
            scheme,
            host,
            port,
            base_path: base_path.to_string(),
        })
    }

    /// The host as written (IPv6 without brackets).
    pub fn host_str(&self) -> String {
        match &self.host {
            UpstreamHost::Ip(ip) => ip.to_string(),
            UpstreamHost::Name(n) => n.clone(),
        }
    }
}

/// A host is a canonical dotted quad or a DNS name whose last label is not
/// numeric (WHATWG would read `127.1`, `0x7f.1`, `2130706433` as IPv4).
fn parse_host(h: &str) -> Result<UpstreamHost, SsrfError> {
    let bad = || SsrfError::NonCanonicalHost(h.to_string());
    if let Ok(ip) = h.parse::<Ipv4Addr>() {
        return if ip.to_string() == h {
            Ok(UpstreamHost::Ip(IpAddr::V4(ip)))
        } else {
            Err(bad())
        };
    }
    if h.is_empty() || h.len() > 253 {
        return Err(bad());
    }
    let lower = h.to_ascii_lowercase();
    for label in lower.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(bad());
        }
    }
    let last = lower.rsplit('.').next().unwrap_or("");
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .is_some_and(|x| x.bytes().all(|b| b.is_ascii_hexdigit()));
    if numeric {
        return Err(bad());
    }
    Ok(UpstreamHost::Name(lower))
}

/// Classifies an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddrClass {
    let o = ip.octets();
    if METADATA_V4.contains(&ip) {
        AddrClass::Metadata
    } else if ip.is_unspecified() {
        AddrClass::Unspecified
    } else if ip.is_broadcast() {
        AddrClass::Broadcast
    } else if ip.is_loopback() {
        AddrClass::Loopback
    } else if ip.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64) {
        AddrClass::Private
    } else if ip.is_link_local() {
        AddrClass::LinkLocal
    } else if ip.is_multicast() {
        AddrClass::Multicast
    } else if o[0] == 0
        || o[0] >= 240
        || (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
    {
        AddrClass::Reserved
    } else {
        AddrClass::Public
    }
}

/// The IPv4 address embedded in an IPv6 address by a translation form:
/// IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`
/// and 6to4 `2002::/16`.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        Some(v4)
    } else if (s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1))
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
    {
        // IPv4-compatible or NAT64 well-known prefix.
        Some(low)
    } else if s[0] == 0x2002 {
        Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ))
    } else {
        None
    }
}

/// Classifies an IPv6 address, looking through IPv4 translation forms.
pub fn classify_v6(ip: Ipv6Addr) -> AddrClass {
    let s = ip.segments();
    if METADATA_V6.contains(&ip) {
        return AddrClass::Metadata;
    }
    if ip.is_unspecified() {
        return AddrClass::Unspecified;
    }
    if ip.is_loopback() {
        return AddrClass::Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        let c = classify_v4(v4);
        // The deprecated IPv4-compatible form has no legitimate use.
        let compat = s[..6] == [0; 6];
        return if c == AddrClass::Public && compat {
            AddrClass::Reserved
        } else {
            c
        };
    }
    match s[0] {
        x if x & 0xfe00 == 0xfc00 => AddrClass::Private,
        x if x & 0xffc0 == 0xfe80 => AddrClass::LinkLocal,
        x if x & 0xffc0 == 0xfec0 => AddrClass::Private,
        x if x & 0xff00 == 0xff00 => AddrClass::Multicast,
        0x64 if s[1] == 0xff9b && s[2] == 1 => AddrClass::Private,
        0x2001 if s[1] == 0x0db8 || s[1] == 0 => AddrClass::Reserved,
        0x0100 if s[1..4] == [0, 0, 0] => AddrClass::Reserved,
        _ => AddrClass::Public,
    }
}

/// Classifies any IP address.
pub fn classify(ip: IpAddr) -> AddrClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// A department's upstream allow-list (`allow_upstream` in gateway.toml).
/// Empty (the default) allows public addresses only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    loopback: bool,
    private: bool,
    link_local: bool,
    /// Listed networks, each optionally pinned to one port.
    nets: Vec<(IpNet, Option<u16>)>,
}

impl AllowList {
    /// Parses entries: the words `loopback`, `private`, `link-local`, or CIDRs
    /// (`10.20.0.0/16`, `fd12::/64`; a bare address means /32 or /128),
    /// optionally pinned to one port: `10.20.0.5:8443`, `10.20.0.0/16:443`,
    /// `[fd12::5]:8443` (then only that port of those addresses is allowed).
    pub fn from_raw(entries: &[String], file: &Path, field: &str) -> Result<Self, ConfigErrors> {
        let mut out = AllowList::default();
        let mut errors = ConfigErrors::default();
        for (i, e) in entries.iter().enumerate() {
            match e.as_str() {
                "loopback" => out.loopback = true,
                "private" => out.private = true,
                "link-local" => out.link_local = true,
                other => {
                    let (addr, port) = split_port(other);
                    let net = addr
                        .parse::<IpNet>()
                        .or_else(|_| addr.parse::<IpAddr>().map(IpNet::from));
                    match (net, port) {
                        (_, Some(Err(()))) => errors.push(ConfigError::new(
                            file,
                            format!("{field}[{i}]"),
                            format!("`{other}` has no valid port"),
                            "pin a port 1-65535, e.g. 10.20.0.5:8443",
                        )),
                        (Ok(n), port) if n.trunc() == n => {
                            out.nets.push((n, port.and_then(Result::ok)));
                        }
                        (net, _) => match net {
                        Ok(_) => errors.push(ConfigError::new(
                            file,
                            format!("{field}[{i}]"),
                            format!("`{other}` has host bits set"),
                            "write the network address, e.g. 10.20.0.0/16",
                        )),
                        Err(_) => errors.push(ConfigError::new(
                            file,
                            format!("{field}[{i}]"),
                            format!("`{other}` is neither a category nor a CIDR"),
                            "use `loopback`, `private`, `link-local` or a CIDR like 10.20.0.0/16",
                        )),
                        },
                    }
                }
            }
        }
        errors.into_result(out)
    }

    /// Allows loopback (the shipped demo departments run on 127.0.0.1).
    pub fn with_loopback(mut self) -> Self {
        self.loopback = true;
        self
    }

    fn listed(&self, ip: IpAddr, port: Option<u16>, exact_only: bool) -> bool {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.nets.iter().any(|(n, pin)| {
            let host_route = n.prefix_len() == n.max_prefix_len();
            (!exact_only || host_route)
                && pin.is_none_or(|p| port == Some(p))
                && (n.contains(&ip) || embedded.is_some_and(|e| n.contains(&e)))
        })
    }

    /// `Ok` when `ip` may be called on any port (entries pinned to a port do
    /// not count); else its class.
    pub fn permits(&self, ip: IpAddr) -> Result<(), AddrClass> {
        self.permits_on(ip, None)
    }

    /// `Ok` when `addr` (address and port) may be called; else its class.
    pub fn permits_addr(&self, addr: SocketAddr) -> Result<(), AddrClass> {
        self.permits_on(addr.ip(), Some(addr.port()))
    }

    fn permits_on(&self, ip: IpAddr, port: Option<u16>) -> Result<(), AddrClass> {
        let class = classify(ip);
        let ok = match class {
            AddrClass::Public => true,
            AddrClass::Unspecified | AddrClass::Multicast | AddrClass::Broadcast => false,
            AddrClass::Metadata => self.listed(ip, port, true),
            AddrClass::Loopback => self.loopback || self.listed(ip, port, false),
            AddrClass::Private => self.private || self.listed(ip, port, false),
            AddrClass::LinkLocal => self.link_local || self.listed(ip, port, false),
            AddrClass::Reserved => self.listed(ip, port, false),
        };
        if ok { Ok(()) } else { Err(class) }
    }
}

/// Splits a port pin off an allow-list entry: `10.0.0.5:8443`,
/// `10.0.0.0/16:443`, `[fd12::5]:8443`, `[fd12::/64]:443`. A bare IPv6
/// address or network (no brackets) has no pin.
fn split_port(entry: &str) -> (&str, Option<Result<u16, ()>>) {
    let parse = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0).ok_or(());
    if let Some(rest) = entry.strip_prefix('[') {
        return match rest.split_once("]:") {
            Some((addr, port)) => (addr, Some(parse(port))),
            None => (rest.strip_suffix(']').unwrap_or(entry), None),
        };
    }
    match entry.rsplit_once(':') {
        Some((addr, port)) if !addr.contains(':') => (addr, Some(parse(port))),
        _ => (entry, None),
    }
}

/// The result of a name lookup.
pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Resolves host names; injectable so tests need no DNS.
pub trait Resolver: Send + Sync + fmt::Debug {
    /// All addresses of `host` (with `port` filled in).
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> LookupFuture<'a>;
}

/// The system resolver via `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str, port: u16) -> LookupFuture<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// Resolves `target` and checks every address against `allow`.
pub async fn check_target(
    target: &UpstreamTarget,
    allow: &AllowList,
    resolver: &dyn Resolver,
) -> Result<CheckedTarget, SsrfError> {
    let host = target.host_str();
    let mut addrs = match &target.host {
        UpstreamHost::Ip(ip) => vec![SocketAddr::new(*ip, target.port)],
        UpstreamHost::Name(name) => {
            resolver
                .lookup(name, target.port)
                .await
                .map_err(|e| SsrfError::Resolve {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
        }
    };
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(SsrfError::Resolve {
            host,
            reason: "no address".into(),
        });
    }
    for a in &mut addrs {
        a.set_port(target.port);
        allow.permits_addr(*a).map_err(|class| SsrfError::Refused {
            host: host.clone(),
            addr: a.ip(),
            class,
        })?;
        a.set_port(target.port);
    }
    Ok(CheckedTarget {
        scheme: target.scheme,
        host,
        port: target.port,
        addrs,
        base_path: target.base_path.clone(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Debug, Default)]
    struct FakeResolver(HashMap<String, Vec<IpAddr>>);

    impl Resolver for FakeResolver {
        fn lookup<'a>(&'a self, host: &'a str, port: u16) -> LookupFuture<'a> {
            let r = self
                .0
                .get(host)
                .map(|v| v.iter().map(|ip| SocketAddr::new(*ip, port)).collect())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"));
            Box::pin(async move { r })
        }
    }

    fn resolver() -> FakeResolver {
        let mut m = HashMap::new();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        m.insert("dept.gov.example".into(), vec![ip("203.0.114.10")]);
        m.insert(
            "rebind.example".into(),
            vec![ip("203.0.114.10"), ip("127.0.0.1")],
        );
        m.insert("meta.example".into(), vec![ip("169.254.169.254")]);
        m.insert("mapped.example".into(), vec![ip("::ffff:10.0.0.1")]);
        FakeResolver(m)
    }

    fn check(url: &str, allow: &AllowList) -> Result<CheckedTarget, SsrfError> {
        let t = UpstreamTarget::parse(url)?;
        let r = resolver();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(check_target(&t, allow, &r))
    }

    fn refused(url: &str, allow: &AllowList) -> AddrClass {
        match check(url, allow) {
            Err(SsrfError::Refused { class, .. }) => class,
            other => panic!("{url}: expected refusal, got {other:?}"),
        }
    }

    fn allow(words: &[&str]) -> AllowList {
        let v: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        AllowList::from_raw(
            &v,
            Path::new("gateway.toml"),
            "departments.x.allow_upstream",
        )
        .unwrap()
    }

    #[test]
    fn public_name_and_ip_are_allowed() {
        let c = check("https://dept.gov.example:8443/base/", &AllowList::default()).unwrap();
        assert_eq!(c.host, "dept.gov.example");
        assert_eq!(c.port, 8443);
        assert_eq!(c.base_path, "/base");
        assert_eq!(c.addrs, vec!["203.0.114.10:8443".parse().unwrap()]);
        assert!(check("http://8.8.8.8", &AllowList::default()).is_ok());
    }

    #[test]
    fn loopback_is_refused_by_default() {
        let none = AllowList::default();
        assert_eq!(refused("http://127.0.0.1:7101", &none), AddrClass::Loopback);
        assert_eq!(refused("http://127.8.9.10", &none), AddrClass::Loopback);
        assert_eq!(refused("http://[::1]:80", &none), AddrClass::Loopback);
        assert!(check("http://127.0.0.1:7101", &allow(&["loopback"])).is_ok());
    }

    #[test]
    fn unspecified_is_always_refused() {
        let all = allow(&["loopback", "private", "link-local", "0.0.0.0/0"]);
        assert_eq!(refused("http://0.0.0.0", &all), AddrClass::Unspecified);
        assert_eq!(refused("http://[::]", &all), AddrClass::Unspecified);
    }

    #[test]
    fn link_local_and_private_ranges_are_refused() {
        let none = AllowList::default();
        for (url, class) in [
            ("http://169.254.1.1", AddrClass::LinkLocal),
            ("http://[fe80::1]", AddrClass::LinkLocal),
            ("http://10.1.2.3", AddrClass::Private),
            ("http://172.16.0.1", AddrClass::Private),
            ("http://172.31.255.255", AddrClass::Private),
            ("http://192.168.1.1", AddrClass::Private),
            ("http://[fc00::1]", AddrClass::Private),
            ("http://[fd12:3456::1]", AddrClass::Private),
            ("http://100.64.0.1", AddrClass::Private),
            ("http://100.127.255.254", AddrClass::Private),
        ] {
            assert_eq!(refused(url, &none), class, "{url}");
        }
        assert!(check("http://172.32.0.1", &none).is_ok());
        assert!(check("http://10.1.2.3", &allow(&["private"])).is_ok());
        assert!(check("http://169.254.1.1", &allow(&["link-local"])).is_ok());
    }

    #[test]
    fn allow_list_entries_may_pin_a_port() {
        let pinned = allow(&["10.20.0.5:8443", "[fd12::5]:443", "10.30.0.0/16:80"]);
        assert!(check("https://10.20.0.5:8443", &pinned).is_ok());
        assert_eq!(refused("https://10.20.0.5:22", &pinned), AddrClass::Private);
        assert_eq!(refused("https://10.20.0.5", &pinned), AddrClass::Private);
        assert!(check("https://[fd12::5]", &pinned).is_ok());
        assert!(check("https://[fd12::5]:8443", &pinned).is_err());
        assert!(check("http://10.30.1.1", &pinned).is_ok());
        assert!(check("http://10.30.1.1:8080", &pinned).is_err());
        // Unpinned entries keep allowing every port.
        assert!(check("http://10.20.0.5:22", &allow(&["10.20.0.5"])).is_ok());
        for bad in [
            "10.20.0.5:0",
            "10.20.0.5:x",
            "10.20.0.5:70000",
            "[fd12::5]:",
        ] {
            assert!(
                AllowList::from_raw(&[bad.to_string()], Path::new("g.toml"), "a").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn metadata_needs_an_exact_entry() {
        let broad = allow(&["private", "link-local", "169.254.0.0/16", "100.64.0.0/10"]);
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://100.100.100.200",
            "http://[fd00:ec2::254]",
            "http://[::ffff:169.254.169.254]",
            "http://meta.example",
        ] {
            assert_eq!(refused(url, &broad), AddrClass::Metadata, "{url}");
        }
        assert!(check("http://169.254.169.254", &allow(&["169.254.169.254/32"])).is_ok());
    }

    #[test]
    fn ipv4_mapped_and_compatible_forms_are_seen_through() {
        let none = AllowList::default();
        for url in [
            "http://[::ffff:127.0.0.1]",
            "http://[::ffff:7f00:1]",
            "http://[::127.0.0.1]",
            "http://[0:0:0:0:0:ffff:7f00:0001]",
        ] {
            assert_eq!(refused(url, &none), AddrClass::Loopback, "{url}");
        }
        assert_eq!(
            refused("http://[::ffff:10.0.0.1]", &none),
            AddrClass::Private
        );
        assert_eq!(refused("http://mapped.example", &none), AddrClass::Private);
        // NAT64 and 6to4 embeddings.
        assert_eq!(
            refused("http://[64:ff9b::7f00:1]", &none),
            AddrClass::Loopback
        );
        assert_eq!(
            refused("http://[64:ff9b::a9fe:a9fe]", &none),
            AddrClass::Metadata
        );
        assert_eq!(
            refused("http://[2002:c0a8:101::1]", &none),
            AddrClass::Private
        );
    }

    #[test]
    fn numeric_host_spellings_are_refused() {
        for url in [
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://127.1/",
            "http://127.0.1/",
            "http://127.000.000.001/",
            "http://017700000001/",
            "http://1.2.3.4.5/",
            "http://%31%32%37.0.0.1/",
            "http://[::1%25eth0]/",
            "http://exa mple.com/",
            "http://例子.测试/",
            "http://host./",
            "http://-bad.example/",
        ] {
            assert!(
                matches!(
                    UpstreamTarget::parse(url),
                    Err(SsrfError::NonCanonicalHost(_))
                ),
                "{url}: {:?}",
                UpstreamTarget::parse(url)
            );
        }
    }

    #[test]
    fn userinfo_is_refused() {
        for url in [
            "http://ok@127.0.0.1",
            "http://dept.gov.example@127.0.0.1/",
            "http://user:pw@dept.gov.example/",
            "http://@dept.gov.example/",
        ] {
            assert_eq!(
                UpstreamTarget::parse(url),
                Err(SsrfError::Userinfo),
                "{url}"
            );
        }
    }

    #[test]
    fn other_schemes_are_refused() {
        for url in [
            "file:///etc/passwd",
            "gopher://dept.gov.example/",
            "ftp://dept.gov.example/",
            "//dept.gov.example/",
            "dept.gov.example",
            "javascript://x",
        ] {
            assert_eq!(UpstreamTarget::parse(url), Err(SsrfError::Scheme), "{url}");
        }
        assert!(UpstreamTarget::parse("HTTPS://dept.gov.example").is_ok());
    }

    #[test]
    fn multicast_and_broadcast_are_refused() {
        let all = allow(&["loopback", "private", "link-local", "0.0.0.0/0", "::/0"]);
        assert_eq!(refused("http://224.0.0.1", &all), AddrClass::Multicast);
        assert_eq!(
            refused("http://239.255.255.250", &all),
            AddrClass::Multicast
        );
        assert_eq!(refused("http://[ff02::1]", &all), AddrClass::Multicast);
        assert_eq!(
            refused("http://255.255.255.255", &all),
            AddrClass::Broadcast
        );
    }

    #[test]
    fn every_resolved_address_is_checked() {
        assert_eq!(
            refused("http://rebind.example", &AllowList::default()),
            AddrClass::Loopback
        );
        assert!(matches!(
            check("http://unknown.example", &AllowList::default()),
            Err(SsrfError::Resolve { .. })
        ));
    }

    #[test]
    fn explicit_cidr_allows_only_its_range() {
        let a = allow(&["10.20.0.0/16"]);
        assert!(check("http://10.20.3.4", &a).is_ok());
        assert!(check("http://[::ffff:10.20.3.4]", &a).is_ok());
        assert_eq!(refused("http://10.21.0.1", &a), AddrClass::Private);
        assert_eq!(refused("http://127.0.0.1", &a), AddrClass::Loopback);
    }

    #[test]
    fn bad_allow_entries_are_named() {
        let v = vec![
            "loopback".to_string(),
            "intranet".to_string(),
            "10.20.0.1/16".to_string(),
        ];
        let e = AllowList::from_raw(
            &v,
            Path::new("gateway.toml"),
            "departments.x.allow_upstream",
        )
        .unwrap_err();
        assert_eq!(e.0.len(), 2);
        assert_eq!(e.0[0].field, "departments.x.allow_upstream[1]");
        assert_eq!(e.0[1].field, "departments.x.allow_upstream[2]");
    }

    #[test]
    fn url_syntax_is_strict() {
        assert!(UpstreamTarget::parse("http://dept.gov.example:0").is_err());
        assert!(UpstreamTarget::parse("http://dept.gov.example:65536").is_err());
        assert!(UpstreamTarget::parse("http://dept.gov.example:+80").is_err());
        assert!(UpstreamTarget::parse("http://dept.gov.example/a?b").is_err());
        assert!(UpstreamTarget::parse("http://dept.gov.example/a#b").is_err());
        assert!(UpstreamTarget::parse("http://dept.gov.example\\@127.0.0.1").is_err());
        assert!(UpstreamTarget::parse("http://dept.gov.example/a/../b").is_err());
        assert!(UpstreamTarget::parse("http://[::1").is_err());
        let t = UpstreamTarget::parse("http://Dept.Gov.Example").unwrap();
        assert_eq!(t.host, UpstreamHost::Name("dept.gov.example".into()));
        assert_eq!(t.port, 80);
    }
}
