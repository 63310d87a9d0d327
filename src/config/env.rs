//! `${VAR}` in string values, replaced from the environment at load time
//! (docs/configuration.md, "Environment variables"). A variable that is not
//! set is an error, never an empty string: a missing secret must not turn
//! into an empty credential.

/// Looks up one environment variable (the process environment, or a test's table).
pub(super) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Replaces `${NAME}` with the environment's value.
pub(super) fn substitute(raw: &str, env: Env<'_>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated `${` in value".to_owned())?;
        let name = &after[..end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "invalid environment variable name `{name}` in `${{…}}`"
            ));
        }
        let value = env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::substitute;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "s3cret".to_owned())
    }

    #[test]
    fn variables_are_replaced_and_missing_ones_named() {
        assert_eq!(substitute("Bearer ${KEY}", &env).unwrap(), "Bearer s3cret");
        assert_eq!(substitute("${KEY}${KEY}", &env).unwrap(), "s3crets3cret");
        assert_eq!(substitute("no variables", &env).unwrap(), "no variables");
        assert_eq!(
            substitute("${MISSING}", &env).unwrap_err(),
            "environment variable MISSING is not set"
        );
        assert!(substitute("${KEY", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(substitute("${1X}", &env).unwrap_err().contains("invalid"));
    }
}
