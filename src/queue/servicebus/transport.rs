//! The HTTP client we hand to `azure_messaging_servicebus`.
//!
//! The crate builds every request itself (URL, `BrokerProperties`, SAS header) and sends
//! it through an `azure_core` 0.21 [`HttpClient`]; it has no option for the host (always
//! `https://{namespace}.servicebus.windows.net`) and no option for a token credential.
//! Implementing that trait is therefore the one seam where we can
//! - send the requests through *our* reqwest (rustls, timeouts, no second TLS stack),
//! - point them at another origin (the local fake in tests and the demo) by rewriting
//!   scheme, host and port while keeping path and query, and
//! - in managed-identity mode replace the crate's SAS `Authorization` header with
//!   `Bearer <token>` for `https://servicebus.azure.net/.default`, so both auth modes
//!   share every request shape the crate produces.
//!
//! Requests for any other origin than the namespace's are refused: the bearer token (or
//! SAS) must never leave for a host the configuration did not name.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core_legacy::error::{Error as LegacyError, ErrorKind as LegacyErrorKind};
use azure_core_legacy::headers::{HeaderName, HeaderValue, Headers};
use azure_core_legacy::{Body, Request, Response, StatusCode};
use url::Url;

use crate::arm::credential::TokenSource;

/// Scope of Microsoft Entra tokens for Service Bus data-plane calls.
pub const SERVICE_BUS_SCOPE: &str = "https://servicebus.azure.net/.default";

/// Slack on top of a long-poll's server-side `timeout` before we give up on the socket.
const LONG_POLL_SLACK: Duration = Duration::from_secs(15);
/// Timeout for requests that do not long-poll (send, settle, entity reads).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How requests are authorized on the wire.
#[derive(Clone)]
pub enum WireAuth {
    /// Keep the SAS header the crate computed.
    Sas,
    /// Replace it with a bearer token from this source.
    Bearer(Arc<dyn TokenSource>),
}

impl fmt::Debug for WireAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sas => f.write_str("Sas"),
            Self::Bearer(_) => f.write_str("Bearer"),
        }
    }
}

/// `azure_core` 0.21 [`HttpClient`](azure_core_legacy::HttpClient) over reqwest, with
/// origin rewriting and optional bearer auth (module docs).
#[derive(Clone)]
pub struct Transport {
    http: reqwest::Client,
    /// `https://{namespace}.servicebus.windows.net`, what the crate puts in every URL.
    namespace_origin: Url,
    /// Where requests really go (the namespace itself in production).
    target_origin: Url,
    auth: WireAuth,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("namespace_origin", &self.namespace_origin.as_str())
            .field("target_origin", &self.target_origin.as_str())
            .field("auth", &self.auth)
            .finish()
    }
}

