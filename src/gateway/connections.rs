//! The sockets connected to this gateway: the only state a gateway keeps, and only about its own
//! connections. Locks here guard socket bookkeeping, never scheduling state.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ordering::Sequencer;

/// A frame queued for a socket's writer.
#[derive(Debug)]
pub enum Frame {
    Text(String),
    /// Close with this code and reason (after the frames queued before it).
    Close(u16, String),
}

/// The sending half of one socket. Sends never wait: a socket whose queue is full is too slow to
/// keep up and is closed, so one stuck peer cannot hold up the gateway.
#[derive(Debug, Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Frame>,
    closed: CancellationToken,
}

impl Outbox {
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self { tx, closed: CancellationToken::new() }, rx)
    }

    /// Queues one message; false when the socket is gone or was closed for being too slow.
    pub fn send<T: Serialize>(&self, message: &T) -> bool {
        let text = serde_json::to_string(message).expect("protocol messages serialize");
        self.send_frame(Frame::Text(text))
    }

    pub fn close(&self, code: u16, reason: &str) {
        self.send_frame(Frame::Close(code, reason.to_owned()));
        self.closed.cancel();
    }

    pub fn send_frame(&self, frame: Frame) -> bool {
        match self.tx.try_send(frame) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("Socket outbox is full; closing the slow peer.");
                self.closed.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Cancelled when the socket must close (closed by us, or too slow).
    pub fn closed(&self) -> &CancellationToken {
        &self.closed
    }
}

#[derive(Debug, Clone, Default)]
pub struct Peers {
    nodes: Arc<Mutex<HashMap<String, NodePeer>>>,
    sessions: Arc<Mutex<HashMap<String, SessionPeer>>>,
}

/// A client socket: its outbox, the ordering of its results, and the room it is in (shared with
/// the session's handler, so the room watcher can end an expired membership).
#[derive(Debug, Clone)]
pub struct SessionPeer {
    pub conn: String,
    /// What its Redis record holds (token sha, settings), to write it again if Redis lost it.
    pub record: Arc<(String, String)>,
    pub outbox: Outbox,
    pub sequencer: Arc<Mutex<Sequencer>>,
    pub room: Arc<Mutex<Option<String>>>,
}

#[derive(Debug, Clone)]
struct NodePeer {
    conn: String,
    outbox: Outbox,
}

impl Peers {
    /// Records the socket of a node; replaces an older connection of the same node.
    pub fn add_node(&self, node_id: &str, conn: &str, outbox: Outbox) {
        let peer = NodePeer { conn: conn.to_owned(), outbox };
        self.nodes.lock().insert(node_id.to_owned(), peer);
    }

    /// Forgets a node's socket unless a newer connection replaced it.
    pub fn remove_node(&self, node_id: &str, conn: &str) {
        let mut nodes = self.nodes.lock();
        if nodes.get(node_id).is_some_and(|p| p.conn == conn) {
            nodes.remove(node_id);
        }
    }

    pub fn node(&self, node_id: &str) -> Option<Outbox> {
        self.nodes.lock().get(node_id).map(|p| p.outbox.clone())
    }

    /// Records a client socket; replaces (and returns) an older socket of the same session.
    pub fn add_session(&self, session_id: &str, peer: SessionPeer) -> Option<SessionPeer> {
        self.sessions.lock().insert(session_id.to_owned(), peer)
    }

    /// Forgets a client socket unless a newer one of the same session replaced it.
    pub fn remove_session(&self, session_id: &str, conn: &str) {
        let mut sessions = self.sessions.lock();
        if sessions.get(session_id).is_some_and(|p| p.conn == conn) {
            sessions.remove(session_id);
        }
    }

    pub fn session(&self, session_id: &str) -> Option<SessionPeer> {
        self.sessions.lock().get(session_id).cloned()
    }

    pub fn sessions(&self) -> Vec<(String, SessionPeer)> {
        self.sessions.lock().iter().map(|(id, p)| (id.clone(), p.clone())).collect()
    }

    /// The rooms local sessions are in: room code → (session id, its room handle).
    pub fn rooms(&self) -> HashMap<String, Vec<(String, SessionPeer)>> {
        let mut rooms: HashMap<String, Vec<(String, SessionPeer)>> = HashMap::new();
        for (id, peer) in self.sessions.lock().iter() {
            if let Some(code) = peer.room.lock().clone() {
                rooms.entry(code).or_default().push((id.clone(), peer.clone()));
            }
        }
        rooms
    }

    pub fn counts(&self) -> (usize, usize) {
        (self.nodes.lock().len(), self.sessions.lock().len())
    }

    /// Closes every socket (shutdown): nodes and clients reconnect to another gateway.
    pub fn close_all(&self, code: u16, reason: &str) {
        let nodes: Vec<Outbox> = self.nodes.lock().values().map(|p| p.outbox.clone()).collect();
        let sessions: Vec<Outbox> = self.sessions.lock().values().map(|p| p.outbox.clone()).collect();
        for outbox in nodes.iter().chain(&sessions) {
            outbox.close(code, reason);
        }
    }
}
