//! Which URLs may receive a credential.
//!
//! Every outbound client here sends a secret (an ARM bearer token, a vendor key, an
//! audit-topic token). Plain `http://` is allowed only to a loopback host, for the local
//! fakes; anything else must be `https://`. The check parses the URL and looks at the
//! host itself: a prefix test (`http://localhost…`) would let
//! `http://localhost.attacker.example` through and send a real token in clear text.

use std::net::IpAddr;

/// Parses `raw` and accepts it only when it is `https://`, or `http://` to a loopback
/// host (`localhost`, `127.0.0.0/8`, `[::1]`). The error says why, without the URL's
/// user-info.
pub fn credential_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user:password (credentials come from their own settings)".into());
    }
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "plain http is only allowed to a loopback host (127.0.0.1, [::1], localhost), not {}",
            url.host_str().unwrap_or("(no host)")
        )),
        other => Err(format!("scheme {other}:// is not https://")),
    }
}

/// Whether the URL's host is loopback: an IP literal in 127.0.0.0/8 or `::1`, or exactly
/// `localhost`.
pub fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        assert!(credential_url("https://management.azure.com").is_ok());
        assert!(credential_url("http://127.0.0.1:8080").is_ok());
        assert!(credential_url("http://127.5.6.7").is_ok());
        assert!(credential_url("http://[::1]:9").is_ok());
        assert!(credential_url("http://localhost:1").is_ok());
        for bad in [
            "http://localhost.attacker.example",
            "http://127.0.0.1.attacker.example",
            "http://10.0.0.1",
            "http://management.azure.com",
            "ftp://127.0.0.1",
            "https://user:pw@management.azure.com",
            "not a url",
        ] {
            assert!(credential_url(bad).is_err(), "{bad} must be refused");
        }
    }
}
