//! The credit headers on every response to an authenticated request on a
//! priced route: `X-Credits-*` and the IETF draft `RateLimit-Policy` /
//! `RateLimit` pair (draft-ietf-httpapi-ratelimit-headers).

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ledger::WindowState;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditHeaders {
    pub limit: u64,
    /// What the 30-day window leaves, with the live grants added.
    pub remaining: u64,
    pub cost: u64,
    pub window_secs: u64,
    /// Whole seconds until the oldest counted debit leaves the window.
    pub reset_secs: u64,
    /// The most `remaining` can come back to: the allowance plus the grants.
    ceiling: u64,
    /// Grants held credits when the debit ran: a settlement's `used` alone
    /// no longer says what remains.
    with_grants: bool,
    /// The plan's extra windows (empty for most plans: no allocation).
    pub limits: Vec<LimitHeaders>,
}

/// One extra window's `RateLimit` entry (`"credits-1d"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitHeaders {
    pub name: String,
    pub credits: u64,
    pub remaining: u64,
    pub window_secs: u64,
    pub reset_secs: u64,
}

impl CreditHeaders {
    /// `cost` is what this request is charged (or would have been, on a 429).
    pub fn new(window: &WindowState, cost: u64, window_secs: u64) -> CreditHeaders {
        CreditHeaders {
            limit: window.allowance,
            remaining: window.allowance.saturating_sub(window.used) + window.grants,
            cost,
            window_secs,
            reset_secs: window.next_release_in_ms.map_or(0, |ms| ms.div_ceil(1000)),
            ceiling: window.allowance + window.grants,
            with_grants: window.grants > 0,
            limits: window
                .limits
                .iter()
                .map(|limit| LimitHeaders {
                    name: limit.name.clone(),
                    credits: limit.credits,
                    remaining: limit.available(),
                    window_secs: limit.window_ms.div_ceil(1000),
                    reset_secs: limit.next_release_in_ms.map_or(0, |ms| ms.div_ceil(1000)),
                })
                .collect(),
        }
    }

    /// `X-Credits-Remaining`: what the next request could spend, the least
    /// any window leaves.
    pub fn available(&self) -> u64 {
        self.limits
            .iter()
            .fold(self.remaining, |least, limit| least.min(limit.remaining))
    }

    /// The request's debit was refunded: it cost nothing after all.
    pub fn refunded(&mut self) {
        self.remaining = (self.remaining + self.cost).min(self.ceiling);
        for limit in &mut self.limits {
            limit.remaining = (limit.remaining + self.cost).min(limit.credits);
        }
        self.cost = 0;
    }

    /// The reservation was settled at `cost`; `used` is the window's total
    /// after settlement when the ledger reported it.
    pub fn settled(&mut self, cost: u64, used: Option<u64>) {
        match used {
            Some(used) if !self.with_grants => self.remaining = self.limit.saturating_sub(used),
            _ => {
                self.remaining = (self.remaining + self.cost)
                    .saturating_sub(cost)
                    .min(self.ceiling)
            }
        }
        for limit in &mut self.limits {
            limit.remaining = (limit.remaining + self.cost)
                .saturating_sub(cost)
                .min(limit.credits);
        }
        self.cost = cost;
    }

    /// Sets the five headers. On every priced response, so values are built
    /// without the formatting machinery: written into one buffer and handed
    /// out as slices of it, one allocation for all five.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let mut buffer = Vec::with_capacity(128 + 64 * self.limits.len());
        let mut ends = [0usize; 5];
        push_decimal(&mut buffer, self.limit);
        ends[0] = buffer.len();
        push_decimal(&mut buffer, self.available());
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
            for limit in &self.limits {
                let (a, b) = if end == 3 {
                    (limit.credits, limit.window_secs)
                } else {
                    (limit.remaining, limit.reset_secs)
                };
                buffer.extend_from_slice(b", \"credits-");
                buffer.extend_from_slice(limit.name.as_bytes());
                buffer.extend_from_slice(b"\";");
                buffer.extend_from_slice(first);
                push_decimal(&mut buffer, a);
                buffer.extend_from_slice(second);
                push_decimal(&mut buffer, b);
            }
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
                .expect("digits, punctuation and config window names are a valid header value");
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
            grants: 0,
            limits: vec![],
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

    #[test]
    fn every_extra_window_gets_an_entry_and_the_least_remaining_wins() {
        let window = WindowState {
            plan: "pro".into(),
            allowance: 10_000,
            used: 9_990,
            next_release_in_ms: Some(1_000),
            grants: 500,
            limits: vec![
                crate::ledger::LimitUse {
                    name: "1d".into(),
                    window_ms: 86_400_000,
                    credits: 1_500,
                    used: 1_200,
                    next_release_in_ms: Some(3_600_000),
                },
                crate::ledger::LimitUse {
                    name: "1h".into(),
                    window_ms: 3_600_000,
                    credits: 300,
                    used: 290,
                    next_release_in_ms: Some(1_500),
                },
            ],
        };
        let mut credit = CreditHeaders::new(&window, 5, 2_592_000);
        let mut headers = HeaderMap::new();
        credit.apply(&mut headers);
        assert_eq!(headers["x-credits-limit"], "10000");
        // 30-day share 10 + grants 500 = 510; the hour leaves 10.
        assert_eq!(headers["x-credits-remaining"], "10");
        assert_eq!(
            headers["ratelimit-policy"],
            "\"credits\";q=10000;w=2592000, \"credits-1d\";q=1500;w=86400, \"credits-1h\";q=300;w=3600"
        );
        assert_eq!(
            headers["ratelimit"],
            "\"credits\";r=510;t=1, \"credits-1d\";r=300;t=3600, \"credits-1h\";r=10;t=2"
        );
        // A refund gives the cost back to every window, above the allowance
        // when grants paid (never above allowance + grants).
        credit.refunded();
        assert_eq!(
            (
                credit.remaining,
                credit.limits[1].remaining,
                credit.available()
            ),
            (515, 15, 15)
        );
        // Settled below the reservation: 3 of the 5 come back everywhere.
        let mut credit = CreditHeaders::new(&window, 5, 2_592_000);
        credit.settled(2, Some(9_992));
        assert_eq!((credit.remaining, credit.limits[1].remaining), (513, 13));
    }
}
