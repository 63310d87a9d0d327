//! Admin input that means different things to different readers is
//! refused with a 400 `bad_request`, and changes nothing: JSON bodies that
//! repeat a key (at any depth) or carry a member the call does not know,
//! and the account ids `.` and `..` (which a client that normalises paths
//! could never reach again).

use bytes::Bytes;
use http_body_util::Full;

use crate::proxy::assert_problem;
use crate::support::gateway::{Setup, TestGateway, ADMIN_TOKEN};
use crate::support::http::Response;
use crate::support::upstream::RecordingUpstream;

fn admin_auth() -> String {
    format!("Bearer {ADMIN_TOKEN}")
}

async fn gateway() -> (RecordingUpstream, TestGateway) {
    let upstream = RecordingUpstream::start().await;
    let gateway = TestGateway::start(&Setup::new(&upstream.url())).await;
    (upstream, gateway)
}

/// Sends an admin call with a raw body (no re-serialisation that could
/// merge repeated keys).
async fn admin(gateway: &TestGateway, method: &str, path: &str, body: &str) -> Response {
    let request = http::Request::builder()
        .method(method)
        .uri(gateway.admin_url(path))
        .header("authorization", admin_auth())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    gateway.client.send(request).await
}

fn assert_bad_request_naming(response: &Response, needle: &str) {
    assert_problem(response, 400, "bad_request");
    let detail = response.json()["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains(needle),
        "detail `{detail}` does not name {needle}"
    );
}

async fn account_exists(gateway: &TestGateway, id: &str) -> bool {
    gateway
        .running()
        .gateway
        .ledger
        .get_account(id)
        .await
        .expect("ledger")
        .is_some()
}

#[tokio::test]
async fn a_repeated_key_in_an_account_body_is_refused_and_creates_nothing() {
    let (_upstream, gateway) = gateway().await;
    let response = admin(
        &gateway,
        "PUT",
        "/admin/v1/accounts/site-1",
        r#"{"plan":"free","plan":"pro"}"#,
    )
    .await;
    assert_bad_request_naming(&response, "`plan`");
    assert!(!account_exists(&gateway, "site-1").await);
}

#[tokio::test]
async fn a_repeated_key_in_an_account_update_leaves_the_account_unchanged() {
    let (_upstream, gateway) = gateway().await;
    assert_eq!(
        gateway.admin_put_account("site-1", "free").await.status,
        201
    );
    let response = admin(
        &gateway,
        "PUT",
        "/admin/v1/accounts/site-1",
        r#"{"suspended":true,"suspended":false}"#,
    )
    .await;
    assert_bad_request_naming(&response, "`suspended`");
    let account = gateway.admin_get("/admin/v1/accounts/site-1").await.json();
    assert_eq!(account["suspended"], false);
    assert_eq!(account["plan"], "free");
}

#[tokio::test]
async fn a_repeated_key_spelled_with_an_escape_is_still_repeated() {
    let (_upstream, gateway) = gateway().await;
    let response = admin(
        &gateway,
        "PUT",
        "/admin/v1/accounts/site-1",
        r#"{"plan":"free","pl\u0061n":"pro"}"#,
    )
    .await;
    assert_bad_request_naming(&response, "`plan`");
    assert!(!account_exists(&gateway, "site-1").await);
}

#[tokio::test]
async fn a_repeated_key_in_a_nested_object_is_refused_with_its_place() {
    let (_upstream, gateway) = gateway().await;
    let response = admin(
        &gateway,
        "PUT",
        "/admin/v1/accounts/site-1",
        r#"{"plan":"pro","meta":[{"a":1},{"a":1,"a":2}]}"#,
    )
    .await;
    // Refused as ambiguous before anything else is read from it.
    assert_bad_request_naming(&response, "duplicate key `a` in the object at `/meta/1`");
    assert!(!account_exists(&gateway, "site-1").await);
}

