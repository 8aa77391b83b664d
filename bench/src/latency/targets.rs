//! The systems the latency runs measure, each as a [`Target`]: chunkbus
//! over raw HTTP (a keep-alive connection per sender, the consumer of the
//! client crate), chunkbus through the client crate on both sides, Redis
//! Streams (`XADD` pipelined per body, `XREAD BLOCK`) and NATS JetStream
//! (file storage; a publish per message with every ack awaited per body,
//! a pull consumer without acks).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use chunkbus_client::{Client, Consumer, ConsumerConfig, Positions, WriteOptions};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use hyper::Method;
use tokio::task::JoinHandle;

use super::{Recorder, Sender, Target};
use crate::client::Conn;

/// Follows `category` on `addr` with the client crate's consumer.
fn follow_chunkbus(
    addr: SocketAddr,
    category: &str,
    mut rec: Recorder,
) -> Result<JoinHandle<Result<Histogram<u64>>>> {
    let client = Client::new(&format!("http://{addr}"))?;
    let category = category.to_owned();
    Ok(tokio::spawn(async move {
        let config = ConsumerConfig::default().wait(Duration::from_secs(1));
        let mut c = Consumer::start(client, &category, config, Positions::default())?;
        while let Some(batch) = c.next().await? {
            let mut done = false;
            for msg in batch.messages() {
                done |= rec.message(msg)?;
            }
            if done {
                break;
            }
        }
        rec.into_hist()
    }))
}

/// chunkbus over raw HTTP: bodies POSTed on keep-alive connections to
/// `addr`, consumed on `consume_addr` (the same server, or a replica to
/// measure replication lag).
pub struct ChunkbusHttp {
    /// Where bodies are written.
    pub addr: SocketAddr,
    /// Where they are consumed.
    pub consume_addr: SocketAddr,
    /// A fresh category.
    pub category: String,
}

/// One keep-alive connection POSTing to a category.
pub struct HttpSender {
    conn: Conn,
    path: Arc<str>,
}

impl Sender for HttpSender {
    async fn send(&mut self, body: Bytes) -> Result<()> {
        let (status, _) = self.conn.send(Method::POST, &self.path, body).await?;
        if status != 200 {
            bail!("write answered {status}");
        }
        Ok(())
    }
}

impl Target for ChunkbusHttp {
    type Sender = HttpSender;

    async fn connect(&self) -> Result<HttpSender> {
        Ok(HttpSender {
            conn: Conn::open(self.addr).await?,
            path: format!("/write?category={}", self.category).into(),
        })
    }

    async fn follow(&self, rec: Recorder) -> Result<JoinHandle<Result<Histogram<u64>>>> {
        follow_chunkbus(self.consume_addr, &self.category, rec)
    }
}

/// chunkbus through the client crate: `Client::write` per body (one
/// request each, as an application sending single messages would).
pub struct ChunkbusClient {
    /// The server.
    pub addr: SocketAddr,
    /// A fresh category.
    pub category: String,
}

/// A client crate handle writing to a category.
pub struct ClientSender {
    client: Client,
    category: String,
}

impl Sender for ClientSender {
    async fn send(&mut self, body: Bytes) -> Result<()> {
        self.client
            .write(&self.category, body, WriteOptions::default())
            .await?;
        Ok(())
    }
}

impl Target for ChunkbusClient {
    type Sender = ClientSender;

    async fn connect(&self) -> Result<ClientSender> {
        Ok(ClientSender {
            client: Client::new(&format!("http://{}", self.addr))?,
            category: self.category.clone(),
        })
    }

    async fn follow(&self, rec: Recorder) -> Result<JoinHandle<Result<Histogram<u64>>>> {
        follow_chunkbus(self.addr, &self.category, rec)
    }
}

/// Redis Streams: every message of a body is one `XADD key * m <message>`,
/// pipelined in one round trip; the consumer loops on
/// `XREAD COUNT 65536 BLOCK 1000 STREAMS key <last id>`.
pub struct RedisStreams {
    /// The server.
    pub addr: SocketAddr,
    /// A fresh stream key.
    pub key: String,
    /// Bytes per message (bodies are split at these boundaries).
    pub message_size: usize,
}

/// One Redis connection adding a body's messages.
pub struct RedisSender {
    con: redis::aio::MultiplexedConnection,
    key: String,
    message_size: usize,
}

impl Sender for RedisSender {
    async fn send(&mut self, body: Bytes) -> Result<()> {
        let mut pipe = redis::pipe();
        let mut at = 0;
        while at < body.len() {
            let end = (at + self.message_size).min(body.len());
            pipe.cmd("XADD")
                .arg(&self.key)
                .arg("*")
                .arg("m")
                .arg(&body[at..end])
                .ignore();
            at = end;
        }
        pipe.query_async::<()>(&mut self.con).await?;
        Ok(())
    }
}

