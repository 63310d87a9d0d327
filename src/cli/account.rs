//! `creditgate account …`: accounts and keys through a running gateway's
//! admin API. Ids are checked by the API's own rules before anything is
//! sent, and every success prints JSON on stdout.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{json, Value};

use super::admin_api::{AdminApi, Answer, Call, CALL_TIMEOUT};
use super::exit::{Exit, Failure, Outcome};

#[derive(Args)]
#[command(after_help = concat!(
    "Examples:\n  \
     creditgate account put site-42 --plan pro\n  \
     creditgate account key-add site-42\n  \
     creditgate account list --all\n  \
     CREDITGATE_ADMIN_URL=http://10.0.0.5:9090 CREDITGATE_ADMIN_TOKEN=… creditgate account show site-42\n\n",
    crate::exit_codes_help!()
))]
pub struct AccountArgs {
    /// Admin API base URL, e.g. http://127.0.0.1:9090. Default: http:// + admin.listen of the config file.
    #[arg(
        long,
        env = "CREDITGATE_ADMIN_URL",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    admin_url: Option<String>,
    /// Admin bearer token. Default: admin.token of the config file.
    #[arg(
        long,
        env = "CREDITGATE_ADMIN_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Config file to take the admin address and token from (only read when --admin-url and --token are not both given). Default: $CREDITGATE_CONFIG, then /etc/creditgate/creditgate.toml, then ./config/creditgate.toml.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

const ACCOUNT_HELP: &str =
    "Account id: 1-64 characters of A-Z a-z 0-9 . _ - (not `.` or `..`), as the admin API requires";

#[derive(Subcommand)]
enum Action {
    /// Create an account or change its plan or suspension; prints the account with its balance.
    #[command(after_help = "Examples:\n  \
        creditgate account put site-42 --plan pro\n  \
        creditgate account put site-42 --suspended true")]
    Put {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
        /// Plan name from the config's [plans] (required to create; omitted: unchanged).
        #[arg(long, value_name = "PLAN")]
        plan: Option<String>,
        /// Suspend (true) or reinstate (false) the account; omitted: unchanged (false on create).
        #[arg(long, value_name = "true|false")]
        suspended: Option<bool>,
    },
    /// List accounts in ascending id order with their balances: {"items":[{account, plan, suspended, monthly_allowance, used, available}],"next":id|null}.
    #[command(after_help = "Examples:\n  \
        creditgate account list\n  \
        creditgate account list --limit 50 --after site-42\n  \
        creditgate account list --all | jq -r '.items[] | select(.available == 0) | .account'")]
    List {
        /// Accounts per page, 1-500 (default 100).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=500), value_name = "N")]
        limit: Option<u16>,
        /// Start after this account id: the `next` of the previous page.
        #[arg(long, value_parser = account_id, value_name = "ACCOUNT")]
        after: Option<String>,
        /// Follow `next` to the end and print every account as one list.
        #[arg(long, conflicts_with = "after")]
        all: bool,
    },
    /// Where an account's credits went: by route, by UTC day, and when they come back (as /v1/credits/usage).
    #[command(after_help = "Example:\n  creditgate account usage site-42")]
    Usage {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
    },
    /// Put accounts created before the account list existed into it (a scan of the ledger; prints {"indexed": N}).
    #[command(after_help = "Example:\n  creditgate account reindex")]
    Reindex,
    /// Show an account with its balance (as /v1/credits shows it, plus `suspended`).
    #[command(after_help = "Example:\n  creditgate account show site-42")]
    Show {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
    },
    /// Create an API key for the account; prints {"account","key_id","key"} (the key is shown only this once).
    #[command(after_help = "Example:\n  creditgate account key-add site-42")]
    KeyAdd {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
    },
    /// Revoke an API key; prints {"account","key_id","revoked":true}. Every instance rejects it within 2 s.
    #[command(
        after_help = "Example:\n  creditgate account key-revoke site-42 key_0123456789abcdef"
    )]
    KeyRevoke {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
        /// Key id, as key-add printed it (key_ and 16 hex digits).
        #[arg(value_parser = key_id, value_name = "KEY_ID")]
        key_id: String,
    },
    /// Show the account's debits, newest first: {"items":[…],"next":cursor|null}.
    #[command(after_help = "Examples:\n  \
        creditgate account history site-42 --limit 20\n  \
        creditgate account history site-42 --limit 20 --before <next from the previous page>")]
    History {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
        /// Items per page, 1-500 (default 50).
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=500), value_name = "N")]
        limit: Option<u16>,
        /// Continue after this cursor: the `next` of the previous page.
        #[arg(long, value_parser = cursor, value_name = "CURSOR")]
        before: Option<String>,
    },
    /// Refund one debit by its request id (X-Request-Id); prints the refund. Repeating it is harmless.
    #[command(after_help = "Example:\n  creditgate account refund site-42 3f2a9c0d4e5b6a71")]
    Refund {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
        /// The request id of the debit (the X-Request-Id of its response, or `request_id` in the history).
        #[arg(value_parser = request_id, value_name = "REQUEST_ID")]
        request_id: String,
    },
    /// Give the account a prepaid grant (a top-up, apart from the plan), spent after the allowance; prints the grant.
    #[command(after_help = "Examples:\n  \
        creditgate account grant site-42 --credits 500\n  \
        creditgate account grant site-42 --credits 500 --expires-at 2027-03-01T00:00:00Z --note 'top-up #123'")]
    Grant {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
        /// Credits granted, 1 to 10^15.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000_000), value_name = "N")]
        credits: u64,
        /// When what remains of it expires (RFC 3339); omitted: never.
        #[arg(long, value_parser = rfc3339, value_name = "RFC3339")]
        expires_at: Option<String>,
        /// A note for people (at most 200 characters), e.g. an invoice number.
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
    },
    /// List the account's grants in spending order: {"account","items":[{grant_id, credits, remaining, expires_at, created_at, note, status, voided_credits}]}.
    #[command(after_help = "Example:\n  creditgate account grants site-42")]
    Grants {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
    },
    /// Void what remains of a grant; prints {"account","grant_id","voided":true,"voided_credits"}.
    #[command(after_help = "Example:\n  creditgate account grant-void site-42 g3")]
    GrantVoid {
        #[arg(value_parser = account_id, value_name = "ACCOUNT", help = ACCOUNT_HELP)]
        account: String,
        /// Grant id, as `grant` or `grants` printed it (g and a number).
        #[arg(value_parser = grant_id, value_name = "GRANT_ID")]
        grant_id: String,
    },
}

