//! A minimal keep-alive HTTP/1.1 client connection (hyper), so the bench
//! measures the server, not a client library's pooling.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// One HTTP/1.1 connection.
pub struct Conn {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Connects to `addr`.
    pub async fn open(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { addr, sender })
    }

    async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>> {
        self.sender.ready().await?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string())
            .body(Full::new(body))?;
        Ok(self.sender.send_request(req).await?)
    }

    /// Sends a request; returns status and the number of body bytes (the
    /// body is drained frame by frame, never gathered).
    pub async fn send(&mut self, method: Method, path: &str, body: Bytes) -> Result<(u16, u64)> {
        let resp = self.request(method, path, body).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut n = 0u64;
        while let Some(f) = body.frame().await {
            if let Ok(d) = f?.into_data() {
                n += d.len() as u64;
            }
        }
        Ok((status, n))
    }

    /// Like [`Self::send`] but returns the body bytes.
    pub async fn fetch(&mut self, method: Method, path: &str, body: Bytes) -> Result<(u16, Bytes)> {
        let resp = self.request(method, path, body).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// `listChunks` of `category` as JSON objects.
    pub async fn list_chunks(&mut self, category: &str) -> Result<Vec<serde_json::Value>> {
        let (_, list) = self
            .fetch(
                Method::GET,
                &format!("/listChunks?category={category}"),
                Bytes::new(),
            )
            .await?;
        Ok(serde_json::from_slice(&list)?)
    }

    /// Reads `chunk` from offset 0 to its end with 16 MiB reads (stopping
    /// early at `deadline`); returns the bytes read.
    pub async fn read_chunk(
        &mut self,
        category: &str,
        chunk: &str,
        deadline: Option<std::time::Instant>,
    ) -> Result<u64> {
        let mut off = 0u64;
        loop {
            let path =
                format!("/read?category={category}&chunk={chunk}&off={off}&max_size=16777216");
            let (st, n) = self.send(Method::GET, &path, Bytes::new()).await?;
            if st != 200 {
                bail!("read answered {st}");
            }
            off += n;
            if n == 0 || deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(off);
            }
        }
    }

    /// Deletes every sealed chunk of `category` with chukcha acks (on
    /// every node of a cluster), so long runs do not fill the disk; the
    /// open chunk stays.
    pub async fn ack_sealed(&mut self, category: &str) -> Result<()> {
        for c in self.list_chunks(category).await? {
            if c["complete"] != true {
                continue;
            }
            let (Some(name), Some(size)) = (c["name"].as_str(), c["size"].as_u64()) else {
                continue;
            };
            let path = format!("/ack?category={category}&chunk={name}&size={size}");
            let (st, _) = self.send(Method::GET, &path, Bytes::new()).await?;
            if st != 200 {
                bail!("GET {path} answered {st}");
            }
        }
        Ok(())
    }

    /// POST that must succeed.
    pub async fn post_ok(&mut self, path: &str, body: Bytes) -> Result<()> {
        let (s, _) = self.send(Method::POST, path, body).await?;
        if s != 200 {
            bail!("POST {path} answered {s}");
        }
        Ok(())
    }
}
