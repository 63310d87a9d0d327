//! A real `redis-server` per test (or suite) on a free loopback port, never
//! the machine's shared Redis; killed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// Its working directory (AOF files, if a test turns AOF on).
    dir: std::path::PathBuf,
}

pub fn redis_available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    /// Starts a fresh, empty Redis (no persistence) on a free port.
    pub fn start() -> RedisServer {
        assert!(
            redis_available(),
            "redis-server is not installed: `apt-get install redis-server` (CI's .ci/run does)"
        );
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir()
                .join(format!("creditgate-redis-{port}-{}", rand::random::<u32>()));
            std::fs::create_dir_all(&dir).expect("redis dir");
            let mut server = RedisServer {
                port,
                child: None,
                extra_args: Vec::new(),
                dir,
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// A Redis on a given port with extra arguments (cluster nodes).
    pub fn start_on(port: u16, extra_args: &[&str]) -> RedisServer {
        let dir =
            std::env::temp_dir().join(format!("creditgate-redis-{port}-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut server = RedisServer {
            port,
            child: None,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            dir,
        };
        assert!(server.spawn(), "redis-server did not start on port {port}");
        server
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ])
            .args(&self.extra_args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// Sends a signal (`STOP`, `CONT`, …) to the server process.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([&format!("-{name}"), &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// After [`kill`](Self::kill): a fresh, empty Redis on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs one command and returns its raw reply.
    pub fn cli_raw(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).expect("client");
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect");
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command
            .query::<redis::Value>(&mut connection)
            .expect("command")
    }

    /// Runs one command whose reply is a list of strings.
    pub fn cli_list(&self, args: &[&str]) -> Vec<String> {
        match self.cli_raw(args) {
            redis::Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect(),
            other => panic!("expected a list, got {other:?}"),
        }
    }

    /// Runs one command; its reply as text, or the error Redis answered
    /// (`BUSY …`, `LOADING …`) or the connection failure.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(|e| e.to_string())?;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        match command.query::<redis::Value>(&mut connection) {
            Ok(redis::Value::SimpleString(s)) => Ok(s),
            Ok(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Ok(other) => Ok(format!("{other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Runs one command and returns its reply as text.
    pub fn cli(&self, args: &[&str]) -> String {
        let client = redis::Client::open(self.url()).expect("client");
        let mut connection = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connect");
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        match command
            .query::<redis::Value>(&mut connection)
            .expect("command")
        {
            redis::Value::SimpleString(s) => s,
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::Int(n) => n.to_string(),
            other => format!("{other:?}"),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped process ignores SIGKILL until continued on some systems.
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
