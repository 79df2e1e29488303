//! The vocabulary of one ARM call: [`Method`], [`ArmRequest`] and [`ArmResponse`].
//!
//! Kept apart from the transport so that the budget (which classifies by [`Method`])
//! and every caller can name a request without depending on how it is sent.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Patch,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }

    pub(super) fn to_reqwest(self) -> reqwest::Method {
        match self {
            Method::Get => reqwest::Method::GET,
            Method::Put => reqwest::Method::PUT,
            Method::Patch => reqwest::Method::PATCH,
            Method::Post => reqwest::Method::POST,
            Method::Delete => reqwest::Method::DELETE,
        }
    }
}

/// One ARM call. `path` starts with `/` and has no query; `api_version` is appended.
#[derive(Debug, Clone)]
pub struct ArmRequest {
    pub method: Method,
    pub path: String,
    pub api_version: String,
    /// Extra query pairs (e.g. `$top`), besides api-version.
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// e.g. `If-Match`, `If-None-Match`.
    pub headers: Vec<(String, String)>,
}

impl ArmRequest {
    pub fn new(method: Method, path: impl Into<String>, api_version: &str) -> Self {
        Self { method, path: path.into(), api_version: api_version.into(), query: vec![], body: None, headers: vec![] }
    }
    pub fn get(path: impl Into<String>, api_version: &str) -> Self {
        Self::new(Method::Get, path, api_version)
    }
    pub fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }
}

/// A successful (2xx) answer.
#[derive(Debug, Clone)]
pub struct ArmResponse {
    pub status: u16,
    /// Lower-cased header names.
    pub headers: Vec<(String, String)>,
    /// `Value::Null` when the body is empty.
    pub body: Value,
}

impl ArmResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
    pub fn etag(&self) -> Option<&str> {
        self.header("etag")
    }
}
