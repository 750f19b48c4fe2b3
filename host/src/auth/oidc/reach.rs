//! Which addresses an issuer's discovery and JWKS fetches may reach.
//!
//! A discovery document names the `jwks_uri`, and a DNS answer names the
//! address: both come from outside, so neither may steer Gantry at the
//! cloud's metadata service or at the private network it runs in.
//!
//! - Link-local and cloud-metadata addresses (169.254.0.0/16, fe80::/10,
//!   fd00:ec2::254), unspecified, broadcast and multicast addresses are never
//!   reached, whatever the configuration says.
//! - Loopback and private addresses (127.0.0.0/8, ::1, 10.0.0.0/8,
//!   172.16.0.0/12, 192.168.0.0/16, 100.64.0.0/10, fc00::/7) are reached only
//!   when the issuer is itself on one — its URL, or its configured
//!   `discovery_url`, names `localhost` or such an address — or the issuer
//!   sets `allow_private_network = true` (in-cluster issuers behind a
//!   private DNS name).
//!
//! Every address is checked after resolution, by the client's resolver, and
//! a URL naming an address directly is checked before the request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::config::issuer::IssuerConfig;

/// What one issuer's fetches may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reach {
    /// Loopback and private addresses too.
    pub private: bool,
}

/// Why an address is not reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("a link-local or cloud-metadata address is never fetched")]
    LinkLocal,
    #[error("an unspecified, broadcast or multicast address is never fetched")]
    NotUnicast,
    #[error(
        "a private or loopback address is fetched only for an issuer on one, or with allow_private_network = true"
    )]
    Private,
}

/// The AWS instance-metadata service's IPv6 address.
const EC2_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

enum Class {
    LinkLocal,
    NotUnicast,
    Private,
    Public,
}

fn class_v4(ip: Ipv4Addr) -> Class {
    let [a, b, ..] = ip.octets();
    if ip.is_link_local() {
        Class::LinkLocal
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 {
        Class::NotUnicast
    } else if ip.is_loopback() || ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Class::Private
    } else {
        Class::Public
    }
}

fn class(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => {
            // ::ffff:a.b.c.d reaches a.b.c.d.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return class_v4(v4);
            }
            let first = v6.segments()[0];
            if v6 == EC2_METADATA_V6 || (first & 0xffc0) == 0xfe80 {
                Class::LinkLocal
            } else if v6.is_unspecified() || v6.is_multicast() {
                Class::NotUnicast
            } else if v6.is_loopback() || (first & 0xfe00) == 0xfc00 {
                Class::Private
            } else {
                Class::Public
            }
        }
    }
}

/// Whether a URL's host is `localhost` or a loopback or private address.
fn names_local_host(raw: &str) -> bool {
    let Ok(url) = url::Url::parse(raw) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => matches!(class_v4(ip), Class::Private),
        Some(url::Host::Ipv6(ip)) => matches!(class(IpAddr::V6(ip)), Class::Private),
        None => false,
    }
}

impl Reach {
    /// What `cfg`'s fetches may reach.
    pub fn of(cfg: &IssuerConfig) -> Reach {
        Reach {
            private: cfg.allow_private_network
                || names_local_host(&cfg.issuer)
                || cfg.discovery_url.as_deref().is_some_and(names_local_host),
        }
    }

    /// Whether `ip` may be fetched from.
    pub fn check(self, ip: IpAddr) -> Result<(), Refusal> {
        match class(ip) {
            Class::LinkLocal => Err(Refusal::LinkLocal),
            Class::NotUnicast => Err(Refusal::NotUnicast),
            Class::Private if !self.private => Err(Refusal::Private),
            Class::Private | Class::Public => Ok(()),
        }
    }

    /// Checks a URL that names an address directly (a name is checked when
    /// it resolves).
    pub fn check_url(self, url: &url::Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        self.check(ip).map_err(|why| format!("{ip}: {why}"))
    }
}

