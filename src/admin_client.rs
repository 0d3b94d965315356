//! The HTTP client of the admin CLI and the tests (`switchboard policy push`, …): hyper-util's
//! client over plain `http://`, one request at a time.

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("not a request: {0}")]
    Request(#[from] axum::http::Error),
    #[error("{0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    #[error("reading the answer: {0}")]
    Body(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Sends one request; returns the status code and the body.
pub async fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<(u16, String), ClientError> {
    let limit = Duration::from_secs(30);
    tokio::time::timeout(limit, send(method, url, token, body))
        .await
        .map_err(|_| ClientError::Timeout(limit))?
}

async fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<(u16, String), ClientError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request =
        Request::builder().method(method).uri(url).header(header::CONTENT_TYPE, "application/octet-stream");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = client.request(request.body(Full::new(Bytes::copy_from_slice(body)))?).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The file `switchboard dev` keeps its generated admin token in, per admin address
/// (`http://host:port`); the `policy` commands read it when no token is given.
pub fn dev_token_file(admin_base_url: &str) -> std::path::PathBuf {
    let address = admin_base_url.trim_start_matches("http://").trim_end_matches('/').replace([':', '/'], "_");
    std::env::temp_dir().join("switchboard-dev").join(format!("admin-{address}.token"))
}
