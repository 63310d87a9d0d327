//! What `creditgate serve --dev` prints on stdout once it is ready: where it
//! listens, the operator console's address, the admin token, the demo key,
//! and three requests to paste into a shell (one command per line, values
//! single-quoted).

use std::fmt::Write as _;

use super::DevGateway;

/// `{"n": 2}` at 4 credits per image.
const IMAGE_BODY: &str = r#"{"n":2,"prompt":"a lighthouse at dusk"}"#;
/// 4000 tokens reserve 4 credits; the demo vendor reports about half of
/// `max_tokens` (plus the prompt), which settles at 3.
const AGENTS_BODY: &str = r#"{"max_tokens":4000,"stream":true,"messages":[{"role":"user","content":"write a haiku about credits"}]}"#;

/// One request to try: what it shows, and the command.
pub struct TryIt {
    pub comment: &'static str,
    pub command: String,
}

/// The three requests, in the order they make sense.
pub fn requests(dev: &DevGateway) -> [TryIt; 3] {
    let base = format!("http://{}", dev.running.data_addr);
    let auth = quote(&format!("Authorization: Bearer {}", dev.key));
    let json = quote("Content-Type: application/json");
    [
        TryIt {
            comment: "An image request, priced per image: {\"n\":2} costs 2 x 4 = 8 credits (see the X-Credits-* headers).",
            command: format!(
                "curl -si -X POST {base}/v1/images/generate -H {auth} -H {json} -d {}",
                quote(IMAGE_BODY)
            ),
        },
        TryIt {
            comment: "A streaming agents request: 4 credits reserved for max_tokens 4000, settled at 3 from the usage in the stream's last event.",
            command: format!(
                "curl -siN -X POST {base}/v1/agents/chat -H {auth} -H {json} -d {}",
                quote(AGENTS_BODY)
            ),
        },
        TryIt {
            comment: "The account's balance: after the two above, used 11 of 100.",
            command: format!("curl -s {base}/v1/credits -H {auth}"),
        },
    ]
}

pub fn render(dev: &DevGateway) -> String {
    let running = &dev.running;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n==> creditgate is running in DEV MODE\n\
         \x20   Memory ledger: every account, key and debit is forgotten when it stops.\n\
         \x20   Loopback only. Never use dev mode in production.\n"
    );
    let _ = writeln!(out, "    data plane:   http://{}", running.data_addr);
    let _ = writeln!(
        out,
        "    admin plane:  http://{}  (/healthz, /readyz, /metrics, /admin/v1/*)",
        running.admin_addr
    );
    let _ = writeln!(
        out,
        "    console:      {}  (open it in a browser)",
        console_url(dev)
    );
    let _ = writeln!(
        out,
        "    demo vendor:  {}  (echoes requests; reports token usage under /v1/agents/)\n",
        dev.vendor.url()
    );
    let _ = writeln!(
        out,
        "    admin token:  {}  (new every run)",
        dev.admin_token
    );
    let _ = writeln!(
        out,
        "    account:      {}  (plan {}: {} credits per 30 days)",
        dev.account, dev.plan, dev.allowance
    );
    let _ = writeln!(
        out,
        "    API key:      {}  (key id {})\n",
        dev.key, dev.key_id
    );
    let _ = writeln!(out, "==> Try it (one command per line):\n");
    for (n, request) in requests(dev).iter().enumerate() {
        let _ = writeln!(
            out,
            "# {}. {}\n{}\n",
            n + 1,
            request.comment,
            request.command
        );
    }
    let _ = writeln!(
        out,
        "==> The operator CLI against this gateway (install it with `cargo install --path .`):\n\n\
         export CREDITGATE_ADMIN_URL=http://{} CREDITGATE_ADMIN_TOKEN={}\n\
         creditgate account show {}\n",
        running.admin_addr, dev.admin_token, dev.account
    );
    let _ = writeln!(out, "Press Ctrl-C to stop.");
    out
}

/// The operator console, opened on the demo account; the token rides in the
/// fragment, which the browser never sends (the page keeps it for the tab).
pub fn console_url(dev: &DevGateway) -> String {
    format!(
        "http://{}/admin/#token={}&account={}",
        dev.running.admin_addr, dev.admin_token, dev.account
    )
}

/// Single-quotes `text` for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }

    #[tokio::test]
    async fn the_banner_names_the_real_addresses_token_and_key() {
        let dev = super::super::start(super::super::DevOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
        })
        .await
        .unwrap();
        let text = render(&dev);
        let data = format!("http://{}", dev.running.data_addr);
        for expected in [
            format!("data plane:   {data}"),
            format!("admin plane:  http://{}", dev.running.admin_addr),
            format!("admin token:  {}", dev.admin_token),
            format!("API key:      {}", dev.key),
            format!(
                "curl -s {data}/v1/credits -H 'Authorization: Bearer {}'",
                dev.key
            ),
            format!("CREDITGATE_ADMIN_TOKEN={}", dev.admin_token),
            format!(
                "console:      http://{}/admin/#token={}&account=demo",
                dev.running.admin_addr, dev.admin_token
            ),
        ] {
            assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(text.lines().filter(|l| l.starts_with("curl ")).count(), 3);
        dev.shutdown().await;
    }
}
