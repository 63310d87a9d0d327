//! The operator console in a real browser: Debian's headless Chromium opens
//! `/admin/#token=…&account=…` on a running gateway whose account has 30
//! days of debits on several routes and a refund, and what the page renders
//! (used, available, the chart's bars and legend, the history with its
//! refunded row, the account list) must be what the admin API says.
//! Screenshots are taken too; `CREDITGATE_UPDATE_SCREENSHOTS=1` copies them
//! to `docs/` for the README.
//!
//! Without a `chromium` on the PATH the test says so loudly and stops —
//! except under CI (`CI` set), whose `.ci/run` installs it, where that is a
//! failure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use creditgate::clock::ManualClock;
use serde_json::{json, Value};

use super::Demo;
use crate::support::gateway::ADMIN_TOKEN;
use crate::support::process::TempDir;

const DAY_MS: i64 = 86_400_000;
/// 2026-12-01T17:20:00Z: screenshots show the same days on every run.
const NOW_MS: i64 = 1_796_145_600_000;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A small deterministic generator (the same traffic, hence the same
/// screenshot, on every run).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// 30 days of traffic for `site-42` and some for the other accounts; returns
/// site-42's key and the request id the operator refunded.
async fn seed(demo: &Demo, clock: &ManualClock) -> (String, String) {
    let key = demo.account_with_key("site-42", "pro").await;
    let blog = demo.account_with_key("acme-blog", "starter").await;
    let travel = demo.account_with_key("travel-guide", "starter").await;
    demo.put_account("bakery-lyon", json!({"plan": "agency"}))
        .await;
    demo.put_account("studio-nord", json!({"plan": "pro", "suspended": false}))
        .await;
    let mut random = Lcg(42);
    let first_day = NOW_MS - 29 * DAY_MS;
    let mut refundable = String::new();
    for day in 0..30i64 {
        // Busier on weekdays, and growing over the month.
        let weekday = (day + 3) % 7 < 5;
        let scale = 1 + day as u64 / 10 + u64::from(weekday);
        clock.set_ms(first_day + day * DAY_MS - 6 * 3_600_000);
        for _ in 0..random.below(3) + scale {
            let n = 1 + random.below(3);
            refundable = demo
                .spend(&key, "/v1/images/generate", json!({ "n": n }))
                .await;
            clock.advance_ms(600_000);
        }
        for _ in 0..random.below(3) {
            demo.spend(&key, "/v1/images/upscale", json!({})).await;
        }
        for _ in 0..random.below(scale + 1) {
            demo.spend(&key, "/v1/videos/generate", json!({})).await;
            clock.advance_ms(900_000);
        }
        for _ in 0..random.below(4) + scale {
            demo.spend(&key, "/v1/agents/chat", json!({"max_tokens": 2000}))
                .await;
        }
        if day >= 26 {
            for _ in 0..17 {
                demo.spend(&blog, "/v1/videos/generate", json!({})).await;
            }
            demo.spend(&travel, "/v1/images/generate", json!({"n": 10}))
                .await;
        }
    }
    clock.set_ms(NOW_MS);
    let last = demo.spend(&key, "/v1/videos/generate", json!({})).await;
    demo.put_account("studio-nord", json!({"suspended": true}))
        .await;
    // The operator refunds the last image request of yesterday and today's video.
    for id in [&refundable, &last] {
        let refund = demo
            .admin_post(
                "/admin/v1/accounts/site-42/refunds",
                json!({ "request_id": id }),
            )
            .await;
        assert_eq!(refund.status, 200, "{}", refund.text());
    }
    (key, last)
}

/// Runs Chromium headless with the flags this machine needs as root, a
/// fresh profile and a virtual-time budget for the page's API calls.
async fn chromium_run(browser: &Path, profile: &Path, args: &[&str]) -> Vec<u8> {
    let mut command = tokio::process::Command::new(browser);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            "--force-color-profile=srgb",
            "--virtual-time-budget=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("chromium did not finish within 120 s")
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "chromium {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The text of the element with this id in a serialized DOM (up to its first child tag).
fn text_by_id(dom: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let open_end = start + dom[start..].find('>').expect("tag end") + 1;
    let close = open_end + dom[open_end..].find('<').expect("text end");
    dom[open_end..close].trim().replace("&nbsp;", " ")
}

/// The part of the DOM inside the element with this id (to its matching
/// close tag, for elements that do not nest their own kind).
fn inner_by_id<'d>(dom: &'d str, id: &str, tag: &str) -> &'d str {
    let marker = format!("id=\"{id}\"");
    let start = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let end = start
        + dom[start..]
            .find(&format!("</{tag}>"))
            .unwrap_or_else(|| panic!("#{id} is not closed"));
    &dom[start..end]
}

