//! TLS for the Redis tests: a certificate authority made with rcgen, a
//! server certificate it signs (for `localhost` and 127.0.0.1), and a real
//! `redis-server` that speaks only TLS (`--port 0 --tls-port <free>`),
//! killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::process::{free_port, TempDir};

/// A CA and one server certificate it signed, written as PEM files.
pub struct TestPki {
    dir: TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = TempDir::new("redis-tls");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "creditgate test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let server_key = KeyPair::generate().expect("server key");
        let server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        let server = server_params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server certificate");
        let ca_path = dir.write("ca.pem", &ca.pem());
        let cert = dir.write("server.pem", &server.pem());
        let key = dir.write("server.key", &server_key.serialize_pem());
        TestPki {
            dir,
            ca: ca_path,
            cert,
            key,
        }
    }

    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(&self.ca).expect("CA file")
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// redis-server arguments that serve TLS with this PKI on `port`
    /// (plain TCP off; clients need no certificate of their own).
    pub fn server_args(&self, port: u16) -> Vec<String> {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &self.cert.display().to_string(),
            "--tls-key-file",
            &self.key.display().to_string(),
            "--tls-ca-cert-file",
            &self.ca.display().to_string(),
            "--tls-auth-clients",
            "no",
        ]
        .map(String::from)
        .to_vec()
    }

    /// A client that trusts this CA (for the test's own commands).
    pub fn client(&self, url: &str) -> redis::Client {
        redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(self.ca_pem()),
            },
        )
        .expect("TLS client")
    }
}

/// A redis-server on a free port that speaks TLS only.
pub struct TlsRedis {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    client: redis::Client,
}

impl TlsRedis {
    pub fn start(pki: &TestPki, extra_args: &[&str]) -> TlsRedis {
        Self::start_on(pki, free_port(), extra_args)
    }

    pub fn start_on(pki: &TestPki, port: u16, extra_args: &[&str]) -> TlsRedis {
        let dir = TempDir::new("tls-redis");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(pki.server_args(port))
            .args(extra_args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut server = TlsRedis {
            port,
            child: Some(child),
            dir,
            client: pki.client(&format!("rediss://localhost:{port}/0")),
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pong = self
                .client
                .get_connection_with_timeout(Duration::from_millis(500))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            match pong {
                Ok(_) => return,
                // A server that requires a password is up, too.
                Err(e) if e.to_string().contains("NOAUTH") => return,
                Err(_) => {}
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("TLS redis-server on {} exited: {status}", self.port);
            }
            assert!(
                Instant::now() < deadline,
                "TLS redis-server on {} did not answer",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `rediss://localhost:<port>/0` (the certificate names `localhost`).
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}/0", self.port)
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs one command over TLS as the default user; its reply as text.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut connection = self
            .client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("TLS connect");
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        match command
            .query::<redis::Value>(&mut connection)
            .expect("command")
        {
            redis::Value::SimpleString(s) | redis::Value::VerbatimString { text: s, .. } => s,
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Three TLS-only primaries joined as a Redis Cluster (`--tls-cluster yes`:
/// the cluster bus is TLS too), killed on drop.
pub struct TlsCluster {
    pub nodes: Vec<TlsRedis>,
}

impl TlsCluster {
    pub fn start(pki: &TestPki) -> TlsCluster {
        let nodes: Vec<TlsRedis> = (0..3)
            .map(|_| {
                TlsRedis::start_on(
                    pki,
                    cluster_port(),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "3000",
                        "--tls-cluster",
                        "yes",
                        "--tls-replication",
                        "yes",
                    ],
                )
            })
            .collect();
        let output = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(&pki.ca)
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            output.status.success(),
            "TLS cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes
            .iter()
            .all(|node| node.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "TLS cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        TlsCluster { nodes }
    }

    /// The TOML value for `ledger.cluster`: seeds by name (`localhost`);
    /// the nodes the cluster reports are reached by IP (127.0.0.1), which the
    /// certificate names too.
    pub fn toml_urls(&self) -> String {
        let quoted: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("\"rediss://localhost:{}\"", n.port))
            .collect();
        format!("[{}]", quoted.join(", "))
    }
}

/// A port whose cluster bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}
