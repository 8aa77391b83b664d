//! One Kafka connection: read a frame, decode its header and request,
//! hand it to the API's handler, write the answer; requests are answered
//! one at a time, in order, as the protocol requires. A frame that does
//! not decode, an unsupported API or version (answered first), or an
//! oversize frame ends this connection only.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::ResponseError;
use tokio::io::{AsyncRead, AsyncWrite};

use super::error::FrameError;
use super::frame::{read_frame, write_frame};
use super::sasl::Session;
use super::{
    admin, configs, fetch, group_listing, idempotence, list_offsets, membership, metadata, offsets,
    produce, versions, Broker,
};

/// A decoded request: its API, version and header.
pub struct Call {
    /// The API.
    pub key: ApiKey,
    /// Its version.
    pub version: i16,
    /// The request header.
    pub header: RequestHeader,
    /// The client's address.
    pub peer: std::net::SocketAddr,
}

/// Serves requests on `io` until the client closes it, an error ends it,
/// or shutdown begins.
pub async fn serve<S>(broker: Arc<Broker>, io: S, peer: std::net::SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut session = broker.state.live.with_token(Session::new);
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut rd, broker.max_frame) => f,
            () = broker.state.shutdown.cancelled() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %crate::error_chain(&e), "kafka connection closed");
                break;
            }
        };
        // Boxed: the handlers' futures are deep, and boxing keeps the
        // connection's own future small.
        let (answer, close) = match Box::pin(handle(&broker, &mut session, frame, peer)).await {
            Ok(a) => (a, false),
            Err((a, e)) => {
                tracing::debug!(%peer, error = %crate::error_chain(&e), "kafka request refused; closing");
                (a, true)
            }
        };
        if let Some(a) = answer {
            if let Err(e) = write_frame(&mut wr, &a).await {
                tracing::debug!(%peer, error = %crate::error_chain(&e), "kafka connection closed");
                break;
            }
        }
        if close {
            break;
        }
    }
}

/// The answer to one frame (`None`: the request wants none, acks=0), or
/// an error that closes the connection with an optional last answer.
async fn handle(
    broker: &Broker,
    session: &mut Session,
    mut frame: Bytes,
    peer: std::net::SocketAddr,
) -> Result<Option<BytesMut>, (Option<BytesMut>, FrameError)> {
    // The header is decoded from the whole frame (a cheap second handle on
    // it, not a copy: a produce request's records are sliced from it).
    let mut buf = frame.clone();
    // The first 8 bytes are the same in every header version.
    let api_key = frame.get_i16();
    let version = frame.get_i16();
    let correlation_id = frame.get_i32();
    let Some(key) = versions::supported(api_key, version) else {
        let answer = encode_with(
            &versions::api_versions(Some(ResponseError::UnsupportedVersion)),
            0,
            0,
            correlation_id,
        )
        .ok();
        return Err((answer, FrameError::Unsupported { api_key, version }));
    };
    if !session.allows(key) {
        return Err((None, FrameError::Unauthenticated));
    }
    let header = RequestHeader::decode(&mut buf, key.request_header_version(version))
        .map_err(|e| (None, malformed("header", api_key, version, &e)))?;
    let call = Call {
        key,
        version,
        header,
        peer,
    };
    match key {
        ApiKey::SaslHandshake => {
            let req = decode(&call, &mut buf, "SaslHandshake").map_err(|e| (None, e))?;
            let mut resp = session.handshake(&req);
            if call.version == 0 {
                resp.error_code = ResponseError::UnsupportedVersion.code();
            }
            encode(&call, &resp).map(Some).map_err(|e| (None, e))
        }
        ApiKey::SaslAuthenticate => {
            let req = decode(&call, &mut buf, "SaslAuthenticate").map_err(|e| (None, e))?;
            let (resp, ok) = session.authenticate(&req);
            let answer = encode(&call, &resp).map_err(|e| (None, e))?;
            if ok {
                Ok(Some(answer))
            } else {
                Err((Some(answer), FrameError::AuthenticationFailed))
            }
        }
        _ => dispatch(broker, &call, &mut buf)
            .await
            .map_err(|e| (None, e)),
    }
}

