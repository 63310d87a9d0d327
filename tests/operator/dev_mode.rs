//! `creditgate serve --dev` as a new user meets it: a real process whose
//! printed requests work as printed, and whose demo vendor exists only in
//! dev mode, on loopback.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use super::cli::{config, creditgate, json_out, stderr};
use crate::support::http::{Response, TestClient};
use crate::support::process::{GatewayProcess, TempDir, BIN};
use crate::support::upstream::RecordingUpstream;

/// `serve --dev` on free loopback ports, killed on drop.
struct DevProcess {
    child: Child,
    banner: String,
}

impl DevProcess {
    fn start() -> DevProcess {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--dev",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env_remove("CREDITGATE_CONFIG")
            .env("CREDITGATE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn creditgate serve --dev");
        let stdout = child.stdout.take().expect("stdout");
        let (lines, received) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut banner = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match received.recv_timeout(left) {
                Ok(line) => {
                    banner.push_str(&line);
                    banner.push('\n');
                    if line.starts_with("Press Ctrl-C") {
                        return DevProcess { child, banner };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("serve --dev printed no complete banner:\n{banner}");
                }
            }
        }
    }

    /// The value printed after `label` (its first word).
    fn printed(&self, label: &str) -> String {
        self.banner
            .lines()
            .find_map(|line| line.trim_start().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {label:?} in:\n{}", self.banner))
            .to_owned()
    }

    fn curl_commands(&self) -> Vec<String> {
        self.banner
            .lines()
            .filter(|line| line.starts_with("curl "))
            .map(str::to_owned)
            .collect()
    }

    fn terminate(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "serve --dev did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Splits a command line the way a POSIX shell would for what the banner
/// prints: words, single-quoted strings, backslash escapes.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for quoted in chars.by_ref() {
                    if quoted == '\'' {
                        break;
                    }
                    word.push(quoted);
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The request a printed `curl` command sends (the flags the banner uses).
fn curl_request(line: &str) -> http::Request<Full<Bytes>> {
    let words = shell_words(line);
    assert_eq!(words[0], "curl", "{line}");
    let (mut method, mut url, mut headers, mut data) = (None, None, Vec::new(), None);
    let mut rest = words[1..].iter();
    while let Some(word) = rest.next() {
        match word.as_str() {
            "-X" => method = rest.next().cloned(),
            "-H" => headers.push(rest.next().expect("-H value").clone()),
            "-d" => data = rest.next().cloned(),
            flag if flag.starts_with('-') => {
                assert!(
                    flag[1..].chars().all(|c| "siN".contains(c)),
                    "unexpected curl flag {flag} in {line}"
                );
            }
            other => url = Some(other.to_owned()),
        }
    }
    let method = method.unwrap_or_else(|| if data.is_some() { "POST" } else { "GET" }.to_owned());
    let mut request = http::Request::builder()
        .method(method.as_str())
        .uri(url.expect("a URL"));
    for header in headers {
        let (name, value) = header.split_once(": ").expect("Name: value");
        request = request.header(name, value);
    }
    request
        .body(Full::new(Bytes::from(data.unwrap_or_default())))
        .expect("a valid request")
}

fn assert_credit_headers(response: &Response, cost: &str, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
    assert_eq!(response.header("x-credits-limit"), Some("100"), "{what}");
    assert_eq!(response.header("x-credits-cost"), Some(cost), "{what}");
    assert!(response.header("x-credits-remaining").is_some(), "{what}");
    assert!(response.header("ratelimit").is_some(), "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dev_prints_three_requests_that_work_as_printed() {
    let mut dev = DevProcess::start();
    let key = dev.printed("API key:");
    let token = dev.printed("admin token:");
    let admin_url = dev.printed("admin plane:");
    assert!(key.starts_with("cg_"), "{}", dev.banner);
    assert!(token.starts_with("cgdev_"), "{}", dev.banner);
    let commands = dev.curl_commands();
    assert_eq!(commands.len(), 3, "{}", dev.banner);
    for command in &commands {
        assert!(
            command.contains("http://127.0.0.1:"),
            "not loopback: {command}"
        );
        assert!(command.contains(&key), "the key is not in: {command}");
    }

    let client = TestClient::new();
    let image = client.send(curl_request(&commands[0])).await;
    assert_credit_headers(&image, "8", "the image request");
    assert_eq!(image.json()["echo"]["path"], "/v1/images/generate");
    // The demo vendor got the injected vendor key, never the client's.
    assert_eq!(
        image.json()["echo"]["headers"]["authorization"],
        "Bearer demo-vendor-key"
    );

    let agents = client.send(curl_request(&commands[1])).await;
    // The reservation was all that was known when the headers left.
    assert_credit_headers(&agents, "4", "the streaming agents request");
    assert_eq!(agents.header("content-type"), Some("text/event-stream"));
    let stream = agents.text();
    let events: Vec<&str> = stream
        .split("\n\n")
        .filter_map(|event| event.strip_prefix("data: "))
        .collect();
    assert!(events.len() >= 3, "{stream}");
    assert!(
        events[events.len() - 2].contains("\"total_tokens\""),
        "{stream}"
    );
    assert_eq!(events.last(), Some(&"[DONE]"));

    // The stream settles once it ended: 8 + 3, as the banner says.
    let deadline = Instant::now() + Duration::from_secs(15);
    let credits = loop {
        let credits = client.send(curl_request(&commands[2])).await;
        assert_eq!(credits.status, 200, "{}", credits.text());
        if credits.json()["used"] == 11 || Instant::now() > deadline {
            break credits.json();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        credits["used"], 11,
        "the stream did not settle at 3: {credits}"
    );
    assert_eq!(credits["account"], "demo");
    assert_eq!(credits["available"], 89);
    assert!(dev.banner.contains("used 11 of 100"), "{}", dev.banner);

    // The printed token works, through the printed CLI environment too.
    let here = TempDir::new("dev-cli");
    let show = json_out(&creditgate(
        &["account", "show", "demo"],
        &[
            ("CREDITGATE_ADMIN_URL", &admin_url),
            ("CREDITGATE_ADMIN_TOKEN", &token),
        ],
        here.path(),
    ));
    assert_eq!(show["used"], 11);
    let history = json_out(&creditgate(
        &[
            "account",
            "history",
            "demo",
            "--admin-url",
            &admin_url,
            "--token",
            &token,
        ],
        &[],
        here.path(),
    ));
    let routes: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["route"].as_str().unwrap())
        .collect();
    assert_eq!(routes, ["agents", "image-generate"]);

    assert_eq!(dev.terminate(), Some(0));
}

#[test]
fn dev_mode_listens_on_loopback_only_and_reads_no_config() {
    let dir = TempDir::new("dev-refusals");
    for args in [
        vec!["serve", "--dev", "--listen", "0.0.0.0:0"],
        vec!["serve", "--dev", "--admin-listen", "192.0.2.1:9090"],
        vec!["serve", "--dev", "--config", "config/creditgate.toml"],
        vec!["serve", "--listen", "127.0.0.1:0"],
    ] {
        let output = creditgate(&args, &[], dir.path());
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    let output = creditgate(
        &["serve", "--dev", "--listen", "0.0.0.0:0"],
        &[],
        dir.path(),
    );
    assert!(stderr(&output).contains("loopback"), "{}", stderr(&output));
}

/// The TCP sockets `pid` listens on, from `/proc` (Linux).
fn listening_sockets(pid: u32) -> Vec<SocketAddr> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc/<pid>/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1, the state 3 (0A = LISTEN), the inode 9.
            if fields.len() > 9 && fields[3] == "0A" && inodes.contains(fields[9]) {
                found.push(parse_proc_address(fields[1]));
            }
        }
    }
    found
}

/// `0100007F:1F90` → 127.0.0.1:8080 (the kernel prints each 32-bit word of
/// the address in host byte order).
fn parse_proc_address(text: &str) -> SocketAddr {
    let (ip, port) = text.split_once(':').expect("ip:port");
    let port = u16::from_str_radix(port, 16).expect("port");
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).expect("hex"))
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        _ => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(bytes).expect("16 bytes"),
        )),
    };
    SocketAddr::new(ip, port)
}

