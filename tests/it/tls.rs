//! HTTPS: the listener with `--tls-cert/--tls-key`, the client crate and
//! CLI with a custom CA, `https://` peers verified with `--tls-ca`, and
//! clear start-up errors for unusable files. Certificates are generated
//! per test (rcgen): a CA, and a server certificate for 127.0.0.1 signed
//! by it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chunkbus_client::{Client, ClientError, WriteOptions};

use crate::harness::{free_port, TestBroker};

/// PEM files of one test CA and a server certificate it signed.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "chunkbus test CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap()
                .signed_by(&leaf_key, &ca)
                .unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), leaf_key.serialize_pem()).unwrap();
        Self { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.path("ca.pem")).unwrap()
    }

    /// `--tls-cert … --tls-key …` as owned strings.
    pub(crate) fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path("cert.pem").display().to_string(),
            "--tls-key".into(),
            self.path("key.pem").display().to_string(),
        ]
    }
}

fn start_tls(pki: &Pki, extra: &[&str]) -> TestBroker {
    let mut args = pki.server_args();
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TestBroker::start(&refs)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tls_listener_serves_https_to_clients_that_trust_its_ca() {
    let pki = Pki::new();
    let b = start_tls(&pki, &[]);
    let url = format!("https://{}", b.addr);
    runtime().block_on(async {
        let client = Client::new(&url)
            .unwrap()
            .with_ca_pem(&pki.ca_pem())
            .unwrap();
        let reply = client
            .write(
                "secure",
                "one\ntwo\n",
                WriteOptions {
                    sync: true,
                    ..WriteOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!((reply.offset, reply.size), (0, 8));
        let data = client
            .read("secure", &reply.chunk, 0, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(&data[..], b"one\ntwo\n");
        assert_eq!(client.list_chunks("secure").await.unwrap().len(), 1);

        // No CA given: refused before connecting, with a message saying so.
        let plain = Client::new(&url).unwrap();
        let err = plain.list_chunks("secure").await.unwrap_err();
        assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
        assert!(err.to_string().contains("CA"), "{err}");

        // Another CA: the handshake fails (unknown issuer), no data.
        let other = Pki::new();
        let wrong = Client::new(&url)
            .unwrap()
            .with_ca_pem(&other.ca_pem())
            .unwrap();
        let err = wrong.list_chunks("secure").await.unwrap_err();
        assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");

        // A PEM without certificates is refused when given.
        let err = Client::new(&url)
            .unwrap()
            .with_ca_pem(b"not a certificate")
            .unwrap_err();
        assert!(matches!(err, ClientError::Tls(_)), "{err:?}");
    });
    // Plain HTTP on the TLS port gets no HTTP answer.
    let r = b.http.get(format!("http://{}/healthz", b.addr)).send();
    assert!(r.is_err(), "plain HTTP must not be served: {r:?}");
    // The server is still fine after that.
    runtime().block_on(async {
        let client = Client::new(&url)
            .unwrap()
            .with_ca_pem(&pki.ca_pem())
            .unwrap();
        assert_eq!(client.list_chunks("secure").await.unwrap().len(), 1);
    });
}

#[test]
fn silent_tls_clients_do_not_block_others() {
    let pki = Pki::new();
    let b = start_tls(&pki, &[]);
    // Connections that never send a ClientHello.
    let idle: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(b.addr).unwrap())
        .collect();
    let url = format!("https://{}", b.addr);
    let t = Instant::now();
    runtime().block_on(async {
        let client = Client::new(&url)
            .unwrap()
            .with_ca_pem(&pki.ca_pem())
            .unwrap();
        client
            .write("c", "x\n", WriteOptions::default())
            .await
            .unwrap();
    });
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "served in {:?}",
        t.elapsed()
    );
    drop(idle);
}

#[test]
fn cli_produces_and_consumes_over_https_with_ca() {
    let pki = Pki::new();
    let b = start_tls(&pki, &["--token", "tls-token"]);
    let server = format!("https://{}", b.addr);
    let ca = pki.path("ca.pem");
    let mut produce = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .args([
            "produce",
            "--category",
            "cli",
            "--sync",
            "--server",
            &server,
        ])
        .arg("--ca")
        .arg(&ca)
        .env("CHUNKBUS_TOKEN", "tls-token")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = produce.stdin.take().unwrap();
        for i in 0..1000 {
            writeln!(stdin, "line {i}").unwrap();
        }
    }
    let out = produce.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `chunkbus consume` of the category, with or without `--ca`.
    let consume = |ca: Option<&Path>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"));
        cmd.args(["consume", "--category", "cli", "--server", &server])
            .args(["--token", "tls-token"]);
        if let Some(ca) = ca {
            cmd.arg("--ca").arg(ca);
        }
        cmd.output().unwrap()
    };
    let out = consume(Some(&ca));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1000);
    assert_eq!(lines[999], "line 999");
    // Without --ca the CLI says what is missing.
    let out = consume(None);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--ca"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn https_peers_replicate_with_tls_ca() {
    let pki = Pki::new();
    let tmp = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port()];
    let ca = pki.path("ca.pem").display().to_string();
    let mut nodes = Vec::new();
    for i in 0..2 {
        let mut args = pki.server_args();
        args.extend([
            "--name".to_owned(),
            format!("n{}", i + 1),
            "--listen".to_owned(),
            format!("127.0.0.1:{}", ports[i]),
            "--peers".to_owned(),
            format!("n{}=https://127.0.0.1:{}", 2 - i, ports[1 - i]),
            "--tls-ca".to_owned(),
            ca.clone(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(TestBroker::start_in(
            &tmp.path().join(format!("n{}", i + 1)),
            &refs,
        ));
    }
    runtime().block_on(async {
        let c1 = Client::new(&format!("https://{}", nodes[0].addr))
            .unwrap()
            .with_ca_pem(&pki.ca_pem())
            .unwrap();
        let c2 = Client::new(&format!("https://{}", nodes[1].addr))
            .unwrap()
            .with_ca_pem(&pki.ca_pem())
            .unwrap();
        // min_sync_replicas=1: acknowledged only once n2 holds it, over TLS.
        let opts = WriteOptions {
            sync: false,
            min_sync_replicas: 1,
        };
        let reply = c1.write("rep", "a\nb\n", opts).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let list = c2.list_chunks("rep").await.unwrap();
            if list.iter().any(|c| c.name == reply.chunk && c.size == 4) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not replicated over https: {list:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let data = c2
            .read("rep", &reply.chunk, 0, 1 << 20, None)
            .await
            .unwrap();
        assert_eq!(&data[..], b"a\nb\n");
    });
}

fn serve_fails(args: &[&str]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chunkbus"))
        .arg("serve")
        .arg("--data-dir")
        .arg(tmp.path().join("d"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("CHUNKBUS_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {args:?} must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unusable_tls_settings_fail_the_start_with_a_clear_error() {
    let pki = Pki::new();
    let cert = pki.path("cert.pem").display().to_string();
    let key = pki.path("key.pem").display().to_string();
    let missing = pki.path("missing.pem").display().to_string();
    let err = serve_fails(&["--tls-cert", &cert]);
    assert!(err.contains("tls_key"), "{err}");
    let err = serve_fails(&["--tls-cert", &missing, "--tls-key", &key]);
    assert!(
        err.contains("cannot read") && err.contains("missing.pem"),
        "{err}"
    );
    // The key given as the certificate: no CERTIFICATE block.
    let err = serve_fails(&["--tls-cert", &key, "--tls-key", &key]);
    assert!(err.contains("key.pem"), "{err}");
    // A key that does not belong to the certificate.
    let other = Pki::new();
    let other_key = other.path("key.pem").display().to_string();
    let err = serve_fails(&["--tls-cert", &cert, "--tls-key", &other_key]);
    assert!(err.to_lowercase().contains("tls"), "{err}");
    // https:// peers need the CA that verifies them.
    let err = serve_fails(&["--name", "n1", "--peers", "n2=https://127.0.0.1:1"]);
    assert!(err.contains("tls_ca"), "{err}");
}