/// The client's resolver: the system's, keeping only addresses [`Reach`]
/// allows, so a name cannot resolve its way past the rules.
pub(crate) struct GuardedResolver {
    pub reach: Reach,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.reach;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match reach.check(addr.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused.get_or_insert((addr.ip(), why));
                        false
                    }
                })
                .collect();
            match (kept.is_empty(), refused) {
                (true, Some((ip, why))) => Err(format!("{host} resolves to {ip}: {why}").into()),
                (true, None) => Err(format!("{host} resolves to no address").into()),
                (false, _) => Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs),
            }
        })
    }
}

impl GuardedResolver {
    pub fn new(reach: Reach) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver { reach })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn metadata_and_link_local_are_never_reached() {
        for reach in [Reach { private: false }, Reach { private: true }] {
            for addr in [
                "169.254.169.254",
                "169.254.0.1",
                "fe80::1",
                "febf::1",
                "fd00:ec2::254",
                "::ffff:169.254.169.254",
                "0.0.0.0",
                "::",
                "255.255.255.255",
                "224.0.0.1",
                "ff02::1",
                "0.1.2.3",
            ] {
                assert!(reach.check(ip(addr)).is_err(), "{addr} with {reach:?}");
            }
        }
    }

    #[test]
    fn private_addresses_only_for_an_issuer_on_one() {
        let public = Reach { private: false };
        let private = Reach { private: true };
        for addr in [
            "127.0.0.1",
            "127.9.9.9",
            "::1",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "fd12::1",
            "fc00::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(public.check(ip(addr)), Err(Refusal::Private), "{addr}");
            assert_eq!(private.check(ip(addr)), Ok(()), "{addr}");
        }
        for addr in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "fec0::1",
        ] {
            assert_eq!(public.check(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn an_issuer_on_a_private_host_may_reach_private_hosts() {
        let of = |issuer: &str, discovery: Option<&str>, allow: bool| {
            let mut cfg = IssuerConfig::new(issuer, vec!["a".into()]);
            cfg.discovery_url = discovery.map(str::to_owned);
            cfg.allow_private_network = allow;
            Reach::of(&cfg).private
        };
        assert!(of("http://127.0.0.1:8080", None, false));
        assert!(of("http://localhost:8080", None, false));
        assert!(of("https://10.1.2.3", None, false));
        assert!(of(
            "https://kubernetes.default.svc",
            Some("https://10.96.0.1/.well-known/openid-configuration"),
            false
        ));
        assert!(of("https://kubernetes.default.svc", None, true));
        assert!(!of(
            "https://token.actions.githubusercontent.com",
            None,
            false
        ));
        assert!(!of("https://169.254.169.254", None, false));
    }

    #[test]
    fn urls_naming_an_address_are_checked() {
        let public = Reach { private: false };
        let url = |s: &str| url::Url::parse(s).expect("url");
        assert!(
            public
                .check_url(&url("http://169.254.169.254/latest/meta-data"))
                .is_err()
        );
        assert!(public.check_url(&url("https://10.0.0.1/keys")).is_err());
        assert!(public.check_url(&url("https://[fd00:ec2::254]/")).is_err());
        assert!(public.check_url(&url("https://8.8.8.8/keys")).is_ok());
        // A name is checked when it resolves.
        assert!(public.check_url(&url("https://keys.example/jwks")).is_ok());
    }

    #[tokio::test]
    async fn a_name_cannot_resolve_its_way_past_the_rules() {
        use reqwest::dns::Resolve as _;
        use std::str::FromStr as _;
        let name = || reqwest::dns::Name::from_str("localhost").expect("name");
        // `localhost` resolves to loopback only: nothing is left for an
        // issuer that may not reach private addresses...
        let refused = GuardedResolver::new(Reach { private: false })
            .resolve(name())
            .await
            .err()
            .expect("loopback kept for a public issuer");
        assert!(
            refused.to_string().contains("private or loopback"),
            "{refused}"
        );
        // ...and everything for one that may.
        let kept: Vec<SocketAddr> = GuardedResolver::new(Reach { private: true })
            .resolve(name())
            .await
            .map(|a| a.collect())
            .unwrap_or_default();
        assert!(
            !kept.is_empty() && kept.iter().all(|a| a.ip().is_loopback()),
            "{kept:?}"
        );
    }
}