fn rfc3339(text: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|_| text.to_owned())
        .map_err(|_| "expected an RFC 3339 time, e.g. 2027-03-01T00:00:00Z".to_owned())
}

fn grant_id(text: &str) -> Result<String, String> {
    match creditgate::ledger::grant_number(text) {
        Some(_) => Ok(text.to_owned()),
        None => Err("grant ids are `g` and a number, as `grant` printed them".to_owned()),
    }
}

fn account_id(text: &str) -> Result<String, String> {
    if creditgate::account_id::is_valid(text) {
        Ok(text.to_owned())
    } else {
        Err(creditgate::account_id::RULE.to_owned())
    }
}

/// Key ids are the gateway's own (`key_` + hex); this only refuses what
/// could never be one, and the rest is percent-encoded on the way out.
fn key_id(text: &str) -> Result<String, String> {
    let plausible = (1..=128).contains(&text.len())
        && text != "."
        && text != ".."
        && text.bytes().all(|b| b.is_ascii_graphic());
    if plausible {
        Ok(text.to_owned())
    } else {
        Err("key ids are what `key-add` printed (key_ and 16 hex digits)".to_owned())
    }
}

fn request_id(text: &str) -> Result<String, String> {
    if creditgate::request_id::is_acceptable(text.as_bytes()) {
        Ok(text.to_owned())
    } else {
        Err(
            "request ids are 1-128 characters of A-Z a-z 0-9 . _ : - (as in X-Request-Id)"
                .to_owned(),
        )
    }
}

fn cursor(text: &str) -> Result<String, String> {
    match creditgate::api::decode_cursor(text) {
        Some(_) => Ok(text.to_owned()),
        None => Err("not a cursor: pass the `next` of the previous history page".to_owned()),
    }
}

