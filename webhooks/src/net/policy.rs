//! The SSRF network policy: which addresses a delivery may connect to, checked after DNS
//! resolution (so a name that resolves to a private address is refused too), and the CIDR
//! networks it is written in.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a CIDR network.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpNetError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("{0:?} is not an IP address")]
    InvalidAddress(String),
    /// The prefix length is not a number between 0 and the address width.
    #[error("{prefix:?} is not a prefix length between 0 and {max}")]
    InvalidPrefix {
        /// The rejected prefix text.
        prefix: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

/// An IP network in CIDR notation: `10.0.0.0/8`, `::1/128`; a bare address means a single host.
///
/// Host bits are cleared on construction, so `10.1.2.3/8` is `10.0.0.0/8`. (De)serialized as
/// its string form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// A network from an address and a prefix length (host bits are cleared).
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, IpNetError> {
        let max = max_prefix(addr);
        if prefix > max {
            return Err(IpNetError::InvalidPrefix {
                prefix: prefix.to_string(),
                max,
            });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix))),
        };
        Ok(Self { addr, prefix })
    }

    /// A network for the refusal table; callers pass canonical networks.
    const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
            prefix,
        }
    }

    /// A network for the refusal table; callers pass canonical networks.
    const fn v6(segments: [u16; 8], prefix: u8) -> Self {
        let s = segments;
        Self {
            addr: IpAddr::V6(Ipv6Addr::new(
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7],
            )),
            prefix,
        }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies in this network. An address of the other family never does.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = mask_v4(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = mask_v6(self.prefix);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0)
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| IpNetError::InvalidAddress(addr_text.to_owned()))?;
        let max = max_prefix(addr);
        let prefix = match prefix_text {
            None => max,
            Some(p) => {
                // u8::from_str accepts "+8"; a CIDR prefix is digits only.
                let valid = !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit());
                let invalid = || IpNetError::InvalidPrefix {
                    prefix: p.to_owned(),
                    max,
                };
                if !valid {
                    return Err(invalid());
                }
                p.parse::<u8>().map_err(|_| invalid())?
            }
        };
        Self::new(addr, prefix)
    }
}

impl TryFrom<String> for IpNet {
    type Error = IpNetError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<IpNet> for String {
    fn from(net: IpNet) -> Self {
        net.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Network policy

/// Networks refused by default: everything that is not a globally routed unicast address.
const REFUSED: &[IpNet] = &[
    // IPv4
    IpNet::v4(0, 0, 0, 0, 8), // "this network", incl. the unspecified 0.0.0.0
    IpNet::v4(10, 0, 0, 0, 8), // private
    IpNet::v4(100, 64, 0, 0, 10), // carrier-grade NAT (shared address space)
    IpNet::v4(127, 0, 0, 0, 8), // loopback
    IpNet::v4(169, 254, 0, 0, 16), // link-local (incl. cloud metadata 169.254.169.254)
    IpNet::v4(172, 16, 0, 0, 12), // private
    IpNet::v4(192, 0, 0, 0, 24), // IETF protocol assignments
    IpNet::v4(192, 0, 2, 0, 24), // documentation (TEST-NET-1)
    IpNet::v4(192, 88, 99, 0, 24), // deprecated 6to4 relay anycast
    IpNet::v4(192, 168, 0, 0, 16), // private
    IpNet::v4(198, 18, 0, 0, 15), // benchmarking
    IpNet::v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    IpNet::v4(203, 0, 113, 0, 24), // documentation (TEST-NET-3)
    IpNet::v4(224, 0, 0, 0, 4), // multicast
    IpNet::v4(240, 0, 0, 0, 4), // reserved, incl. broadcast 255.255.255.255
    // IPv6
    IpNet::v6([0, 0, 0, 0, 0, 0, 0, 0], 128), // unspecified
    IpNet::v6([0, 0, 0, 0, 0, 0, 0, 1], 128), // loopback
    IpNet::v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), // local-use NAT64 (RFC 8215)
    IpNet::v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard-only
    IpNet::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23), // IETF protocol assignments: Teredo, benchmarking, ORCHID
    IpNet::v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
    IpNet::v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), // documentation (RFC 9637)
    IpNet::v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),  // unique local (private)
    IpNet::v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
    IpNet::v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // deprecated site-local
    IpNet::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),  // multicast
];

