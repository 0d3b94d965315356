//! WebSocket plumbing shared by the node and session sockets: a writer task fed by an [`Outbox`],
//! and a reader that turns frames into text messages or protocol-level failures.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::peers::{Frame, Outbox};

/// Close codes (RFC 6455).
pub const CLOSE_GOING_AWAY: u16 = 1001;
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
}

impl Socket {
    /// Splits `ws`; the writer runs on the returned future, which the caller must drive
    /// (it is joined when the socket ends).
    pub fn new(
        ws: WebSocket,
        capacity: usize,
        shutdown: CancellationToken,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (sink, stream) = ws.split();
        let (outbox, rx) = Outbox::new(capacity);
        let writer = write_loop(sink, rx, outbox.closed().clone());
        (Self { stream, outbox, shutdown }, writer)
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
                Ok(Message::Text(text)) => return Some(Incoming::Text(text.to_string())),
                Ok(Message::Binary(_)) => return Some(Incoming::Binary),
                Ok(Message::Ping(_) | Message::Pong(_)) => continue,
                Ok(Message::Close(_)) => return None,
                Err(err) => {
                    if is_capacity_error(err) {
                        self.outbox.close(CLOSE_TOO_BIG, "frame too large");
                    }
                    return None;
                }
            }
        }
    }
}

fn is_capacity_error(err: axum::Error) -> bool {
    err.into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|e| matches!(e, tungstenite::Error::Capacity(_)))
}

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
        if send(&mut sink, frame).await.is_err() {
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
