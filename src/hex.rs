//! Lower-case hexadecimal: the one encoder and decoder every module uses
//! (key digests, packed request ids, history cursors). A leaf module, so
//! nothing has to import a bigger one for it.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex digits.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    out
}

/// The bytes behind an even number of hex digits (either case); `None` for
/// anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Exactly `N` bytes, from `2 × N` hex digits.
pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    decode(text)?.try_into().ok()
}

/// The value of one hex digit (either case).
pub fn digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        let bytes = [0x00, 0x5a, 0xff, 0x10];
        assert_eq!(encode(&bytes), "005aff10");
        assert_eq!(decode("005aff10").as_deref(), Some(&bytes[..]));
        assert_eq!(decode("005AFF10").as_deref(), Some(&bytes[..]));
        assert_eq!(decode_array::<4>("005aff10"), Some(bytes));
        assert_eq!(decode_array::<3>("005aff10"), None);
        for junk in ["0", "zz", "0g", "é0"] {
            assert_eq!(decode(junk), None, "{junk}");
        }
        assert_eq!(decode(""), Some(vec![]));
    }
}
