//! The real `creditgate` binary as a child process: for signals, the CLI and
//! what ends up in its logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_creditgate");

/// A free loopback port (bound and released; the race is acceptable in tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "creditgate-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run creditgate")
}

/// `creditgate serve` on a config file, logging JSON lines to a file.
pub struct GatewayProcess {
    child: Option<Child>,
    pub data_port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    log_path: PathBuf,
}

impl GatewayProcess {
    /// `config` is TOML in which `{DATA}` and `{ADMIN}` stand for listen addresses.
    pub fn start(dir: &TempDir, config: &str, env: &[(&str, &str)]) -> GatewayProcess {
        let data_port = free_port();
        let admin_port = free_port();
        let config = config
            .replace("{DATA}", &format!("127.0.0.1:{data_port}"))
            .replace("{ADMIN}", &format!("127.0.0.1:{admin_port}"));
        let config_path = dir.write("creditgate.toml", &config);
        let log_path = dir.path().join("gateway.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut command = Command::new(BIN);
        command.envs(env.iter().copied());
        let child = command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(&config_path)
            .env("CREDITGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn creditgate");
        let process = GatewayProcess {
            child: Some(child),
            data_port,
            admin_port,
            config_path,
            log_path,
        };
        process.wait_ready();
        process
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", self.data_port)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("creditgate did not start:\n{}", self.logs());
    }

    /// A client that checks this gateway's usage and admin answers
    /// against docs/openapi.json.
    pub fn client(&self) -> super::http::TestClient {
        super::http::TestClient::checking(
            ([127, 0, 0, 1], self.data_port).into(),
            ([127, 0, 0, 1], self.admin_port).into(),
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.data_port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// `used` and the history of these accounts, for the money oracle.
    pub async fn ledger_view(&self, token: &str, accounts: &[&str]) -> super::money::LedgerView {
        super::money::LedgerView::fetch(
            &super::http::TestClient::new(),
            &self.admin_url(""),
            token,
            accounts,
        )
        .await
    }

    pub async fn metrics(&self) -> super::metrics::Samples {
        let response = super::http::TestClient::new()
            .get(&self.admin_url("/metrics"), &[])
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        super::metrics::Samples::parse(&response.text())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "creditgate did not exit within {timeout:?}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
