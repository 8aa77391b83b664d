//! `GET /peer/kafka/offsets?category=C&owner=O&from=P&offset=K` and
//! `…&chunk=N&pos=B`: a Kafka group coordinator holding no copy of `O`'s
//! chunks of `C` asks this server, a holder, what committing Kafka offset
//! `K` stores, or which offset a group at byte `B` of chunk `N` is at
//! (`docs/peers.md`; the coordinator's side is `cluster/kafka_offsets.rs`).
//! Answered from the chunks held here only (`kafka/resolve.rs`), never
//! relayed and never stored. A replica whose copies do not decide the
//! question (lagging, or lacking the chunk) answers `{}`: the coordinator
//! asks the next holder.

use std::collections::BTreeMap;

use hyper::body::Incoming;
use hyper::Request;

use super::error::ApiError;
use super::params::{Query, RequestError};
use super::peer::check_peer;
use super::{json, AppState, HttpResponse};
use crate::cluster::protocol::{KafkaOffsetsReply, KafkaPosition};
use crate::cluster::ClusterError;
use crate::kafka::offset::KafkaOffset;
use crate::kafka::resolve::{self, CommitPlan, Copies};
use crate::names::{ChunkName, ServerName};

/// The two questions.
enum Question {
    /// `offset=K`.
    Commit(KafkaOffset),
    /// `chunk=N&pos=B`.
    Committed(ChunkName, u64),
}

/// `GET /peer/kafka/offsets` (see the module docs).
pub(super) async fn offsets(
    state: &AppState,
    req: &Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let cluster = state.cluster()?;
    let query = Query::parse(req.uri().query());
    let category = query.category()?;
    let owner = ServerName::parse(query.required("owner")?)?;
    check_peer(cluster, &ServerName::parse(query.required("from")?)?)?;
    let question = match (
        query.opt_u64("offset")?,
        query.opt_chunk("chunk")?,
        query.opt_u64("pos")?,
    ) {
        (Some(k), None, None) => Question::Commit(
            i64::try_from(k)
                .ok()
                .and_then(KafkaOffset::from_i64)
                .ok_or(RequestError::KafkaOffsetsForm("offset above 2^63 - 1"))?,
        ),
        (None, Some(chunk), Some(pos)) if chunk.owner() == &owner => {
            Question::Committed(chunk, pos)
        }
        (None, Some(_), Some(_)) => {
            return Err(RequestError::KafkaOffsetsForm("the chunk is not one of owner's").into())
        }
        _ => return Err(RequestError::KafkaOffsetsForm("neither or both forms").into()),
    };
    let storage = state.storage()?;
    if &owner != cluster.me()
        && !cluster
            .assignment
            .holds_here(category.as_str(), owner.as_str())
    {
        return Err(ClusterError::NotHeld {
            category: category.to_string(),
            owner: owner.to_string(),
            me: cluster.me().to_string(),
        }
        .into());
    }
    let loc = crate::kafka::locator(state);
    let copies = Copies::of(cluster.me(), &owner);
    let reply = match question {
        Question::Commit(at) => {
            match resolve::commit_plan(storage, &loc, &category, &owner, at, copies).await? {
                CommitPlan::Positions(p) => KafkaOffsetsReply {
                    positions: Some(
                        p.into_iter()
                            .map(|(chunk, offset)| KafkaPosition {
                                chunk: chunk.to_string(),
                                offset,
                            })
                            .collect(),
                    ),
                    offset: None,
                },
                CommitPlan::PastEnd(_) | CommitPlan::NotHere => KafkaOffsetsReply::default(),
            }
        }
        Question::Committed(chunk, pos) => {
            let positions: BTreeMap<ChunkName, u64> = [(chunk, pos)].into_iter().collect();
            let at =
                resolve::committed(storage, &loc, &category, &owner, &positions, copies).await?;
            KafkaOffsetsReply {
                positions: None,
                offset: at.and_then(KafkaOffset::to_i64),
            }
        }
    };
    json(&reply)
}