/// The IPv4 address an IPv6 address stands for, when it embeds one: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), NAT64 (`64:ff9b::a.b.c.d`) and
/// 6to4 (`2002:aabb:ccdd::`). Each can reach the embedded IPv4 host, so each is judged by it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let o = ip.octets();
    let low = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // `::` and `::1` are not IPv4-compatible addresses (RFC 4291 §2.5.5.1); they have entries
    // of their own in the table, and `allow_loopback` opens `::1` by its own entry.
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// Which addresses delivery may connect to (the defence against server-side request forgery).
///
/// By default every address that is not a globally routed unicast address is refused:
///
/// - IPv4: `0.0.0.0/8` (incl. unspecified), `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`
///   (private), `100.64.0.0/10` (CGNAT), `127.0.0.0/8` (loopback), `169.254.0.0/16`
///   (link-local, incl. cloud metadata), `192.0.0.0/24`, `192.0.2.0/24`, `198.51.100.0/24`,
///   `203.0.113.0/24` (protocol assignments, documentation), `192.88.99.0/24`, `198.18.0.0/15`
///   (benchmarking), `224.0.0.0/4` (multicast), `240.0.0.0/4` (reserved, incl. broadcast).
/// - IPv6: `::` and `::1`, `fc00::/7` (unique local), `fe80::/10` (link-local), `fec0::/10`,
///   `ff00::/8` (multicast), `100::/64`, `2001::/23` (incl. Teredo, benchmarking),
///   `2001:db8::/32` and `3fff::/20` (documentation), `64:ff9b:1::/48` (local NAT64).
/// - IPv6 addresses that embed an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible
///   `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged by the embedded address.
///
/// Networks added with [`allow`](NetworkPolicy::allow) are permitted even when they overlap a
/// refused range. The policy is applied to the addresses a host name resolves to, and the
/// connection goes only to a permitted one, so a DNS answer cannot steer a delivery to a
/// refused address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Networks permitted even though the defaults refuse them.
    allow: Vec<IpNet>,
}

impl NetworkPolicy {
    /// The default policy: refuse every non-global address (see the type's docs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Also permits `net` (e.g. an internal `10.1.0.0/16` of trusted receivers).
    #[must_use]
    pub fn allow(mut self, net: IpNet) -> Self {
        if !self.allow.contains(&net) {
            self.allow.push(net);
        }
        self
    }

    /// Also permits loopback: `127.0.0.0/8` and `::1` (tests, local development).
    #[must_use]
    pub fn allow_loopback(self) -> Self {
        self.allow(IpNet::v4(127, 0, 0, 0, 8))
            .allow(IpNet::v6([0, 0, 0, 0, 0, 0, 0, 1], 128))
    }

    /// The networks opened with [`allow`](NetworkPolicy::allow).
    pub fn allowed(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        if self.is_allowed(ip) {
            return true;
        }
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_v4(v6)
        {
            let v4 = IpAddr::V4(v4);
            if self.is_allowed(v4) {
                return true;
            }
            if is_refused(v4) {
                return false;
            }
        }
        !is_refused(ip)
    }

    fn is_allowed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(ip))
    }
}