/// A connection without the client's 500 ms response timeout: a blocking
/// `XREAD` waits up to 1 s, and a saturated server may take longer to
/// answer a pipeline (the open loop bounds every send itself).
async fn redis_connection(client: &redis::Client) -> Result<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// The message values of an `XREAD` answer of one stream, and the last id.
fn xread_entries(v: redis::Value) -> Result<(Vec<Vec<u8>>, Option<String>)> {
    use redis::Value;
    let mut out = Vec::new();
    let mut last = None;
    let streams = match v {
        Value::Nil => return Ok((out, last)),
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        other => bail!("unexpected XREAD answer {other:?}"),
    };
    for stream in streams {
        let Value::Array(mut kv) = stream else {
            bail!("unexpected XREAD stream");
        };
        let Some(Value::Array(entries)) = kv.pop() else {
            bail!("unexpected XREAD entries");
        };
        for entry in entries {
            let Value::Array(mut e) = entry else {
                bail!("unexpected XREAD entry");
            };
            let fields = e.pop();
            if let Some(Value::BulkString(id)) = e.pop() {
                last = Some(String::from_utf8(id)?);
            }
            if let Some(Value::Array(mut fv)) = fields {
                if let Some(Value::BulkString(m)) = fv.pop() {
                    out.push(m);
                }
            }
        }
    }
    Ok((out, last))
}

impl Target for RedisStreams {
    type Sender = RedisSender;

    async fn connect(&self) -> Result<RedisSender> {
        let client = redis::Client::open(format!("redis://{}/", self.addr))?;
        Ok(RedisSender {
            con: redis_connection(&client).await?,
            key: self.key.clone(),
            message_size: self.message_size,
        })
    }

    async fn follow(&self, mut rec: Recorder) -> Result<JoinHandle<Result<Histogram<u64>>>> {
        let client = redis::Client::open(format!("redis://{}/", self.addr))?;
        // A connection of its own: a blocking XREAD holds it.
        let mut con = redis_connection(&client).await?;
        let key = self.key.clone();
        Ok(tokio::spawn(async move {
            let mut last = "0".to_owned();
            loop {
                let v: redis::Value = redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(65_536)
                    .arg("BLOCK")
                    .arg(1000)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg(&last)
                    .query_async(&mut con)
                    .await?;
                let (messages, id) = xread_entries(v)?;
                if let Some(id) = id {
                    last = id;
                }
                let mut done = false;
                for m in &messages {
                    done |= rec.message(m)?;
                }
                if done {
                    return rec.into_hist();
                }
            }
        }))
    }
}

/// NATS JetStream on file storage: every message of a body is one publish
/// to the stream's subject, and the body counts as sent once every ack
/// arrived; the consumer is a pull consumer without acks.
pub struct NatsJetStream {
    /// The server.
    pub addr: SocketAddr,
    /// A fresh stream (and subject) name.
    pub stream: String,
    /// Bytes per message (bodies are split at these boundaries).
    pub message_size: usize,
}

/// A JetStream context publishing a body's messages.
pub struct NatsSender {
    js: async_nats::jetstream::Context,
    subject: String,
    message_size: usize,
}

impl Sender for NatsSender {
    async fn send(&mut self, body: Bytes) -> Result<()> {
        let mut acks = Vec::with_capacity(body.len() / self.message_size + 1);
        let mut at = 0;
        while at < body.len() {
            let end = (at + self.message_size).min(body.len());
            let ack = self
                .js
                .publish(self.subject.clone(), body.slice(at..end))
                .await
                .map_err(|e| anyhow::anyhow!("publish: {e}"))?;
            acks.push(ack);
            at = end;
        }
        for ack in acks {
            ack.await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        }
        Ok(())
    }
}

impl NatsJetStream {
    async fn context(&self) -> Result<async_nats::jetstream::Context> {
        let client = async_nats::connect(self.addr.to_string())
            .await
            .context("connect to nats-server")?;
        let js = async_nats::jetstream::new(client);
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.stream.clone()],
            storage: async_nats::jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create JetStream stream: {e}"))?;
        Ok(js)
    }
}

impl Target for NatsJetStream {
    type Sender = NatsSender;

    async fn connect(&self) -> Result<NatsSender> {
        Ok(NatsSender {
            js: self.context().await?,
            subject: self.stream.clone(),
            message_size: self.message_size,
        })
    }

    async fn follow(&self, mut rec: Recorder) -> Result<JoinHandle<Result<Histogram<u64>>>> {
        use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
        let js = self.context().await?;
        let stream = js
            .get_stream(&self.stream)
            .await
            .map_err(|e| anyhow::anyhow!("get JetStream stream: {e}"))?;
        let consumer = stream
            .create_consumer(pull::Config {
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("create JetStream consumer: {e}"))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("JetStream messages: {e}"))?;
        Ok(tokio::spawn(async move {
            while let Some(m) = messages.next().await {
                let m = match m {
                    Ok(m) => m,
                    // A late heartbeat (a busy machine) is reported, and
                    // the stream goes on.
                    Err(e) if e.kind() == pull::MessagesErrorKind::MissingHeartbeat => continue,
                    Err(e) => bail!("JetStream consume: {e}"),
                };
                if rec.message(&m.payload)? {
                    return rec.into_hist();
                }
            }
            bail!("the JetStream consumer ended before the end marker")
        }))
    }
}
