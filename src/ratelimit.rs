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

    /// Sets the five headers. On every priced response, so values are built
    /// without the formatting machinery.
    /// Sets the five headers. Their values are written into one buffer and
    /// handed out as slices of it: one allocation for all five.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let mut buffer = Vec::with_capacity(128);
        let mut ends = [0usize; 5];
        push_decimal(&mut buffer, self.limit);
        ends[0] = buffer.len();
        push_decimal(&mut buffer, self.remaining);
        ends[1] = buffer.len();
        push_decimal(&mut buffer, self.cost);
        ends[2] = buffer.len();
        for (first, a, second, b, end) in [
            (&b"q="[..], self.limit, &b";w="[..], self.window_secs, 3),
            (&b"r="[..], self.remaining, &b";t="[..], self.reset_secs, 4),
        ] {
            buffer.extend_from_slice(b"\"credits\";");
            buffer.extend_from_slice(first);
            push_decimal(&mut buffer, a);
            buffer.extend_from_slice(second);
            push_decimal(&mut buffer, b);
            ends[end] = buffer.len();
        }
        let buffer = bytes::Bytes::from(buffer);
        let names = [
            "x-credits-limit",
            "x-credits-remaining",
            "x-credits-cost",
            "ratelimit-policy",
            "ratelimit",
        ];
        let mut start = 0;
        for (name, end) in names.into_iter().zip(ends) {
            let value = HeaderValue::from_maybe_shared(buffer.slice(start..end))
                .expect("digits and punctuation are a valid header value");
            headers.insert(HeaderName::from_static(name), value);
            start = end;
        }
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
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
        let mut extreme = Vec::new();
        push_decimal(&mut extreme, u64::MAX);
        push_decimal(&mut extreme, 0);
        assert_eq!(extreme, format!("{}0", u64::MAX).as_bytes());
    }
}