#[tokio::test]
async fn a_repeated_key_in_a_refund_body_refunds_nothing() {
    let (_upstream, gateway) = gateway().await;
    let key = gateway.account_with_key("site-1", "pro").await;
    for request_id in ["req-a", "req-b"] {
        let paid = gateway
            .client
            .post(
                &gateway.url("/v1/paid"),
                &[
                    ("authorization", &format!("Bearer {key}")),
                    ("x-request-id", request_id),
                ],
                "x",
            )
            .await;
        assert_eq!(paid.status, 200, "{}", paid.text());
    }
    assert_eq!(gateway.used("site-1").await, 14);
    let response = admin(
        &gateway,
        "POST",
        "/admin/v1/accounts/site-1/refunds",
        r#"{"request_id":"req-a","request_id":"req-b"}"#,
    )
    .await;
    assert_bad_request_naming(&response, "`request_id`");
    assert_eq!(gateway.used("site-1").await, 14, "nothing was refunded");
    let history = gateway
        .admin_get("/admin/v1/accounts/site-1/history")
        .await
        .json();
    let items = history["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(
        items.iter().all(|item| item["refunded"] == false),
        "{history}"
    );
}

/// A refund body is closed like an account body: a member the call does
/// not know (a client that thinks it can refund part of a debit, say) is a
/// 400 naming it, and nothing is refunded; so is a body that is not an
/// object.
#[tokio::test]
async fn an_unknown_member_in_a_refund_body_refunds_nothing() {
    let (_upstream, gateway) = gateway().await;
    let key = gateway.account_with_key("site-1", "pro").await;
    let paid = gateway
        .client
        .post(
            &gateway.url("/v1/paid"),
            &[
                ("authorization", &format!("Bearer {key}")),
                ("x-request-id", "req-a"),
            ],
            "x",
        )
        .await;
    assert_eq!(paid.status, 200, "{}", paid.text());
    let refunds = "/admin/v1/accounts/site-1/refunds";
    let response = admin(
        &gateway,
        "POST",
        refunds,
        r#"{"request_id":"req-a","credits":3}"#,
    )
    .await;
    assert_bad_request_naming(&response, "`credits`");
    let response = admin(&gateway, "POST", refunds, r#"["req-a"]"#).await;
    assert_bad_request_naming(&response, "JSON object");
    assert_eq!(gateway.used("site-1").await, 7, "nothing was refunded");
    // The same request id alone is refunded.
    let response = admin(&gateway, "POST", refunds, r#"{"request_id":"req-a"}"#).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(gateway.used("site-1").await, 0);
}

/// Every admin call that names an account refuses `.` and `..` with a 400.
async fn dot_ids_are_refused(method: &str, path_after_id: &str, body: &str) {
    let (_upstream, gateway) = gateway().await;
    for id in [".", ".."] {
        let path = format!("/admin/v1/accounts/{id}{path_after_id}");
        let response = admin(&gateway, method, &path, body).await;
        assert_bad_request_naming(&response, "not '.' or '..'");
        assert!(
            !account_exists(&gateway, id).await,
            "{method} {path} created {id}"
        );
    }
}

#[tokio::test]
async fn dot_ids_cannot_be_created() {
    dot_ids_are_refused("PUT", "", r#"{"plan":"pro"}"#).await;
}

#[tokio::test]
async fn dot_ids_cannot_be_read() {
    dot_ids_are_refused("GET", "", "").await;
}

#[tokio::test]
async fn dot_ids_cannot_get_keys() {
    dot_ids_are_refused("POST", "/keys", "").await;
}

#[tokio::test]
async fn dot_ids_cannot_revoke_keys() {
    dot_ids_are_refused("DELETE", "/keys/k1", "").await;
}

#[tokio::test]
async fn dot_ids_have_no_history() {
    dot_ids_are_refused("GET", "/history", "").await;
}

#[tokio::test]
async fn dot_ids_cannot_be_refunded() {
    dot_ids_are_refused("POST", "/refunds", r#"{"request_id":"r"}"#).await;
}