/// `n` as the page writes it (en-US grouping).
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path)
        .map(|bytes| bytes.len() > 20_000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_an_account_as_the_admin_api_does() {
    let Some(browser) = chromium() else {
        let message =
            "\n\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! SKIPPED: the operator console's browser test needs Chromium, and   !!\n\
             !! none is installed. `apt-get install chromium` (.ci/run does).      !!\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n";
        assert!(
            std::env::var_os("CI").is_none(),
            "{message}(CI installs Chromium: its absence here is a failure)"
        );
        eprintln!("{message}");
        return;
    };
    let clock = ManualClock::new(NOW_MS);
    let demo = Demo::start("backend = \"memory\"", Some(clock.clone())).await;
    let (_key, refunded) = seed(&demo, &clock).await;
    let usage = demo
        .admin_get("/admin/v1/accounts/site-42/usage")
        .await
        .json();
    let account = demo.admin_get("/admin/v1/accounts/site-42").await.json();
    let history = demo
        .admin_get("/admin/v1/accounts/site-42/history?limit=25")
        .await
        .json();
    let used = usage["used"].as_u64().unwrap();
    assert!(used > 1000, "enough traffic to draw: {usage}");

    let dir = TempDir::new("console-browser");
    let url = demo.admin_url(&format!("/admin/#token={ADMIN_TOKEN}&account=site-42"));

    let dom = chromium_run(
        &browser,
        &dir.path().join("profile-dom"),
        &["--dump-dom", &url],
    )
    .await;
    let dom = String::from_utf8(dom).expect("the DOM is text");
    std::fs::write(dir.path().join("console.html"), &dom).unwrap();
    let context = || format!("(DOM saved in {})", dir.path().display());

    // The account, as the admin API reports it.
    assert_eq!(text_by_id(&dom, "acct-id"), "site-42", "{}", context());
    assert_eq!(
        text_by_id(&dom, "stat-used"),
        grouped(used),
        "{}",
        context()
    );
    assert_eq!(
        text_by_id(&dom, "stat-available"),
        grouped(usage["available"].as_u64().unwrap()),
        "{}",
        context()
    );
    assert_eq!(text_by_id(&dom, "stat-allowance"), "5,000", "{}", context());
    assert_eq!(account["used"], usage["used"]);

    // The chart: one bar per (day, route) with credits, and a legend entry per route.
    let segments: usize = usage["by_day"]
        .as_array()
        .unwrap()
        .iter()
        .map(|day| day["by_route"].as_object().unwrap().len())
        .sum();
    let chart = inner_by_id(&dom, "chart", "svg");
    assert_eq!(
        chart.matches("class=\"bar\"").count(),
        segments,
        "one stacked segment per day and route {}",
        context()
    );
    assert!(chart.contains("role=\"img\""), "{}", context());
    let legend = inner_by_id(&dom, "legend", "ul");
    for route in usage["by_route"].as_array().unwrap() {
        let name = route["route"].as_str().unwrap();
        assert!(legend.contains(name), "legend lacks {name} {}", context());
        assert!(
            legend.contains(&grouped(route["credits"].as_u64().unwrap())),
            "legend lacks {name}'s credits {}",
            context()
        );
    }

    // History: the first page, with the operator's refund marked.
    let rows = inner_by_id(&dom, "history", "table");
    let items = history["items"].as_array().unwrap();
    assert_eq!(
        rows.matches("<tr").count(),
        items.len() + 1,
        "a header row and one row per debit {}",
        context()
    );
    assert!(rows.contains(&refunded), "{}", context());
    let refunded_rows = items
        .iter()
        .filter(|item| item["refunded"] == Value::Bool(true))
        .count();
    assert!(refunded_rows >= 1);
    assert_eq!(
        rows.matches("class=\"refunded\"").count(),
        refunded_rows,
        "{}",
        context()
    );

    // Coming back, and the account list.
    let returning = inner_by_id(&dom, "returning", "ol");
    let first_back = &usage["returning"][0];
    assert!(
        returning.contains(&format!(
            "+{}",
            grouped(first_back["credits"].as_u64().unwrap())
        )),
        "{}",
        context()
    );
    let list = inner_by_id(&dom, "account-list", "ul");
    for id in [
        "acme-blog",
        "bakery-lyon",
        "site-42",
        "studio-nord",
        "travel-guide",
    ] {
        assert!(list.contains(id), "the list lacks {id} {}", context());
    }
    assert!(list.contains("suspended"), "{}", context());
    // The token left the address bar: the page rewrote its own URL.
    assert!(!dom.contains(ADMIN_TOKEN), "{}", context());

    // Screenshots: the first screen on a laptop, and the whole page.
    let shots = [
        ("console.png", "1440,900"),
        ("console-full.png", "1440,1780"),
    ];
    for (name, size) in shots {
        let path = dir.path().join(name);
        chromium_run(
            &browser,
            &dir.path().join(format!("profile-{name}")),
            &[
                &format!("--screenshot={}", path.display()),
                &format!("--window-size={size}"),
                &url,
            ],
        )
        .await;
        assert!(is_png(&path), "{name} is not a screenshot {}", context());
    }
    let prices_path = dir.path().join("console-prices.png");
    chromium_run(
        &browser,
        &dir.path().join("profile-prices"),
        &[
            &format!("--screenshot={}", prices_path.display()),
            "--window-size=1440,900",
            &demo.admin_url(&format!("/admin/#token={ADMIN_TOKEN}&view=prices")),
        ],
    )
    .await;
    assert!(is_png(&prices_path), "{}", context());
    let overview_path = dir.path().join("console-overview.png");
    chromium_run(
        &browser,
        &dir.path().join("profile-overview"),
        &[
            &format!("--screenshot={}", overview_path.display()),
            "--window-size=1440,900",
            &demo.admin_url(&format!("/admin/#token={ADMIN_TOKEN}")),
        ],
    )
    .await;
    assert!(is_png(&overview_path), "{}", context());
    if std::env::var_os("CREDITGATE_UPDATE_SCREENSHOTS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        for name in ["console.png", "console-full.png", "console-prices.png"] {
            std::fs::copy(dir.path().join(name), docs.join(name)).expect("copy a screenshot");
        }
        eprintln!("screenshots copied to {}", docs.display());
    }
    if let Some(keep) = std::env::var_os("CREDITGATE_CONSOLE_ARTIFACTS") {
        for name in [
            "console.html",
            "console.png",
            "console-full.png",
            "console-prices.png",
            "console-overview.png",
        ] {
            let _ = std::fs::copy(dir.path().join(name), Path::new(&keep).join(name));
        }
    }
    demo.shutdown().await;
}
