//! Money oracles: the ledger as the admin API shows it, compared with what
//! the recording upstreams received, and status tallies that say what
//! happened when an exactness test fails.

use std::collections::{BTreeMap, HashMap};

use super::http::TestClient;
use super::upstream::{RecordedRequest, RecordingUpstream};

/// One debit in an account's history.
#[derive(Debug, Clone)]
pub struct Debit {
    pub account: String,
    pub request_id: String,
    pub route: String,
    pub cost: u64,
    pub refunded: bool,
    /// What prepaid grants paid of `cost`.
    pub from_grants: u64,
}

/// One prepaid grant of an account, as the admin API lists it.
#[derive(Debug, Clone)]
pub struct GrantView {
    pub account: String,
    pub grant_id: String,
    pub credits: u64,
    pub remaining: u64,
}

/// What the ledger holds for some accounts: `used` summed over them and
/// every history item (all within one window in the tests that use this).
#[derive(Debug, Clone)]
pub struct LedgerView {
    pub used: u64,
    pub debits: Vec<Debit>,
    pub grants: Vec<GrantView>,
}

impl LedgerView {
    /// Reads the accounts through the admin API at `admin_base`
    /// (`http://host:port`), following history cursors to the end.
    pub async fn fetch(
        client: &TestClient,
        admin_base: &str,
        token: &str,
        accounts: &[&str],
    ) -> LedgerView {
        let auth = format!("Bearer {token}");
        let headers = [("authorization", auth.as_str())];
        let mut view = LedgerView {
            used: 0,
            debits: Vec::new(),
            grants: Vec::new(),
        };
        for account in accounts {
            let shown = client
                .get(
                    &format!("{admin_base}/admin/v1/accounts/{account}"),
                    &headers,
                )
                .await;
            assert_eq!(shown.status, 200, "account {account}: {}", shown.text());
            view.used += shown.json()["used"].as_u64().expect("used");
            let mut cursor: Option<String> = None;
            loop {
                let mut url = format!("{admin_base}/admin/v1/accounts/{account}/history?limit=500");
                if let Some(cursor) = &cursor {
                    url.push_str(&format!("&before={cursor}"));
                }
                let page = client.get(&url, &headers).await;
                assert_eq!(page.status, 200, "history of {account}: {}", page.text());
                let page = page.json();
                for item in page["items"].as_array().expect("items") {
                    view.debits.push(Debit {
                        account: account.to_string(),
                        request_id: item["request_id"].as_str().expect("request_id").into(),
                        route: item["route"].as_str().expect("route").into(),
                        cost: item["cost"].as_u64().expect("cost"),
                        refunded: item["refunded"].as_bool().expect("refunded"),
                        from_grants: item["from_grants"].as_u64().expect("from_grants"),
                    });
                }
                match page["next"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            let grants = client
                .get(
                    &format!("{admin_base}/admin/v1/accounts/{account}/grants"),
                    &headers,
                )
                .await;
            assert_eq!(grants.status, 200, "grants of {account}: {}", grants.text());
            for grant in grants.json()["items"].as_array().expect("items") {
                view.grants.push(GrantView {
                    account: account.to_string(),
                    grant_id: grant["grant_id"].as_str().expect("grant_id").into(),
                    credits: grant["credits"].as_u64().expect("credits"),
                    // Not below zero: an unsigned integer or the test fails here.
                    remaining: grant["remaining"].as_u64().expect("remaining >= 0"),
                });
            }
        }
        view
    }

    /// What grants have paid for, as the grants show it.
    pub fn grant_spend(&self) -> u64 {
        self.grants.iter().map(|g| g.credits - g.remaining).sum()
    }

    /// Debits that stand (not refunded).
    pub fn standing(&self) -> impl Iterator<Item = &Debit> {
        self.debits.iter().filter(|d| !d.refunded)
    }
}

/// The money invariant: the ledger equals what the vendors received.
///
/// `price` says what a request the vendors received whole should cost in
/// the end (0 for a free route or one refunded by the route's rules). Then:
/// every priced request has its own request id and exactly one standing
/// debit of that price; every standing debit belongs to a request a vendor
/// received whole; and `used` is the sum of those prices.
pub fn assert_ledger_matches_vendors(
    view: &LedgerView,
    vendors: &[&RecordingUpstream],
    price: impl Fn(&RecordedRequest) -> u64,
) {
    let expected = assert_debits_match_vendors(view, vendors, price);
    let vendors: Vec<String> = vendors.iter().map(|v| v.summary()).collect();
    assert_eq!(
        view.used,
        expected,
        "used != Σ price of the requests vendors received; vendors: {}",
        vendors.join("; ")
    );
}

/// The money invariant with prepaid grants (none expired or voided): the
/// allowance spend (`used`, every debit in the window) plus what grants
/// paid equals what the vendors received; grants paid exactly the standing
/// debits' grant parts, and none holds more than it was given.
pub fn assert_ledger_with_grants_matches_vendors(
    view: &LedgerView,
    vendors: &[&RecordingUpstream],
    price: impl Fn(&RecordedRequest) -> u64,
) {
    let expected = assert_debits_match_vendors(view, vendors, price);
    let vendors: Vec<String> = vendors.iter().map(|v| v.summary()).collect();
    let report = format!(
        "used {}, grant spend {}, grants {:?}; vendors: {}",
        view.used,
        view.grant_spend(),
        view.grants,
        vendors.join("; ")
    );
    for grant in &view.grants {
        assert!(grant.remaining <= grant.credits, "{report}");
    }
    assert_eq!(view.used + view.grant_spend(), expected, "{report}");
    let from_grants: u64 = view.standing().map(|d| d.from_grants).sum();
    assert_eq!(from_grants, view.grant_spend(), "{report}");
}

/// The per-debit half of [`assert_ledger_matches_vendors`], for a test whose
/// debits leave the window (so `used` no longer sums them): every priced
/// request has exactly one standing debit at its price and every standing
/// debit a request a vendor received whole. Returns the sum of the prices.
pub fn assert_debits_match_vendors(
    view: &LedgerView,
    vendors: &[&RecordingUpstream],
    price: impl Fn(&RecordedRequest) -> u64,
) -> u64 {
    let received: Vec<RecordedRequest> = vendors.iter().flat_map(|v| v.requests()).collect();
    let summary = || {
        let vendors: Vec<String> = vendors.iter().map(|v| v.summary()).collect();
        format!(
            "ledger used {}, {} debits ({} standing); vendors: {}",
            view.used,
            view.debits.len(),
            view.standing().count(),
            vendors.join("; ")
        )
    };
    let mut priced: HashMap<&str, u64> = HashMap::new();
    for request in &received {
        let cost = price(request);
        if cost == 0 {
            continue;
        }
        let id = request.request_id();
        assert!(
            priced.insert(id, cost).is_none(),
            "request id {id:?} reached the vendors twice ({} {}): {}",
            request.method,
            request.uri,
            summary()
        );
    }
    let mut standing: HashMap<&str, &Debit> = HashMap::new();
    let mut problems = Vec::new();
    for debit in view.standing() {
        if standing.insert(&debit.request_id, debit).is_some() {
            problems.push(format!("two standing debits for {}", debit.request_id));
        }
        match priced.get(debit.request_id.as_str()) {
            None => problems.push(format!(
                "charged {} for {} ({}), which no vendor received whole (or should be free)",
                debit.cost, debit.request_id, debit.route
            )),
            Some(&cost) if cost != debit.cost => problems.push(format!(
                "{} ({}) charged {}, expected {cost}",
                debit.request_id, debit.route, debit.cost
            )),
            Some(_) => {}
        }
    }
    for (id, cost) in &priced {
        if !standing.contains_key(id) {
            problems.push(format!(
                "{id} reached a vendor (price {cost}) but has no standing debit"
            ));
        }
    }
    problems.sort();
    assert!(
        problems.is_empty(),
        "the ledger differs from what vendors received ({} problems): {}\n{}",
        problems.len(),
        summary(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    priced.values().sum()
}

/// A price list by exact path (query ignored): everything else is free.
pub fn by_path<'a>(prices: &'a [(&'a str, u64)]) -> impl Fn(&RecordedRequest) -> u64 + 'a {
    move |request| {
        prices
            .iter()
            .find(|(path, _)| request.path() == *path)
            .map_or(0, |(_, cost)| *cost)
    }
}

/// Prices by the request id the gateway forwarded (a test that knows what
/// each response should have cost); requests not listed are free.
pub fn by_request_id(prices: &HashMap<String, u64>) -> impl Fn(&RecordedRequest) -> u64 + '_ {
    move |request| prices.get(request.request_id()).copied().unwrap_or(0)
}

/// Responses counted by status.
#[derive(Debug, Default, Clone)]
pub struct Tally(BTreeMap<u16, usize>);

impl Tally {
    pub fn add(&mut self, status: u16) {
        *self.0.entry(status).or_default() += 1;
    }

    pub fn count(&self, status: u16) -> usize {
        self.0.get(&status).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.0.values().sum()
    }

    /// Statuses other than those listed.
    pub fn others(&self, expected: &[u16]) -> usize {
        self.0
            .iter()
            .filter(|(status, _)| !expected.contains(status))
            .map(|(_, n)| n)
            .sum()
    }
}

impl FromIterator<u16> for Tally {
    fn from_iter<I: IntoIterator<Item = u16>>(statuses: I) -> Tally {
        let mut tally = Tally::default();
        for status in statuses {
            tally.add(status);
        }
        tally
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        write!(f, "{}", parts.join(", "))
    }
}
