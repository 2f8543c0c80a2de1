//! The bearer tokens of the TCP listener, read from their files at start (and by
//! `lbd --check`): the operator's (`api.token_file`) and the registration tokens
//! (`api.registration_tokens`). A token file must be a regular file that only its owner
//! can read or write: a token others can read is no secret, so such a file is refused,
//! with its mode, rather than used.
use std::{
    fs,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
};

use anyhow::{bail, Context as _};

use super::scope::TokenScope;
use crate::model::config::ApiConfig;

/// Shorter tokens are refused: they could be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// Every token the listener accepts, with what it may do.
#[derive(Debug, Clone)]
pub struct Tokens {
    entries: Vec<(String, TokenScope)>,
}

impl Tokens {
    /// Reads every token file of `api`; the first fault found, naming its key and file.
    pub fn read(api: &ApiConfig) -> anyhow::Result<Tokens> {
        let mut entries = Vec::new();
        if let Some(path) = &api.token_file {
            entries.push((read_token("api.token_file", path)?, TokenScope::Operator));
        }
        for (i, token) in api.registration_tokens.iter().enumerate() {
            let key = format!("api.registration_tokens[{i}].file");
            let text = read_token(&key, &token.file)?;
            if let Some((_, scope)) = entries.iter().find(|(t, _)| *t == text) {
                bail!(
                    "{key} {}: the same token as another file's ({}): each token must be its own",
                    token.file.display(),
                    match scope {
                        TokenScope::Operator => "api.token_file",
                        TokenScope::Registration { .. } => "a registration token",
                    }
                );
            }
            let services = token.services.iter().cloned().collect();
            entries.push((text, TokenScope::Registration { services }));
        }
        Ok(Tokens { entries })
    }

    /// Tokens given directly, for tests.
    #[cfg(test)]
    pub fn from_entries(entries: Vec<(String, TokenScope)>) -> Tokens {
        Tokens { entries }
    }

    /// The scope of the token `given`, compared in constant time against each (so that
    /// response times do not reveal how much of a guess was right).
    pub fn scope_of(&self, given: &str) -> Option<&TokenScope> {
        let mut found = None;
        for (token, scope) in &self.entries {
            if constant_time_eq(given.as_bytes(), token.as_bytes()) {
                found = Some(scope);
            }
        }
        found
    }
}

/// Reads one token (surrounding whitespace ignored) from `path`, the value of `key`.
pub fn read_token(key: &str, path: &Path) -> anyhow::Result<String> {
    let meta = fs::metadata(path).with_context(|| format!("reading {key} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{key} {} is not a regular file", path.display());
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "{key} {} can be read or written by users other than its owner (uid {}, mode \
             {mode:04o}): a token file must be the owner's alone; chmod 600 it",
            path.display(),
            meta.uid()
        );
    }
    let text =
        fs::read_to_string(path).with_context(|| format!("reading {key} {}", path.display()))?;
    let token = crate::model::config::token_in(&text)
        .map_err(|why| anyhow::anyhow!("{key} {} {why}", path.display()))?
        .to_string();
    if token.len() < MIN_TOKEN_LEN {
        bail!(
            "{key} {}: the token must be at least {MIN_TOKEN_LEN} characters",
            path.display()
        );
    }
    Ok(token)
}

/// Compares without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::model::config::RegistrationToken;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokex"));
        assert!(!constant_time_eq(b"secret", b"secret-token"));
    }

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("lbd-tokens-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn write(dir: &Dir, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = dir.0.join(name);
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn api(operator: PathBuf, registration: Vec<(PathBuf, &[&str])>) -> ApiConfig {
        ApiConfig {
            token_file: Some(operator),
            registration_tokens: registration
                .into_iter()
                .map(|(file, services)| RegistrationToken {
                    file,
                    services: services.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
            ..ApiConfig::default()
        }
    }

    #[test]
    fn each_token_gets_its_scope() {
        let d = dir("scopes");
        let operator = write(&d, "op", "operator-token-0123456789\n", 0o600);
        let web = write(&d, "web", "  web-registration-token-01\n", 0o400);
        let tokens = Tokens::read(&api(operator, vec![(web, &["web"])])).unwrap();
        assert_eq!(
            tokens.scope_of("operator-token-0123456789"),
            Some(&TokenScope::Operator)
        );
        assert_eq!(
            tokens.scope_of("web-registration-token-01"),
            Some(&TokenScope::Registration {
                services: ["web".to_string()].into()
            })
        );
        assert_eq!(tokens.scope_of("web-registration-token-0"), None);
        assert_eq!(tokens.scope_of(""), None);
    }

    #[test]
    fn a_file_others_can_read_or_write_is_refused_with_its_mode() {
        let d = dir("modes");
        let operator = write(&d, "op", "operator-token-0123456789\n", 0o600);
        for (mode, shown) in [(0o640, "0640"), (0o604, "0604"), (0o620, "0620")] {
            let web = write(&d, "web", "web-registration-token-01\n", mode);
            let e = Tokens::read(&api(operator.clone(), vec![(web, &["web"])]))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("api.registration_tokens[0].file ")
                    && e.contains(&format!("mode {shown}"))
                    && e.contains("chmod 600"),
                "{e}"
            );
        }
        fs::set_permissions(&operator, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_token("api.token_file", &operator)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mode 0644"), "{e}");
    }

    #[test]
    fn short_shared_or_missing_tokens_are_refused() {
        let d = dir("faults");
        let operator = write(&d, "op", "operator-token-0123456789\n", 0o600);
        let short = write(&d, "short", "short\n", 0o600);
        let e = Tokens::read(&api(operator.clone(), vec![(short, &["web"])])).unwrap_err();
        assert!(e.to_string().contains("at least 16 characters"), "{e}");
        let same = write(&d, "same", "operator-token-0123456789", 0o600);
        let e = Tokens::read(&api(operator.clone(), vec![(same, &["web"])])).unwrap_err();
        assert!(
            e.to_string()
                .contains("the same token as another file's (api.token_file)"),
            "{e}"
        );
        let missing = d.0.join("missing");
        let e = Tokens::read(&api(operator, vec![(missing, &["web"])])).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("reading api.registration_tokens[0].file "),
            "{e:#}"
        );
    }
}
