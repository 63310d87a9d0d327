//! Redis Sentinel: the ledger follows the primary the sentinels name — a
//! primary killed under load (SIGKILL), a primary demoted to replica that
//! keeps its clients and answers READONLY, sentinels and primary over TLS
//! with passwords. While no primary answers the
//! gateway says 503 `ledger_unavailable`, never 500; it serves again soon
//! after the sentinels switch; and the new primary's ledger matches what
//! the vendor received, less only the debits asynchronous replication lost
//! (docs/ledger.md, "Sentinel and failover").

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::assert_problem;
use crate::support::gateway::{config_toml, Setup, TestGateway};
use crate::support::process::free_port;
use crate::support::sentinel::{SentinelNode, SentinelSet, MASTER};
use crate::support::tls::{TestPki, TlsRedis};
use crate::support::upstream::RecordingUpstream;
use crate::support::wait::wait_until;

const COST: u64 = 7;
const ALLOWANCE: u64 = 10_000;

fn sentinel_toml(set: &SentinelSet, upstream: &RecordingUpstream) -> String {
    config_toml(&Setup::new(&upstream.url()))
        .replace(
            "backend = \"memory\"",
            &format!("sentinel = {}", set.toml()),
        )
        // Exactness: a timeout load cannot reach (the outage itself is
        // connection errors, answered at once).
        .replace("timeout = \"250ms\"", "timeout = \"2s\"")
}

/// One answer the load got.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    status: u16,
    code: Option<String>,
    retry_after: bool,
}

