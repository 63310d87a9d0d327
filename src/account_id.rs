//! The one rule for account ids, shared by the admin API, the CLI and the
//! ledger's key builder: 1–64 of `[A-Za-z0-9._-]`, and not `.` or `..`
//! (clients that normalise paths could never reach such an account).

pub const RULE: &str =
    "account ids are 1-64 characters of A-Z, a-z, 0-9, '.', '_' and '-', and not '.' or '..'";

pub fn is_valid(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_holds_at_its_edges() {
        for good in ["a", "site-42", "a.b_c-D", "...", ".a", &"x".repeat(64)] {
            assert!(is_valid(good), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "a#b",
            "a?b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }
}
