//! Reading the units of work an upstream reports (the route's `settle`
//! source): a response header, a JSON body, or the `data:` JSON of each
//! event of a `text/event-stream`.

use serde_json::Value;

/// A figure worth settling on: a finite, non-negative number.
fn usable(value: &Value) -> Option<f64> {
    value.as_f64().filter(|n| n.is_finite() && *n >= 0.0)
}

/// The figure in a response header.
pub fn reported_in_header(headers: &http::HeaderMap, name: &str) -> Option<f64> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<f64>().ok())
        .filter(|n| n.is_finite() && *n >= 0.0)
}

/// The figure at `pointer` in a JSON document.
pub fn reported_in_json(bytes: &[u8], pointer: &str) -> Option<f64> {
    let document: Value = serde_json::from_slice(bytes).ok()?;
    usable(document.pointer(pointer)?)
}

/// Whether a response is an event stream (settled as it streams by).
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim_start().starts_with("text/event-stream"))
}

/// Finds the usage figure in a `text/event-stream` as it streams by: each
/// event's `data:` line is tried as JSON; the last figure found wins.
#[derive(Debug)]
pub struct SseScanner {
    pointer: String,
    line: Vec<u8>,
    last: Option<f64>,
}

/// Longer lines cannot be usage events worth reading; they are skipped
/// rather than buffered without bound.
const MAX_LINE: usize = 1 << 20;

impl SseScanner {
    pub fn new(pointer: &str) -> SseScanner {
        SseScanner {
            pointer: pointer.to_owned(),
            line: Vec::new(),
            last: None,
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            if self.line.len() + end <= MAX_LINE {
                self.line.extend_from_slice(&chunk[..end]);
                self.finish_line();
            }
            self.line.clear();
            chunk = &chunk[end + 1..];
        }
        if self.line.len() + chunk.len() <= MAX_LINE {
            self.line.extend_from_slice(chunk);
        } else {
            self.line.clear();
        }
    }

    /// The last figure seen in a complete line.
    pub fn last(&self) -> Option<f64> {
        self.last
    }

    /// The stream ended: a last line without a newline still counts.
    pub fn finish(&mut self) -> Option<f64> {
        if !self.line.is_empty() {
            self.finish_line();
            self.line.clear();
        }
        self.last
    }

    fn finish_line(&mut self) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if let Some(found) = reported_in_json(data.trim_ascii(), &self.pointer) {
            self.last = Some(found);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_usage_is_found_across_chunk_boundaries_and_the_last_wins() {
        let mut scanner = SseScanner::new("/usage/total_tokens");
        let stream = "data: {\"choices\":[]}\n\ndata: {\"usage\":{\"total_tokens\":10}}\n\ndata: {\"usage\":{\"total_\
                      tokens\":1234}}\r\n\r\ndata: [DONE]\n\n";
        for chunk in stream.as_bytes().chunks(7) {
            scanner.feed(chunk);
        }
        assert_eq!(scanner.finish(), Some(1234.0));
        let mut unterminated = SseScanner::new("/u");
        unterminated.feed(b"data: {\"u\": 5}");
        assert_eq!(unterminated.last(), None, "a line is only read whole");
        assert_eq!(unterminated.finish(), Some(5.0));
    }

    #[test]
    fn figures_must_be_finite_non_negative_numbers() {
        assert_eq!(reported_in_json(br#"{"u":{"t":12}}"#, "/u/t"), Some(12.0));
        assert_eq!(reported_in_json(br#"{"u":{"t":-1}}"#, "/u/t"), None);
        assert_eq!(reported_in_json(br#"{"u":{"t":"12"}}"#, "/u/t"), None);
        assert_eq!(reported_in_json(b"not json", "/u/t"), None);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-usage", http::HeaderValue::from_static(" 2500 "));
        assert_eq!(reported_in_header(&headers, "x-usage"), Some(2500.0));
        headers.insert("x-usage", http::HeaderValue::from_static("NaN"));
        assert_eq!(reported_in_header(&headers, "x-usage"), None);
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        assert!(is_event_stream(&headers));
    }
}