/// Every debit of the account as the ledger's history lists it:
/// request id → refunded.
async fn ledger_debits(gateway: &TestGateway, account: &str) -> BTreeMap<String, bool> {
    // The admin plane has a ledger connection of its own, idle during the
    // failover: its first call after it may find the old primary's socket
    // dead (503, and the next call asks the sentinels again).
    wait_until("the admin plane to reach the new primary", async || {
        let account = gateway
            .admin_get(&format!("/admin/v1/accounts/{account}"))
            .await;
        if account.status == 200 {
            Ok(())
        } else {
            Err(account.text())
        }
    })
    .await;
    let mut debits = BTreeMap::new();
    let mut before: Option<String> = None;
    loop {
        let path = match &before {
            Some(cursor) => {
                format!("/admin/v1/accounts/{account}/history?limit=500&before={cursor}")
            }
            None => format!("/admin/v1/accounts/{account}/history?limit=500"),
        };
        let page = gateway.admin_get(&path).await;
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        for item in page["items"].as_array().expect("items") {
            assert_eq!(item["cost"], COST, "{item}");
            debits.insert(
                item["request_id"].as_str().expect("request id").to_owned(),
                item["refunded"] == true,
            );
        }
        match page["next"].as_str() {
            Some(cursor) => before = Some(cursor.to_owned()),
            None => return debits,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_primary_under_load_fails_over_without_overspend() {
    let mut set = SentinelSet::start(3);
    let old_primary = set.primary.port();
    let upstream = RecordingUpstream::start().await;
    let gateway = Arc::new(TestGateway::start_toml(&sentinel_toml(&set, &upstream)).await);
    let key = gateway.account_with_key("steady", "pro").await;

    // Watches the sentinels for the switch to the new primary.
    let watching = Arc::new(AtomicBool::new(true));
    let switched_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let ports: Vec<u16> = set.sentinels.iter().map(|s| s.port).collect();
    let watcher = {
        let (watching, switched_at) = (watching.clone(), switched_at.clone());
        std::thread::spawn(move || {
            let clients: Vec<redis::Client> = ports
                .iter()
                .map(|p| redis::Client::open(format!("redis://127.0.0.1:{p}")).unwrap())
                .collect();
            while watching.load(Ordering::SeqCst) {
                let named = clients.iter().find_map(|client| {
                    let mut c = client
                        .get_connection_with_timeout(Duration::from_millis(200))
                        .ok()?;
                    let (_, port): (String, u16) = redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(MASTER)
                        .query(&mut c)
                        .ok()?;
                    (port != old_primary).then_some(())
                });
                if named.is_some() {
                    *switched_at.lock().unwrap() = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    // Four clients, each a request every ~20 ms.
    let running = Arc::new(AtomicBool::new(true));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (gateway, running, samples) = (gateway.clone(), running.clone(), samples.clone());
        let auth = format!("Bearer {key}");
        load.push(tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                let response = gateway
                    .client
                    .post(&gateway.url("/v1/paid"), &[("authorization", &auth)], "x")
                    .await;
                let code = (response.status != 200)
                    .then(|| response.json()["code"].as_str().map(str::to_owned))
                    .flatten();
                samples.lock().unwrap().push(Sample {
                    at: Instant::now(),
                    status: response.status,
                    code,
                    retry_after: response.header("retry-after").is_some(),
                });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    let served = |samples: &Mutex<Vec<Sample>>| {
        samples
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.status == 200)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while served(&samples) < 40 {
        assert!(
            Instant::now() < deadline,
            "no load got through before the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let killed_at = Instant::now();
    set.primary.kill();
    // Wait for service to come back after the outage, then keep the load
    // on a little longer.
    let deadline = Instant::now() + Duration::from_secs(25);
    let back_at = loop {
        let back = {
            let samples = samples.lock().unwrap();
            let first_refusal = samples
                .iter()
                .filter(|s| s.at > killed_at && s.status != 200)
                .map(|s| s.at)
                .min();
            first_refusal.and_then(|refused| {
                samples
                    .iter()
                    .filter(|s| s.at > refused && s.status == 200)
                    .map(|s| s.at)
                    .min()
            })
        };
        if let Some(back) = back {
            break back;
        }
        assert!(
            Instant::now() < deadline,
            "no service within 25 s of the kill; answers since: {:?}",
            samples
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.at > killed_at)
                .map(|s| (s.status, s.code.clone()))
                .collect::<BTreeSet<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.store(false, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    watching.store(false, Ordering::SeqCst);
    watcher.join().unwrap();
    let samples = samples.lock().unwrap().clone();

    // Every answer: a 200, or a 503 ledger_unavailable with Retry-After.
    for sample in &samples {
        match sample.status {
            200 => {}
            503 => {
                assert_eq!(
                    sample.code.as_deref(),
                    Some("ledger_unavailable"),
                    "{sample:?}"
                );
                assert!(sample.retry_after, "503 without Retry-After: {sample:?}");
            }
            _ => panic!("unexpected answer during the failover: {sample:?}"),
        }
    }
    let first_503 = samples
        .iter()
        .filter(|s| s.at > killed_at && s.status == 503)
        .map(|s| s.at)
        .min()
        .expect("503 while no primary answered");
    let switched_at = switched_at
        .lock()
        .unwrap()
        .expect("the sentinels named a new primary");
    assert_ne!(set.primary_port(), Some(old_primary));
    let refused = samples
        .iter()
        .filter(|s| s.at > killed_at && s.status == 503)
        .count();
    eprintln!(
        "sentinel failover: kill → first 503 {:?}, kill → sentinels switch {:?}, \
         kill → first 200 again {:?} ({} requests, {refused} answered 503)",
        first_503 - killed_at,
        switched_at - killed_at,
        back_at - killed_at,
        samples.len(),
    );
    // The bound: service within the sentinels' failover time + 2 s.
    assert!(
        back_at <= switched_at + Duration::from_secs(2),
        "service came back {:?} after the sentinels switched",
        back_at.saturating_duration_since(switched_at)
    );

    // What the vendor received against what the new primary recorded.
    let forwarded: BTreeSet<String> = upstream
        .requests()
        .iter()
        .map(|r| r.header("x-request-id").expect("request id").to_owned())
        .collect();
    let recorded = ledger_debits(&gateway, "steady").await;
    let admitted = samples.iter().filter(|s| s.status == 200).count();
    assert_eq!(
        forwarded.len(),
        admitted,
        "each 200 reached the vendor once"
    );
    let never_forwarded: Vec<&String> = recorded
        .keys()
        .filter(|id| !forwarded.contains(*id))
        .collect();
    assert!(
        never_forwarded.is_empty(),
        "debits for requests the vendor never received: {never_forwarded:?}"
    );
    assert!(
        recorded.values().all(|refunded| !refunded),
        "no refunds here"
    );
    let lost: Vec<&String> = forwarded
        .iter()
        .filter(|id| !recorded.contains_key(*id))
        .collect();
    let used = gateway.used("steady").await;
    assert_eq!(
        used,
        recorded.len() as u64 * COST,
        "used == Σ recorded debits"
    );
    assert_eq!(
        used + lost.len() as u64 * COST,
        forwarded.len() as u64 * COST,
        "used == Σ forwarded − debits lost with the old primary"
    );
    eprintln!(
        "sentinel failover: {} requests forwarded, {} debits on the new primary, \
         {} lost by asynchronous replication",
        forwarded.len(),
        recorded.len(),
        lost.len()
    );

    // The allowance holds on the new primary: spend it to the last credit.
    let mut exhaust = Vec::new();
    for _ in 0..8 {
        let gateway = gateway.clone();
        let auth = format!("Bearer {key}");
        exhaust.push(tokio::spawn(async move {
            let mut admitted = 0u64;
            loop {
                let response = gateway
                    .client
                    .post(&gateway.url("/v1/paid"), &[("authorization", &auth)], "x")
                    .await;
                match response.status {
                    200 => admitted += 1,
                    429 => return admitted,
                    other => panic!("{other} on the new primary: {}", response.text()),
                }
            }
        }));
    }
    let mut admitted_after = 0;
    for task in exhaust {
        admitted_after += task.await.unwrap();
    }
    let used = gateway.used("steady").await;
    assert_eq!(
        used,
        ALLOWANCE / COST * COST,
        "spent to the last whole request"
    );
    assert_eq!(
        upstream.count() as u64,
        ALLOWANCE / COST + lost.len() as u64,
        "the vendor got the allowance plus only the lost debits ({admitted_after} after the failover)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_demoted_to_replica_is_left_for_the_one_the_sentinels_name() {
    let set = SentinelSet::start(1);
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start_toml(&sentinel_toml(&set, &upstream)).await;
    let key = gateway.account_with_key("site-ro", "pro").await;
    let auth = format!("Bearer {key}");
    let pay = || async {
        gateway
            .client
            .post(&gateway.url("/v1/paid"), &[("authorization", &auth)], "x")
            .await
    };
    assert_eq!(pay().await.status, 200);
    // The debit is on the replica before the roles swap.
    assert_eq!(set.primary.cli(&["WAIT", "1", "5000"]), "1");

    // Swap the roles by hand, as an operator (or a managed service) would:
    // the old primary keeps its clients and refuses writes with READONLY.
    let (old, new) = (&set.primary, &set.replica);
    new.cli(&["REPLICAOF", "NO", "ONE"]);
    old.cli(&["REPLICAOF", "127.0.0.1", &new.port().to_string()]);
    // The gateway's connection to the old primary is still open: its next
    // debit meets READONLY.
    let refused = pay().await;
    assert_problem(&refused, 503, "ledger_unavailable");
    // The sentinels still name the old server (now a replica): no primary.
    let still = pay().await;
    assert_problem(&still, 503, "ledger_unavailable");

    // The sentinels learn of the new primary.
    let sentinel = &set.sentinels[0];
    sentinel.query(&["SENTINEL", "REMOVE", MASTER]);
    sentinel.query(&[
        "SENTINEL",
        "MONITOR",
        MASTER,
        "127.0.0.1",
        &new.port().to_string(),
        "1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let response = pay().await;
        match response.status {
            200 => break,
            503 => assert_problem(&response, 503, "ledger_unavailable"),
            other => panic!("unexpected {other}: {}", response.text()),
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never reached the new primary: {}",
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gateway.used("site-ro").await, 2 * COST);
    assert_eq!(upstream.count(), 2);
    // Both debits are on the new primary; the old one follows it.
    assert!(old.cli(&["INFO", "replication"]).contains("role:slave"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_and_primary_over_tls_with_passwords() {
    let pki = TestPki::new();
    // The primary: TLS only; the sentinel logs in as `default`, the gateway
    // as its own ACL user.
    let primary = TlsRedis::start(
        &pki,
        &[
            "--requirepass",
            "primary-pw",
            "--user",
            "creditgate",
            "on",
            ">gate-pw",
            "~*",
            "&*",
            "+@all",
        ],
    );
    let port = free_port();
    let conf = format!(
        "port 0\n\
         tls-port {port}\n\
         bind 127.0.0.1\n\
         tls-cert-file {cert}\n\
         tls-key-file {key}\n\
         tls-ca-cert-file {ca}\n\
         tls-auth-clients no\n\
         tls-replication yes\n\
         requirepass sentinel-pw\n\
         sentinel monitor {MASTER} 127.0.0.1 {primary} 1\n\
         sentinel auth-pass {MASTER} primary-pw\n",
        cert = pki.cert.display(),
        key = pki.key.display(),
        ca = pki.ca.display(),
        primary = primary.port,
    );
    let sentinel = SentinelNode::start(
        port,
        &conf,
        pki.client(&format!("rediss://:sentinel-pw@localhost:{port}")),
    );
    let upstream = RecordingUpstream::start().await;
    let toml = |sentinel_password: &str| {
        config_toml(&Setup::new(&upstream.url()))
            .replace(
                "backend = \"memory\"",
                &format!(
                    "sentinel = {{ master = \"{MASTER}\", nodes = [\"rediss://:{sentinel_password}@localhost:{}\"], \
                     username = \"creditgate\", password = \"gate-pw\" }}\ntls_ca = \"{}\"",
                    sentinel.port,
                    pki.ca.display()
                ),
            )
            .replace("timeout = \"250ms\"", "timeout = \"2s\"")
    };

    let refused = TestGateway::start_toml(&toml("wrong")).await;
    let response = refused
        .client
        .post(
            &refused.url("/v1/paid"),
            &[("authorization", "Bearer any-key")],
            "x",
        )
        .await;
    assert_problem(&response, 503, "ledger_unavailable");
    refused.shutdown().await;

    let gateway = TestGateway::start_toml(&toml("sentinel-pw")).await;
    let key = gateway.account_with_key("site-tls", "pro").await;
    let paid = gateway
        .client
        .post(
            &gateway.url("/v1/paid"),
            &[("authorization", &format!("Bearer {key}"))],
            "x",
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.text());
    assert_eq!(gateway.used("site-tls").await, COST);
    let stored = pki
        .client(&format!(
            "rediss://creditgate:gate-pw@localhost:{}/0",
            primary.port
        ))
        .get_connection()
        .and_then(|mut c| redis::cmd("DBSIZE").query::<u64>(&mut c))
        .expect("DBSIZE");
    assert!(stored > 0, "the debit is on the TLS primary");
}