fn is_refused(ip: IpAddr) -> bool {
    REFUSED.iter().any(|net| net.contains(ip))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may panic on failure
mod tests {
    use super::super::tests::ip;
    use super::*;

    #[test]
    fn ipnet_parses_cidr_and_bare_addresses() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(net.addr(), ip("10.0.0.0"));
        assert_eq!(net.prefix_len(), 8);
        assert_eq!(net.to_string(), "10.0.0.0/8");

        let net: IpNet = "::1/128".parse().unwrap();
        assert_eq!(net.addr(), ip("::1"));
        assert_eq!(net.prefix_len(), 128);

        let host: IpNet = "192.0.2.7".parse().unwrap();
        assert_eq!(host.prefix_len(), 32);
        let host6: IpNet = "2001:db8::1".parse().unwrap();
        assert_eq!(host6.prefix_len(), 128);

        // Host bits are cleared.
        let net: IpNet = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        let net: IpNet = "fe80::1/10".parse().unwrap();
        assert_eq!(net.to_string(), "fe80::/10");

        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("255.255.255.255")));
        assert!(!all.contains(ip("::1")), "families never mix");
    }

    #[test]
    fn ipnet_rejects_garbage() {
        for bad in [
            "",
            "10.0.0/8",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "x/8",
            "10.0.0.0/+8",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            "10.0.0.0/33".parse::<IpNet>(),
            Err(IpNetError::InvalidPrefix {
                prefix: "33".into(),
                max: 32
            })
        );
        assert_eq!(
            "nope/8".parse::<IpNet>(),
            Err(IpNetError::InvalidAddress("nope".into()))
        );
    }

    #[test]
    fn ipnet_contains_is_exact_at_the_edges() {
        let net: IpNet = "172.16.0.0/12".parse().unwrap();
        assert!(net.contains(ip("172.16.0.0")));
        assert!(net.contains(ip("172.31.255.255")));
        assert!(!net.contains(ip("172.15.255.255")));
        assert!(!net.contains(ip("172.32.0.0")));
        let net6: IpNet = "fc00::/7".parse().unwrap();
        assert!(net6.contains(ip("fdff:ffff::1")));
        assert!(!net6.contains(ip("fe00::1")));
    }

    #[test]
    fn ipnet_serde_is_a_string() {
        let net: IpNet = "10.0.0.0/8".parse().unwrap();
        assert_eq!(serde_json::to_string(&net).unwrap(), r#""10.0.0.0/8""#);
        let back: IpNet = serde_json::from_str(r#""10.0.0.0/8""#).unwrap();
        assert_eq!(back, net);
        assert!(serde_json::from_str::<IpNet>(r#""10.0.0.0/99""#).is_err());
    }

    /// One address in each refused range, plus its IPv4-mapped form for IPv4 ranges.
    const REFUSED_SAMPLES: &[&str] = &[
        "0.0.0.0",
        "0.1.2.3",
        "10.0.0.1",
        "10.255.255.255",
        "100.64.0.1",
        "100.127.255.254",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.169.254",
        "172.16.0.1",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.1.1",
        "198.18.0.1",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "64:ff9b:1::1",
        "100::1",
        "2001::1",
        "2001:2::1",
        "2001:db8::1",
        "3fff::1",
        "fc00::1",
        "fd12:3456::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "ff02::1",
        "ff0e::1",
    ];

    #[test]
    fn default_policy_refuses_every_non_global_range() {
        let policy = NetworkPolicy::new();
        for s in REFUSED_SAMPLES {
            let addr = ip(s);
            assert!(!policy.permits(addr), "{s} permitted");
            if let IpAddr::V4(v4) = addr {
                let mapped = IpAddr::V6(v4.to_ipv6_mapped());
                assert!(!policy.permits(mapped), "{mapped} (mapped {s}) permitted");
            }
        }
        // Every entry of the table is exercised by a sample.
        for net in REFUSED {
            assert!(
                REFUSED_SAMPLES.iter().any(|s| net.contains(ip(s))),
                "no sample in {net}"
            );
        }
    }

    #[test]
    fn default_policy_refuses_ipv6_forms_embedding_refused_ipv4() {
        let policy = NetworkPolicy::new();
        for s in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",    // IPv4-compatible
            "::10.0.0.1",     // IPv4-compatible
            "64:ff9b::a00:1", // NAT64 of 10.0.0.1
            "64:ff9b::7f00:1",
            "2002:c0a8:101::1", // 6to4 of 192.168.1.1
            "2002:7f00:1::",
        ] {
            assert!(!policy.permits(ip(s)), "{s} permitted");
        }
        // The same forms of a global address are permitted.
        for s in [
            "::ffff:93.184.216.34",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(policy.permits(ip(s)), "{s} refused");
        }
    }

    #[test]
    fn default_policy_permits_global_addresses() {
        let policy = NetworkPolicy::new();
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001:81b::200e",
        ] {
            assert!(policy.permits(ip(s)), "{s} refused");
        }
    }

    #[test]
    fn allow_opens_a_refused_network_and_its_mapped_forms() {
        let policy = NetworkPolicy::new().allow("10.1.0.0/16".parse().unwrap());
        assert!(policy.permits(ip("10.1.2.3")));
        assert!(policy.permits(ip("::ffff:10.1.2.3")));
        assert!(!policy.permits(ip("10.2.0.1")));
        assert!(!policy.permits(ip("127.0.0.1")));

        let loopback = NetworkPolicy::new().allow_loopback();
        assert!(loopback.permits(ip("127.0.0.1")));
        assert!(loopback.permits(ip("127.8.9.10")));
        assert!(loopback.permits(ip("::1")));
        assert!(loopback.permits(ip("::ffff:127.0.0.1")));
        assert!(!loopback.permits(ip("10.0.0.1")));
        assert!(!loopback.permits(ip("::")));
        assert_eq!(loopback.allowed().len(), 2);
        // Allowing twice keeps one entry.
        assert_eq!(loopback.allow_loopback().allowed().len(), 2);
    }

    #[test]
    fn policy_serde_round_trips() {
        let policy = NetworkPolicy::new().allow_loopback();
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(json, r#"{"allow":["127.0.0.0/8","::1/128"]}"#);
        let back: NetworkPolicy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, policy);
        let empty: NetworkPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, NetworkPolicy::new());
    }
}
