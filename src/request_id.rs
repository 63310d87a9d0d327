//! `X-Request-Id`: kept when the client sends a sane one, generated otherwise.

use http::{HeaderMap, HeaderValue};

const MAX_LEN: usize = 128;

/// The client's id when it is 1–128 of `[A-Za-z0-9._:-]`, else a new one.
pub fn from_headers(headers: &HeaderMap) -> HeaderValue {
    headers
        .get("x-request-id")
        .filter(|value| is_acceptable(value.as_bytes()))
        .cloned()
        .unwrap_or_else(generate)
}

/// Whether the client sent an `X-Request-Id` that [`from_headers`] keeps.
pub fn client_id_is_kept(headers: &HeaderMap) -> bool {
    headers
        .get("x-request-id")
        .is_some_and(|value| is_acceptable(value.as_bytes()))
}

pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// 64 random bits as 16 lower-case hex digits: unique enough to correlate
/// logs, and the Redis ledger packs ids of this form into 8 bytes of the
/// debit record (a reused one is still caught there, by the record itself).
pub fn generate() -> HeaderValue {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let bits = rand::random::<u64>();
    let mut id = [0u8; 16];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = DIGITS[((bits >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_and_others_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert("x-request-id", HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(from_headers(&headers), "abc-123_x.y:z");
        headers.insert("x-request-id", HeaderValue::from_static("has space"));
        assert_ne!(from_headers(&headers), "has space");
        headers.insert(
            "x-request-id",
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(from_headers(&headers).len(), 16);
        let generated = from_headers(&HeaderMap::new());
        assert_eq!(generated.len(), 16);
        assert!(generated
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)));
        assert_ne!(generate(), generate());
    }
}
