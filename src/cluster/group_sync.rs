//! Replication of consumer-group positions: every server keeps a feed of
//! the group acks and deletions its clients made; peers receive it with
//! each changes poll (a snapshot of all positions on their first poll of
//! this process, then the events since) and apply positions forward-only,
//! so they converge on the maximum of every position.

use std::collections::VecDeque;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::groups::{GroupError, GroupStore};
use crate::names::{Category, ChunkName, GroupName};

/// Events kept for polls that are behind; older polls get a snapshot.
const RECENT: usize = 65_536;

/// One group event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEvent {
    /// Category.
    pub category: String,
    /// Consumer group.
    pub consumer: String,
    /// Chunk of the position; `None` deletes the group.
    pub chunk: Option<String>,
    /// Acked offset in that chunk.
    #[serde(default)]
    pub offset: u64,
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    recent: VecDeque<(u64, GroupEvent)>,
}

/// Group events made by this server's clients.
#[derive(Debug)]
pub struct GroupFeed {
    inner: Mutex<Inner>,
    announced: watch::Sender<u64>,
}

impl Default for GroupFeed {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            announced: watch::Sender::new(0),
        }
    }
}

impl GroupFeed {
    /// Records a client's group ack.
    pub fn acked(&self, category: &Category, group: &GroupName, chunk: &ChunkName, offset: u64) {
        self.push(GroupEvent {
            category: category.to_string(),
            consumer: group.to_string(),
            chunk: Some(chunk.to_string()),
            offset,
        });
    }

    /// Records a client's group deletion.
    pub fn deleted(&self, category: &Category, group: &GroupName) {
        self.push(GroupEvent {
            category: category.to_string(),
            consumer: group.to_string(),
            chunk: None,
            offset: 0,
        });
    }

    fn push(&self, e: GroupEvent) {
        let mut g = self.inner.lock();
        g.seq += 1;
        let seq = g.seq;
        g.recent.push_back((seq, e));
        if g.recent.len() > RECENT {
            g.recent.pop_front();
        }
        drop(g);
        self.announced.send_replace(seq);
    }

    /// Last event number.
    #[must_use]
    pub fn seq(&self) -> u64 {
        *self.announced.borrow()
    }

    /// A receiver of new events.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.announced.subscribe()
    }

    /// The events after `since` and the number to ask from next; a poll
    /// starting over (`since` None) or too far behind gets every position.
    #[must_use]
    pub fn since(&self, since: Option<u64>, store: &GroupStore) -> (u64, Vec<GroupEvent>) {
        let g = self.inner.lock();
        let seq = g.seq;
        let oldest = g.recent.front().map_or(seq + 1, |(s, _)| *s);
        if let Some(since) = since.filter(|s| s + 1 >= oldest) {
            let events = g
                .recent
                .iter()
                .filter(|(s, _)| *s > since)
                .map(|(_, e)| e.clone())
                .collect();
            return (seq, events);
        }
        drop(g);
        let snapshot = store
            .all()
            .into_iter()
            .flat_map(|(c, group, positions)| {
                positions
                    .into_iter()
                    .map(move |(chunk, offset)| GroupEvent {
                        category: c.to_string(),
                        consumer: group.to_string(),
                        chunk: Some(chunk.to_string()),
                        offset,
                    })
            })
            .collect();
        (seq, snapshot)
    }
}

/// Applies a peer's group events: positions forward-only (a stored
/// position further on wins), deletions as they come.
pub async fn apply(store: &GroupStore, events: &[GroupEvent]) {
    for e in events {
        let (Ok(cat), Ok(group)) = (Category::parse(&e.category), GroupName::parse(&e.consumer))
        else {
            continue;
        };
        let result = match &e.chunk {
            Some(chunk) => match ChunkName::parse(chunk) {
                Ok(chunk) => store.ack(&cat, &group, &chunk, e.offset).await.map(|_| ()),
                Err(_) => continue,
            },
            None => store.delete(&cat, &group).await,
        };
        match result {
            Ok(()) | Err(GroupError::Behind { .. } | GroupError::UnknownGroup { .. }) => {}
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "could not apply a peer's consumer group position");
            }
        }
    }
}