impl Transport {
    /// `target` is `None` for the real namespace, or an origin such as `http://127.0.0.1:7000`.
    pub fn new(namespace: &str, target: Option<&str>, auth: WireAuth) -> Result<Self, String> {
        let namespace_origin = Url::parse(&format!("https://{namespace}.servicebus.windows.net"))
            .map_err(|e| format!("service bus namespace {namespace:?} does not make a valid host name: {e}"))?;
        let target_origin = match target {
            None => namespace_origin.clone(),
            Some(t) => {
                let url =
                    Url::parse(t).map_err(|e| format!("service bus endpoint_override {t:?} is not a URL: {e}"))?;
                if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                    return Err(format!("service bus endpoint_override {t:?} must be an http(s) origin"));
                }
                url
            }
        };
        let http = reqwest::Client::builder()
            // A redirect could carry the Authorization header to another origin.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the service bus HTTP client: {e}"))?;
        Ok(Self { http, namespace_origin, target_origin, auth })
    }

    /// The URL the request really goes to. Only URLs on the namespace origin are allowed.
    pub fn route(&self, url: &Url) -> Result<Url, String> {
        let same_origin = url.scheme() == self.namespace_origin.scheme()
            && url.host_str().map(str::to_ascii_lowercase).as_deref() == self.namespace_origin.host_str()
            && url.port_or_known_default() == self.namespace_origin.port_or_known_default();
        if !same_origin {
            return Err(format!(
                "refusing a service bus request to {}: only {} is configured",
                url.origin().ascii_serialization(),
                self.namespace_origin.origin().ascii_serialization()
            ));
        }
        let mut routed = url.clone();
        // Scheme and host come from a parsed http(s) URL, so these setters cannot fail in
        // practice; a failure is still reported, never unwrapped.
        routed
            .set_scheme(self.target_origin.scheme())
            .and_then(|()| routed.set_host(self.target_origin.host_str()).map_err(|_| ()))
            .and_then(|()| routed.set_port(self.target_origin.port()))
            .map_err(|()| format!("cannot route service bus request to {}", self.target_origin))?;
        Ok(routed)
    }

    /// The long-poll timeout a peek-lock asked the server for, if any.
    fn server_timeout(url: &Url) -> Option<Duration> {
        url.query_pairs()
            .find(|(k, _)| k == "timeout")
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map(Duration::from_secs)
    }

    async fn send(&self, request: &Request) -> Result<Response, String> {
        let url = self.route(request.url())?;
        let method = reqwest::Method::from_bytes(request.method().to_string().as_bytes())
            .map_err(|e| format!("unsupported HTTP method {}: {e}", request.method()))?;
        let timeout = Self::server_timeout(&url).map(|t| t + LONG_POLL_SLACK).unwrap_or(REQUEST_TIMEOUT);
        let mut builder = self.http.request(method, url).timeout(timeout);
        for (name, value) in request.headers().iter() {
            if name.as_str() == "authorization" && matches!(self.auth, WireAuth::Bearer(_)) {
                continue;
            }
            builder = builder.header(name.as_str(), value.as_str());
        }
        if let WireAuth::Bearer(tokens) = &self.auth {
            let token = tokens.token(SERVICE_BUS_SCOPE).await.map_err(|e| format!("no service bus token: {e}"))?;
            builder = builder.header("authorization", format!("Bearer {}", token.expose()));
        }
        let body = match request.body() {
            Body::Bytes(b) => b.clone(),
            Body::SeekableStream(_) => return Err("streaming request bodies are not supported".to_owned()),
        };
        let response = builder.body(body).send().await.map_err(|e| {
            // reqwest errors name the URL, never headers, so no secret can leak here.
            format!("service bus request failed: {}", e.without_url())
        })?;
        let status = StatusCode::try_from(response.status().as_u16())
            .map_err(|_| format!("service bus answered with unknown status {}", response.status()))?;
        let mut headers = Headers::new();
        for (name, value) in response.headers() {
            // Non-UTF-8 header values are not something Service Bus sends; skip them.
            if let Ok(v) = value.to_str() {
                headers.insert(HeaderName::from(name.as_str().to_owned()), HeaderValue::from(v.to_owned()));
            }
        }
        let bytes = response.bytes().await.map_err(|e| format!("reading service bus response: {}", e.without_url()))?;
        let stream = futures::stream::iter(std::iter::once(Ok::<_, LegacyError>(bytes)));
        Ok(Response::new(status, headers, Box::pin(stream)))
    }
}

#[async_trait::async_trait]
impl azure_core_legacy::HttpClient for Transport {
    async fn execute_request(&self, request: &Request) -> azure_core_legacy::Result<Response> {
        self.send(request).await.map_err(|e| LegacyError::message(LegacyErrorKind::Io, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_the_namespace_origin() {
        let t = Transport::new("myns", Some("http://127.0.0.1:7000"), WireAuth::Sas).expect("transport");
        let url = Url::parse("https://myns.servicebus.windows.net/q/messages/head?timeout=5").expect("url");
        assert_eq!(t.route(&url).expect("route").as_str(), "http://127.0.0.1:7000/q/messages/head?timeout=5");
        let evil = Url::parse("https://evil.example/q/messages").expect("url");
        assert!(t.route(&evil).expect_err("refused").contains("evil.example"));
        let plain = Transport::new("myns", None, WireAuth::Sas).expect("transport");
        assert_eq!(plain.route(&url).expect("route"), url);
        assert!(Transport::new("myns", Some("ftp://x"), WireAuth::Sas).is_err());
        assert_eq!(Transport::server_timeout(&url), Some(Duration::from_secs(5)));
    }
}
