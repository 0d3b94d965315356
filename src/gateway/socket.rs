//! WebSocket plumbing shared by the node and session sockets: a writer task fed by an [`Outbox`],
//! and a reader that turns frames into text messages or protocol-level failures.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;
use std::time::Instant;

use super::connections::{Frame, Outbox};
use super::limits::RateLimit;
use super::{AppState, Metrics};
use crate::protocol::{ErrorCode, ErrorFrame, ToClient};

/// Close codes (RFC 6455).
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_BAD_DATA: u16 = 1007;
pub const CLOSE_POLICY: u16 = 1008;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Buffers of one socket. tungstenite reserves 128 KiB to read and 128 KiB to write per socket by
/// default; a gateway holds thousands of mostly idle sockets, so they start small and grow with
/// the frames that need it.
const READ_BUFFER: usize = 4 * 1024;
const WRITE_BUFFER: usize = 4 * 1024;

/// The settings every upgraded socket gets: frame size limit and small buffers.
pub fn configure(ws: WebSocketUpgrade, max_frame_bytes: usize) -> WebSocketUpgrade {
    ws.max_message_size(max_frame_bytes)
        .max_frame_size(max_frame_bytes)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
}

/// What the reader hands to a socket's message loop.
pub enum Incoming {
    Text(String),
    Binary,
}

pub struct Socket {
    stream: SplitStream<WebSocket>,
    pub outbox: Outbox,
    shutdown: CancellationToken,
    rate: Option<RateLimit>,
    metrics: Arc<Metrics>,
}

impl Socket {
    /// Splits `ws`; the writer runs on the returned future, which the caller must drive
    /// (it is joined when the socket ends).
    pub fn new(ws: WebSocket, state: &AppState) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (sink, stream) = ws.split();
        let (outbox, rx) = Outbox::new(state.config.outbox_capacity);
        let writer = write_loop(sink, rx, outbox.closed().clone());
        let socket = Self {
            stream,
            outbox,
            shutdown: state.shutdown.clone(),
            rate: RateLimit::new(state.config.max_messages_per_second),
            metrics: state.metrics.clone(),
        };
        (socket, writer)
    }

    /// Whether a message fits the connection's rate; one over it is dropped and the peer told
    /// (at most once a second).
    fn within_rate(&mut self) -> bool {
        let Some(rate) = self.rate.as_mut() else { return true };
        let now = Instant::now();
        if rate.allow(now) {
            return true;
        }
        Metrics::inc(&self.metrics.messages_rate_limited);
        if rate.notice(now) {
            // `error` has the same shape on both sockets; the client type serves the node's too.
            let frame = ErrorFrame::new(ErrorCode::RateLimited, "too many messages; some were dropped");
            self.outbox.send(&ToClient::Error(frame));
        }
        false
    }

    /// The next text or binary message; `None` when the peer closed, the socket failed, it was
    /// closed by us, or the gateway shuts down. An oversized frame closes the socket with 1009.
    pub async fn next(&mut self) -> Option<Incoming> {
        loop {
            let message = tokio::select! {
                m = self.stream.next() => m,
                _ = self.outbox.closed().cancelled() => return None,
                _ = self.shutdown.cancelled() => return None,
            };
            match message? {
                Ok(Message::Text(_) | Message::Binary(_)) if !self.within_rate() => continue,
                Ok(Message::Text(text)) => return Some(Incoming::Text(text.to_string())),
                Ok(Message::Binary(_)) => return Some(Incoming::Binary),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => return None,
                Err(err) => {
                    if let Some((code, reason)) = close_for(err) {
                        self.outbox.close(code, reason);
                    }
                    return None;
                }
            }
        }
    }
}

/// The close frame a broken frame deserves (RFC 6455 §7.4.1); `None` when the connection itself
/// failed and there is nobody to tell.
fn close_for(err: axum::Error) -> Option<(u16, &'static str)> {
    match err.into_inner().downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some((CLOSE_TOO_BIG, "frame too large")),
        tungstenite::Error::Utf8(_) => Some((CLOSE_BAD_DATA, "text frame is not UTF-8")),
        tungstenite::Error::Protocol(_) => Some((CLOSE_PROTOCOL, "websocket protocol error")),
        _ => None,
    }
}

/// Frames written at most before a flush.
const MAX_BATCH: usize = 64;

/// Sends queued frames until the outbox is closed, then flushes what is queued and closes.
async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::Receiver<Frame>,
    closed: CancellationToken,
) {
    loop {
        let frame = tokio::select! {
            f = rx.recv() => f,
            _ = closed.cancelled() => break,
        };
        let Some(frame) = frame else { return };
        // Frames queued meanwhile go with it in one write (a flush per batch, not per frame: a
        // result and its UI event, a burst of job_assigns).
        let mut next = Some(frame);
        let mut batched = 0;
        while let Some(frame) = next.take() {
            match frame {
                Frame::Text(text) => {
                    if sink.feed(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                close => {
                    let _ = sink.flush().await;
                    let _ = send(&mut sink, close).await;
                    return;
                }
            }
            batched += 1;
            if batched < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if sink.flush().await.is_err() {
            return;
        }
    }
    while let Ok(frame) = rx.try_recv() {
        let last = matches!(frame, Frame::Close(..));
        if send(&mut sink, frame).await.is_err() || last {
            return;
        }
    }
    let _ = send(&mut sink, Frame::Close(CLOSE_GOING_AWAY, String::new())).await;
}

/// Sends one frame; a close frame ends the stream (Err).
async fn send(sink: &mut SplitSink<WebSocket, Message>, frame: Frame) -> Result<(), ()> {
    match frame {
        Frame::Text(text) => sink.send(Message::Text(text.into())).await.map_err(drop),
        Frame::Close(code, reason) => {
            let close = CloseFrame { code, reason: reason.into() };
            let _ = sink.send(Message::Close(Some(close))).await;
            let _ = sink.close().await;
            Err(())
        }
    }
}
