//! Where the config file is found: `--config`, else `$CREDITGATE_CONFIG`,
//! else `/etc/creditgate/creditgate.toml`, else `./config/creditgate.toml`
//! (relative to the working directory). A file named explicitly (flag or
//! variable) must exist: it is never silently replaced by a default.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use creditgate::config::Config;

use super::exit::{Exit, Failure};

pub const ENV_VAR: &str = "CREDITGATE_CONFIG";
pub const SYSTEM_PATH: &str = "/etc/creditgate/creditgate.toml";
pub const LOCAL_PATH: &str = "config/creditgate.toml";

/// How the file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    System,
    Local,
}

impl Origin {
    pub fn describe(self) -> &'static str {
        match self {
            Origin::Flag => "--config",
            Origin::Env => ENV_VAR,
            Origin::System => SYSTEM_PATH,
            Origin::Local => "./config/creditgate.toml",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: PathBuf,
    pub origin: Origin,
}

/// Finds the config file for this process.
pub fn locate(flag: Option<&Path>) -> Result<Located, Failure> {
    locate_with(flag, std::env::var_os(ENV_VAR), &|path| path.is_file())
}

/// Finds and loads it; every error of an invalid file at once.
pub fn load(flag: Option<&Path>) -> Result<(Config, Located), Failure> {
    let located = locate(flag)?;
    let config = Config::load(&located.path).map_err(|error| {
        Failure::new(
            Exit::Usage,
            format!(
                "the config file is invalid ({} error(s)):\n{error}",
                error.issues.len()
            ),
        )
    })?;
    Ok((config, located))
}

fn locate_with(
    flag: Option<&Path>,
    env: Option<OsString>,
    is_file: &dyn Fn(&Path) -> bool,
) -> Result<Located, Failure> {
    let named = match (flag, env.filter(|value| !value.is_empty())) {
        (Some(path), _) => Some((path.to_path_buf(), Origin::Flag)),
        (None, Some(value)) => Some((PathBuf::from(value), Origin::Env)),
        (None, None) => None,
    };
    if let Some((path, origin)) = named {
        if is_file(&path) {
            return Ok(Located { path, origin });
        }
        return Err(Failure::new(
            Exit::NoConfig,
            format!(
                "config file {} (from {}) does not exist or is not a file",
                path.display(),
                origin.describe()
            ),
        ));
    }
    for (path, origin) in [(SYSTEM_PATH, Origin::System), (LOCAL_PATH, Origin::Local)] {
        let path = Path::new(path);
        if is_file(path) {
            return Ok(Located {
                path: path.to_path_buf(),
                origin,
            });
        }
    }
    let here = std::env::current_dir()
        .map(|dir| dir.display().to_string())
        .unwrap_or_else(|_| "the working directory".to_owned());
    Err(Failure::new(
        Exit::NoConfig,
        format!(
            "no config file found: not given with --config or {ENV_VAR}, and neither \
             {SYSTEM_PATH} nor ./{LOCAL_PATH} (in {here}) exists.\n\
             Pass --config FILE, set {ENV_VAR}, or try `creditgate serve --dev`."
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(
        flag: Option<&str>,
        env: Option<&str>,
        existing: &[&str],
    ) -> Result<(String, Origin), Exit> {
        let existing: Vec<PathBuf> = existing.iter().map(PathBuf::from).collect();
        locate_with(flag.map(Path::new), env.map(OsString::from), &|path| {
            existing.iter().any(|e| e == path)
        })
        .map(|located| (located.path.display().to_string(), located.origin))
        .map_err(|failure| failure.exit)
    }

    #[test]
    fn the_flag_then_the_variable_then_etc_then_the_working_directory() {
        let all = ["flag.toml", "env.toml", SYSTEM_PATH, LOCAL_PATH];
        assert_eq!(
            found(Some("flag.toml"), Some("env.toml"), &all),
            Ok(("flag.toml".into(), Origin::Flag))
        );
        assert_eq!(
            found(None, Some("env.toml"), &all),
            Ok(("env.toml".into(), Origin::Env))
        );
        assert_eq!(
            found(None, None, &all),
            Ok((SYSTEM_PATH.into(), Origin::System))
        );
        assert_eq!(
            found(None, None, &[LOCAL_PATH]),
            Ok((LOCAL_PATH.into(), Origin::Local))
        );
        // An empty variable counts as unset.
        assert_eq!(
            found(None, Some(""), &[LOCAL_PATH]),
            Ok((LOCAL_PATH.into(), Origin::Local))
        );
    }

    #[test]
    fn a_named_file_that_is_missing_is_an_error_not_a_fallback() {
        let defaults = [SYSTEM_PATH, LOCAL_PATH];
        assert_eq!(
            found(Some("gone.toml"), None, &defaults),
            Err(Exit::NoConfig)
        );
        assert_eq!(
            found(None, Some("gone.toml"), &defaults),
            Err(Exit::NoConfig)
        );
    }

    #[test]
    fn nothing_anywhere_says_where_it_looked() {
        let failure = locate_with(None, None, &|_| false).unwrap_err();
        assert_eq!(failure.exit, Exit::NoConfig);
        for place in ["--config", ENV_VAR, SYSTEM_PATH, LOCAL_PATH, "serve --dev"] {
            assert!(failure.message.contains(place), "{}", failure.message);
        }
    }
}
