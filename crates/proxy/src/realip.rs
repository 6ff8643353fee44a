//! Trusted proxies in front of the gateway: Kong's `trusted_ips`, `real_ip_header` and
//! `real_ip_recursive` (kong.conf), which Kong hands to nginx's realip module.
//!
//! A gateway behind a load balancer sees the balancer's address as the client. When the
//! connection comes from a trusted address:
//! - the client address is taken from `real_ip_header` (default `X-Real-IP`; with
//!   `X-Forwarded-For`, the rightmost entry, or with `real_ip_recursive` the rightmost
//!   entry that is not itself trusted), and it is what `X-Real-IP`, consistent hashing
//!   on `ip` and an absent `X-Forwarded-For` carry upstream;
//! - the client's own `X-Forwarded-Proto/-Host/-Port/-Path/-Prefix` are passed on as they
//!   came (the balancer terminated TLS and knows the original scheme and host).
//!
//! From any other address none of those headers is believed: Kong's default, an empty
//! `trusted_ips`, trusts nobody. `X-Forwarded-For` is always the client's list plus the
//! address of the peer that connected (nginx's `$realip_remote_addr`), as Kong builds it.

use std::net::IpAddr;

use http::HeaderName;

use crate::headers::HeaderView;

/// One `trusted_ips` entry: an address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    network: IpAddr,
    prefix: u8,
}

impl IpBlock {
    /// Parse `10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32` or `::1`. An address with host
    /// bits set below the prefix is accepted as nginx's `set_real_ip_from` accepts it
    /// (the bits are ignored).
    pub fn parse(text: &str) -> Result<IpBlock, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpBlock { network, prefix })
    }

    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The realip settings (Kong: `trusted_ips`, `real_ip_header`, `real_ip_recursive`).
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    blocks: Vec<IpBlock>,
    header: HeaderName,
    recursive: bool,
}

impl Default for TrustedProxies {
    /// Kong's defaults: nobody is trusted; `X-Real-IP`; not recursive.
    fn default() -> Self {
        TrustedProxies {
            blocks: Vec::new(),
            header: HeaderName::from_static("x-real-ip"),
            recursive: false,
        }
    }
}

impl TrustedProxies {
    pub fn new(blocks: Vec<IpBlock>, header: HeaderName, recursive: bool) -> Self {
        TrustedProxies {
            blocks,
            header,
            recursive,
        }
    }

    /// Whether a connection from `ip` may speak for its clients.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// The client address of a request that arrived from the trusted `peer`: from the
    /// real-IP header when it holds a usable address, else `peer` (nginx keeps the
    /// connection's address when the header is absent or unparsable).
    pub fn client_of(&self, peer: IpAddr, headers: HeaderView<'_>) -> IpAddr {
        let mut found = None;
        let mut all_trusted_leftmost = None;
        // Entries right to left over every instance of the header (later instances are
        // further right, as if the headers were joined with ", ").
        let values = headers
            .values(self.header.as_str())
            .rev()
            .filter_map(crate::wire::header_str);
        'scan: for value in values {
            for entry in value.rsplit(',') {
                let Some(ip) = parse_entry(entry) else {
                    // nginx stops at an entry it cannot parse and keeps what it had.
                    break 'scan;
                };
                if self.recursive && self.is_trusted(ip) {
                    all_trusted_leftmost = Some(ip);
                    continue;
                }
                found = Some(ip);
                break 'scan;
            }
        }
        found.or(all_trusted_leftmost).unwrap_or(peer)
    }
}

/// One address of a real-IP header: `192.0.2.7`, `[2001:db8::1]`, `192.0.2.7:5555` or
/// `[2001:db8::1]:5555` (some balancers append the port).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sock) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical(sock.ip()));
    }
    entry
        .strip_prefix('[')
        .and_then(|e| e.strip_suffix(']'))
        .and_then(|e| e.parse::<IpAddr>().ok())
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(blocks: &[&str], header: &'static str, recursive: bool) -> TrustedProxies {
        TrustedProxies::new(
            blocks.iter().map(|b| IpBlock::parse(b).unwrap()).collect(),
            HeaderName::from_static(header),
            recursive,
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn blocks_parse_and_match_like_set_real_ip_from() {
        let b = IpBlock::parse("10.0.0.0/8").unwrap();
        assert!(b.contains(ip("10.1.2.3")));
        assert!(!b.contains(ip("11.0.0.1")));
        assert!(
            b.contains(ip("::ffff:10.9.9.9")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(
            IpBlock::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("203.0.113.9"))
        );
        assert!(IpBlock::parse("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(
            IpBlock::parse("192.0.2.7")
                .unwrap()
                .contains(ip("192.0.2.7"))
        );
        assert!(
            !IpBlock::parse("192.0.2.7")
                .unwrap()
                .contains(ip("192.0.2.8"))
        );
        assert!(
            IpBlock::parse("2001:db8::/32")
                .unwrap()
                .contains(ip("2001:db8:1::5"))
        );
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0.0/x", "::/129", ""] {
            assert!(IpBlock::parse(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn x_real_ip_names_the_client() {
        let p = proxies(&["10.0.0.0/8"], "x-real-ip", false);
        let h = headers(&[("x-real-ip", "203.0.113.9")]);
        assert_eq!(
            p.client_of(ip("10.0.0.1"), HeaderView::Map(&h)),
            ip("203.0.113.9")
        );
        assert_eq!(
            p.client_of(ip("10.0.0.1"), HeaderView::Map(&HeaderMap::new())),
            ip("10.0.0.1"),
            "no header: the peer stays the client"
        );
        let garbage = headers(&[("x-real-ip", "not-an-ip")]);
        assert_eq!(
            p.client_of(ip("10.0.0.1"), HeaderView::Map(&garbage)),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn x_forwarded_for_takes_the_rightmost_entry_or_the_rightmost_untrusted_one() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1, 203.0.113.9"),
            ("x-forwarded-for", "10.0.0.5"),
        ]);
        let plain = proxies(&["10.0.0.0/8"], "x-forwarded-for", false);
        assert_eq!(
            plain.client_of(ip("10.0.0.1"), HeaderView::Map(&h)),
            ip("10.0.0.5")
        );
        let recursive = proxies(&["10.0.0.0/8"], "x-forwarded-for", true);
        assert_eq!(
            recursive.client_of(ip("10.0.0.1"), HeaderView::Map(&h)),
            ip("203.0.113.9")
        );
        let all_trusted = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.5")]);
        assert_eq!(
            recursive.client_of(ip("10.0.0.1"), HeaderView::Map(&all_trusted)),
            ip("10.0.0.7"),
            "every entry trusted: the leftmost"
        );
        let with_ports = headers(&[("x-forwarded-for", "[2001:db8::9]:443, 203.0.113.9:5555")]);
        assert_eq!(
            plain.client_of(ip("10.0.0.1"), HeaderView::Map(&with_ports)),
            ip("203.0.113.9")
        );
    }
}