pub fn run(args: AccountArgs) -> Outcome {
    let call = call_for(&args.action);
    let api = AdminApi::resolve(args.admin_url, args.token, args.config.as_deref(), true)?;
    if let Action::List { all: true, .. } = &args.action {
        return super::print_json(&list_all(&api, call)?);
    }
    let answer = api.send(&call, CALL_TIMEOUT)?;
    if !answer.status.is_success() {
        return Err(refusal(&answer));
    }
    super::print_json(&success_json(&args.action, &answer))
}

/// Every page of the account list, as one list.
fn list_all(api: &AdminApi, mut call: Call) -> Result<Value, Failure> {
    let mut items = Vec::new();
    loop {
        let answer = api.send(&call, CALL_TIMEOUT)?;
        if !answer.status.is_success() {
            return Err(refusal(&answer));
        }
        let page: Value = serde_json::from_slice(&answer.body).map_err(|e| {
            Failure::new(Exit::Failed, format!("the account list is not JSON: {e}"))
        })?;
        if let Some(page_items) = page["items"].as_array() {
            items.extend(page_items.iter().cloned());
        }
        match page["next"].as_str() {
            Some(next) => {
                call.query.retain(|(name, _)| *name != "after");
                call.query.push(("after", next.to_owned()));
            }
            None => return Ok(json!({ "items": items, "next": null })),
        }
    }
}

fn accounts<'a>(account: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut segments = vec!["admin", "v1", "accounts", account];
    segments.extend_from_slice(rest);
    segments
}

fn call_for(action: &Action) -> Call {
    match action {
        Action::Put {
            account,
            plan,
            suspended,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(plan) = plan {
                body.insert("plan".into(), plan.clone().into());
            }
            if let Some(suspended) = suspended {
                body.insert("suspended".into(), (*suspended).into());
            }
            let mut call = Call::new(Method::PUT, &accounts(account, &[]));
            call.body = Some(Value::Object(body));
            call
        }
        Action::Show { account } => Call::new(Method::GET, &accounts(account, &[])),
        Action::List { limit, after, all } => {
            let mut call = Call::new(Method::GET, &["admin", "v1", "accounts"]);
            // Whole pages when following them all.
            let limit = limit.or(all.then_some(500));
            if let Some(limit) = limit {
                call.query.push(("limit", limit.to_string()));
            }
            if let Some(after) = after {
                call.query.push(("after", after.clone()));
            }
            call
        }
        Action::Usage { account } => Call::new(Method::GET, &accounts(account, &["usage"])),
        Action::Reindex => Call::new(Method::POST, &["admin", "v1", "reindex"]),
        Action::KeyAdd { account } => Call::new(Method::POST, &accounts(account, &["keys"])),
        Action::KeyRevoke { account, key_id } => {
            Call::new(Method::DELETE, &accounts(account, &["keys", key_id]))
        }
        Action::History {
            account,
            limit,
            before,
        } => {
            let mut call = Call::new(Method::GET, &accounts(account, &["history"]));
            if let Some(limit) = limit {
                call.query.push(("limit", limit.to_string()));
            }
            if let Some(before) = before {
                call.query.push(("before", before.clone()));
            }
            call
        }
        Action::Refund {
            account,
            request_id,
        } => {
            let mut call = Call::new(Method::POST, &accounts(account, &["refunds"]));
            call.body = Some(json!({ "request_id": request_id }));
            call
        }
        Action::Grant {
            account,
            credits,
            expires_at,
            note,
        } => {
            let mut body = serde_json::Map::new();
            body.insert("credits".into(), (*credits).into());
            if let Some(expires_at) = expires_at {
                body.insert("expires_at".into(), expires_at.clone().into());
            }
            if let Some(note) = note {
                body.insert("note".into(), note.clone().into());
            }
            let mut call = Call::new(Method::POST, &accounts(account, &["grants"]));
            call.body = Some(Value::Object(body));
            call
        }
        Action::Grants { account } => Call::new(Method::GET, &accounts(account, &["grants"])),
        Action::GrantVoid { account, grant_id } => {
            Call::new(Method::DELETE, &accounts(account, &["grants", grant_id]))
        }
    }
}