#[test]
fn proc_addresses_decode() {
    if cfg!(target_endian = "little") {
        assert_eq!(
            parse_proc_address("0100007F:1F90"),
            "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            parse_proc_address("00000000000000000000000001000000:0050"),
            "[::1]:80".parse::<SocketAddr>().unwrap()
        );
    }
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_vendor_is_started_by_dev_mode_only() {
    // An ordinary gateway listens on its two configured addresses, nothing else.
    let upstream = RecordingUpstream::start().await;
    let dir = TempDir::new("dev-only");
    let gateway = GatewayProcess::start(&dir, &config(&upstream.url(), 1), &[]);
    let mut sockets = listening_sockets(gateway.pid() as u32);
    sockets.sort();
    // Each data-plane worker has a listener of its own on the data address.
    sockets.dedup();
    let mut expected: Vec<SocketAddr> = vec![
        format!("127.0.0.1:{}", gateway.data_port).parse().unwrap(),
        format!("127.0.0.1:{}", gateway.admin_port).parse().unwrap(),
    ];
    expected.sort();
    assert_eq!(
        sockets, expected,
        "serve without --dev listens on more than its config says"
    );
    assert!(
        !gateway.logs().contains("demo vendor"),
        "{}",
        gateway.logs()
    );

    // Dev mode: data, admin and the demo vendor — all on 127.0.0.1.
    let dev = DevProcess::start();
    let mut sockets = listening_sockets(dev.child.id());
    sockets.sort();
    sockets.dedup();
    assert_eq!(sockets.len(), 3, "{sockets:?}\n{}", dev.banner);
    assert!(
        sockets
            .iter()
            .all(|addr| addr.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST)),
        "{sockets:?}"
    );
    let vendor = dev.printed("demo vendor:");
    let vendor_port: u16 = vendor.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        sockets.iter().any(|addr| addr.port() == vendor_port),
        "{sockets:?} {vendor}"
    );
}
