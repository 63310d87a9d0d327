//! The credit headers on every response to an authenticated request on a
//! priced route: `X-Credits-*` and the IETF draft `RateLimit-Policy` /
//! `RateLimit` pair (draft-ietf-httpapi-ratelimit-headers).

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ledger::WindowState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditHeaders {
    pub limit: u64,
    pub remaining: u64,
    pub cost: u64,
    pub window_secs: u64,
    /// Whole seconds until the oldest counted debit leaves the window.
    pub reset_secs: u64,
}

impl CreditHeaders {
    /// `cost` is what this request is charged (or would have been, on a 429).
    pub fn new(window: &WindowState, cost: u64, window_secs: u64) -> CreditHeaders {
        CreditHeaders {
            limit: window.allowance,
            remaining: window.available(),
            cost,
            window_secs,
            reset_secs: window.next_release_in_ms.map_or(0, |ms| ms.div_ceil(1000)),
        }
    }

    /// The request's debit was refunded: it cost nothing after all.
    pub fn refunded(&mut self) {
        self.remaining = (self.remaining + self.cost).min(self.limit);
        self.cost = 0;
    }

    /// The reservation was settled at `cost`; `used` is the window's total
    /// after settlement when the ledger reported it.
    pub fn settled(&mut self, cost: u64, used: Option<u64>) {
        if let Some(used) = used {
            self.remaining = self.limit.saturating_sub(used);
        } else {
            self.remaining = (self.remaining + self.cost)
                .saturating_sub(cost)
                .min(self.limit);
        }
        self.cost = cost;
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        };
        set("x-credits-limit", self.limit.to_string());
        set("x-credits-remaining", self.remaining.to_string());
        set("x-credits-cost", self.cost.to_string());
        set(
            "ratelimit-policy",
            format!("\"credits\";q={};w={}", self.limit, self.window_secs),
        );
        set(
            "ratelimit",
            format!("\"credits\";r={};t={}", self.remaining, self.reset_secs),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_follow_the_draft_syntax() {
        let window = WindowState {
            plan: "pro".into(),
            allowance: 1000,
            used: 994,
            next_release_in_ms: Some(2_592_000_000 - 1),
        };
        let mut headers = HeaderMap::new();
        CreditHeaders::new(&window, 7, 2_592_000).apply(&mut headers);
        assert_eq!(headers["x-credits-limit"], "1000");
        assert_eq!(headers["x-credits-remaining"], "6");
        assert_eq!(headers["x-credits-cost"], "7");
        assert_eq!(headers["ratelimit-policy"], "\"credits\";q=1000;w=2592000");
        assert_eq!(headers["ratelimit"], "\"credits\";r=6;t=2592000");
    }
}