/// The API's JSON; for a revocation (204, no body) the CLI says what happened.
fn success_json(action: &Action, answer: &Answer) -> Value {
    if let Action::KeyRevoke { account, key_id } = action {
        return json!({ "account": account, "key_id": key_id, "revoked": true });
    }
    serde_json::from_slice(&answer.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer.body).into_owned()))
}

fn refusal(answer: &Answer) -> Failure {
    let body = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|json| serde_json::to_string_pretty(&json).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&answer.body).into_owned());
    let hint = match answer.status.as_u16() {
        401 => "\n(check --token / CREDITGATE_ADMIN_TOKEN against admin.token of the gateway)",
        403 => "\n(the gateway has no admin.token: its admin API is disabled)",
        _ => "",
    };
    Failure::new(
        Exit::Failed,
        format!("the admin API refused: {}\n{body}{hint}", answer.status),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_apis_rules() {
        for bad in ["tmp1#oops", "a?b", "bad id", ".", "..", "", "a/b"] {
            assert!(account_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(account_id("site-42").unwrap(), "site-42");
        for bad in ["", ".", "..", "a b", "key\n"] {
            assert!(key_id(bad).is_err(), "{bad:?}");
        }
        assert!(key_id("key_0123456789abcdef").is_ok());
        assert!(request_id("req:1.a_b-c").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(129)] {
            assert!(request_id(bad).is_err(), "{bad:?}");
        }
        assert!(cursor("zz").is_err());
        for bad in ["", "g", "g0", "g01", "x1", "g1/..", "g-1"] {
            assert!(grant_id(bad).is_err(), "{bad:?}");
        }
        assert!(grant_id("g17").is_ok());
        assert!(rfc3339("2027-03-01T00:00:00Z").is_ok());
        assert!(rfc3339("tomorrow").is_err());
    }

    #[test]
    fn every_action_names_its_resource_with_encoded_segments() {
        let revoke = call_for(&Action::KeyRevoke {
            account: "site-42".into(),
            key_id: "key/../x".into(),
        });
        assert_eq!(revoke.method, Method::DELETE);
        assert_eq!(
            revoke.target(),
            "/admin/v1/accounts/site-42/keys/key%2F..%2Fx"
        );
        let history = call_for(&Action::History {
            account: "a.b".into(),
            limit: Some(5),
            before: Some("6162".into()),
        });
        assert_eq!(
            history.target(),
            "/admin/v1/accounts/a.b/history?limit=5&before=6162"
        );
        let list = call_for(&Action::List {
            limit: Some(2),
            after: Some("a.b".into()),
            all: false,
        });
        assert_eq!(list.target(), "/admin/v1/accounts?limit=2&after=a.b");
        let all = call_for(&Action::List {
            limit: None,
            after: None,
            all: true,
        });
        assert_eq!(all.target(), "/admin/v1/accounts?limit=500");
        let usage = call_for(&Action::Usage {
            account: "site-42".into(),
        });
        assert_eq!(usage.target(), "/admin/v1/accounts/site-42/usage");
        assert_eq!(call_for(&Action::Reindex).method, Method::POST);
        let put = call_for(&Action::Put {
            account: "a".into(),
            plan: None,
            suspended: Some(true),
        });
        assert_eq!(put.body, Some(json!({"suspended": true})));
        let grant = call_for(&Action::Grant {
            account: "site-42".into(),
            credits: 500,
            expires_at: None,
            note: Some("top-up #1".into()),
        });
        assert_eq!(
            (grant.method.clone(), grant.target()),
            (Method::POST, "/admin/v1/accounts/site-42/grants".to_owned())
        );
        assert_eq!(
            grant.body,
            Some(json!({"credits": 500, "note": "top-up #1"}))
        );
        let void = call_for(&Action::GrantVoid {
            account: "site-42".into(),
            grant_id: "g3".into(),
        });
        assert_eq!(
            (void.method.clone(), void.target()),
            (
                Method::DELETE,
                "/admin/v1/accounts/site-42/grants/g3".to_owned()
            )
        );
    }
}