async fn dispatch(
    broker: &Broker,
    call: &Call,
    buf: &mut Bytes,
) -> Result<Option<BytesMut>, FrameError> {
    let v = call.version;
    match call.key {
        ApiKey::ApiVersions => encode(call, &versions::api_versions(None)).map(Some),
        ApiKey::Metadata => {
            let req = decode(call, buf, "Metadata")?;
            encode(call, &metadata::handle(broker, &req, v)).map(Some)
        }
        ApiKey::Produce => {
            let req = decode(call, buf, "Produce")?;
            match Box::pin(produce::handle(broker, req)).await {
                Some(resp) => encode(call, &resp).map(Some),
                None => Ok(None),
            }
        }
        ApiKey::Fetch => {
            let req = decode(call, buf, "Fetch")?;
            encode(call, &Box::pin(fetch::handle(broker, req)).await).map(Some)
        }
        ApiKey::ListOffsets => {
            let req = decode(call, buf, "ListOffsets")?;
            encode(call, &Box::pin(list_offsets::handle(broker, &req)).await).map(Some)
        }
        ApiKey::FindCoordinator => {
            let req = decode(call, buf, "FindCoordinator")?;
            encode(call, &membership::find_coordinator(broker, &req, v)).map(Some)
        }
        ApiKey::JoinGroup => {
            let req = decode(call, buf, "JoinGroup")?;
            encode(call, &Box::pin(membership::join(broker, req, call)).await).map(Some)
        }
        ApiKey::SyncGroup => {
            let req = decode(call, buf, "SyncGroup")?;
            encode(call, &Box::pin(membership::sync(broker, req)).await).map(Some)
        }
        ApiKey::Heartbeat => {
            let req = decode(call, buf, "Heartbeat")?;
            encode(call, &membership::heartbeat(broker, &req)).map(Some)
        }
        ApiKey::LeaveGroup => {
            let req = decode(call, buf, "LeaveGroup")?;
            encode(call, &membership::leave(broker, &req, v)).map(Some)
        }
        ApiKey::OffsetCommit => {
            let req = decode(call, buf, "OffsetCommit")?;
            encode(call, &Box::pin(offsets::commit(broker, &req)).await).map(Some)
        }
        ApiKey::OffsetFetch => {
            let req = decode(call, buf, "OffsetFetch")?;
            encode(call, &Box::pin(offsets::fetch(broker, &req)).await).map(Some)
        }
        ApiKey::InitProducerId => {
            let req = decode(call, buf, "InitProducerId")?;
            encode(call, &idempotence::init_producer_id(&req)).map(Some)
        }
        ApiKey::CreateTopics => {
            let req = decode(call, buf, "CreateTopics")?;
            encode(call, &admin::create_topics(broker, &req, v)).map(Some)
        }
        ApiKey::DeleteTopics => {
            let req = decode(call, buf, "DeleteTopics")?;
            encode(call, &admin::delete_topics(&req, v)).map(Some)
        }
        ApiKey::CreatePartitions => {
            let req = decode(call, buf, "CreatePartitions")?;
            encode(call, &admin::create_partitions(broker, &req)).map(Some)
        }
        ApiKey::ListGroups => {
            let req = decode(call, buf, "ListGroups")?;
            encode(call, &group_listing::list(broker, &req)).map(Some)
        }
        ApiKey::DescribeGroups => {
            let req = decode(call, buf, "DescribeGroups")?;
            encode(call, &group_listing::describe(broker, &req)).map(Some)
        }
        ApiKey::DescribeConfigs => {
            let req = decode(call, buf, "DescribeConfigs")?;
            encode(call, &configs::handle(broker, &req, v)).map(Some)
        }
        other => Err(FrameError::Unsupported {
            api_key: other as i16,
            version: v,
        }),
    }
}

fn malformed(what: &'static str, api_key: i16, version: i16, e: &anyhow::Error) -> FrameError {
    FrameError::Malformed {
        what,
        api_key,
        version,
        why: format!("{e:#}"),
    }
}

/// Decodes the body of `call`. Bytes after a request that decoded are
/// ignored, as Kafka brokers do: librdkafka 2.x's AdminClient sends 3
/// stray bytes after a Metadata v12 request for every topic.
///
/// # Errors
/// [`FrameError::Malformed`].
pub fn decode<T: Decodable>(
    call: &Call,
    buf: &mut Bytes,
    what: &'static str,
) -> Result<T, FrameError> {
    let (k, v) = (call.key as i16, call.version);
    let req = T::decode(buf, v).map_err(|e| malformed(what, k, v, &e))?;
    if buf.has_remaining() {
        tracing::debug!(
            api = what,
            version = v,
            bytes = buf.remaining(),
            "kafka request followed by bytes it does not use: ignored"
        );
    }
    Ok(req)
}

/// Encodes a response to `call` with its header.
///
/// # Errors
/// [`FrameError::Encode`].
pub fn encode<T: Encodable>(call: &Call, resp: &T) -> Result<BytesMut, FrameError> {
    encode_with(
        resp,
        call.key.response_header_version(call.version),
        call.version,
        call.header.correlation_id,
    )
}

fn encode_with<T: Encodable>(
    resp: &T,
    header_version: i16,
    version: i16,
    correlation_id: i32,
) -> Result<BytesMut, FrameError> {
    let mut out = BytesMut::new();
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let err = |e: anyhow::Error| FrameError::Encode {
        what: std::any::type_name::<T>(),
        why: format!("{e:#}"),
    };
    header.encode(&mut out, header_version).map_err(err)?;
    resp.encode(&mut out, version).map_err(err)?;
    Ok(out)
}
