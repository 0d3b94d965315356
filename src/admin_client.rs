//! A minimal HTTP/1.1 client for the admin API (`switchboard policy push`, tests): plain `http://`,
//! one request per connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("only http://host:port/path URLs are supported: {0}")]
    Url(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response: {0}")]
    Response(String),
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
    let rest = url.strip_prefix("http://").ok_or_else(|| ClientError::Url(url.into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut stream = TcpStream::connect(authority).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(token) = token {
        head += &format!("Authorization: Bearer {token}\r\n");
    }
    head += "Content-Type: application/octet-stream\r\n\r\n";
    stream.write_all(head.as_bytes()).await?;
    // A server may answer before the body is read (413 for one over its limit) and close: the write
    // then fails, and its answer is still there to read.
    if let Err(err) = stream.write_all(body).await
        && !matches!(err.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
    {
        return Err(err.into());
    }
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| ClientError::Response("no header end".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Response(head.lines().next().unwrap_or("").into()))?;
    let chunked = head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding: chunked"));
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The file `switchboard dev` keeps its generated admin token in, per admin address
/// (`http://host:port`); the `policy` commands read it when no token is given.
pub fn dev_token_file(admin_base_url: &str) -> std::path::PathBuf {
    let address = admin_base_url.trim_start_matches("http://").trim_end_matches('/').replace([':', '/'], "_");
    std::env::temp_dir().join("switchboard-dev").join(format!("admin-{address}.token"))
}
