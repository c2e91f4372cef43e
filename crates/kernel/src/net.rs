//! Network address ranges (CIDR blocks), for settings that name networks
//! such as the proxies trusted to report the client's address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An IPv4 or IPv6 network: `10.0.0.0/8`, `::1/128`, or a bare address
/// (a network of one). Kept as its first address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IpCidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or a CIDR block such as 10.0.0.0/8")]
pub struct BadCidr(String);

impl IpCidr {
    /// Whether `ip` is in this network. An IPv4 address written as IPv6
    /// (`::ffff:10.0.0.1`, as a dual-stack socket reports it) counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_u32(u32::from(ip), self.prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_u128(u128::from(ip), self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

/// The part of a client's address that names the client, for counting and
/// limiting per client: an IPv4 address itself, an IPv6 address's /64 (one
/// subscriber usually holds a whole /64, so its addresses count as one).
/// An IPv4 address written as IPv6 counts as IPv4.
pub fn client_prefix(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(mask_u128(u128::from(v6), 64).into()),
    }
}

fn mask_u32(bits: u32, prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(prefix))) }
}

fn mask_u128(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(prefix))) }
}

impl FromStr for IpCidr {
    type Err = BadCidr;

    /// Host bits must be zero (`10.0.0.1/8` is refused): a typo there
    /// would otherwise trust a network nobody meant.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || BadCidr(raw.to_owned());
        let text = raw.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u8>().map_err(|_| bad())?,
            Some(_) => return Err(bad()),
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        let host_bits_clear = match addr {
            IpAddr::V4(a) => mask_u32(u32::from(a), prefix) == u32::from(a),
            IpAddr::V6(a) => mask_u128(u128::from(a), prefix) == u128::from(a),
        };
        if !host_bits_clear {
            return Err(bad());
        }
        Ok(IpCidr { network: addr, prefix })
    }
}

impl TryFrom<String> for IpCidr {
    type Error = BadCidr;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<IpCidr> for String {
    fn from(c: IpCidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let net: IpCidr = "10.0.0.0/8".parse().unwrap();
        assert!(net.contains(ip("10.255.1.2")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6 is IPv4");
        assert!(!net.contains(ip("11.0.0.0")));
        assert!(!net.contains(ip("::1")));
        let one: IpCidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: IpCidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12:3456::1")) && !v6.contains(ip("fe80::1")));
        let all: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        let odd: IpCidr = "172.16.0.0/12".parse().unwrap();
        assert!(odd.contains(ip("172.31.255.255")) && !odd.contains(ip("172.32.0.0")));
    }

    #[test]
    fn clients_are_their_ipv4_address_or_ipv6_64() {
        assert_eq!(client_prefix(ip("203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(client_prefix(ip("::ffff:203.0.113.9")), ip("203.0.113.9"));
        assert_eq!(client_prefix(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
        assert_eq!(client_prefix(ip("2001:db8:1:2::1")), client_prefix(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(client_prefix(ip("2001:db8:1:2::1")), client_prefix(ip("2001:db8:1:3::1")));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0.1/8", "10.0.0.0/", "10.0.0.0/-1", "10.0.0/8", "example.com", "10.0.0.0/8/8", "10.0.0.0/+8"] {
            assert!(bad.parse::<IpCidr>().is_err(), "{bad}");
        }
        let parsed: Vec<IpCidr> = serde_json::from_str(r#"["127.0.0.1/32", "::1/128"]"#).unwrap();
        assert_eq!(serde_json::to_string(&parsed).unwrap(), r#"["127.0.0.1/32","::1/128"]"#);
    }
}
