//! Where the admin API listens: a unix socket that only its owner (root) can use, and
//! optionally TCP, where every request must carry one of the bearer tokens (see `tokens`)
//! and stay within its scope (see `scope`).
use std::{
    fs,
    os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{bail, Context as _};
use axum::{
    extract::{Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use tokio::net::{TcpListener, UnixListener};

use super::{error::ApiError, tokens::Tokens};
use crate::ops::listeners::stats::ListenerStats;

/// Removes the socket file on drop.
pub struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Binds the admin socket at `path`: its directory is created 0700 when missing (an
/// existing directory is left as it is: it may be shared, e.g. /run), a stale socket of
/// a previous lbd is replaced, and the socket ends up 0600, owned by lbd's user.
pub fn bind_unix(path: &Path) -> anyhow::Result<(UnixListener, SocketFile)> {
    let dir = path.parent().context("the socket path has no directory")?;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!(
                    "{} is in use: another lbd is serving its admin API there",
                    path.display()
                );
            }
            fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        }
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(_) => {}
    }
    // The umask closes the window between bind(2) creating the file and the chmod below,
    // in which another user could connect.
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above; this puts back the mask umask returned.
    unsafe { libc::umask(old) };
    let listener = bound.with_context(|| format!("binding the admin socket {}", path.display()))?;
    let file = SocketFile {
        path: path.to_path_buf(),
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok((listener, file))
}

/// Binds the TCP listener and wraps `router` so that every request needs a token, and
/// stays within that token's scope.
/// Refusals are counted in `stats` (`lb_listener_requests_refused_total`).
pub async fn bind_tcp(
    addr: std::net::SocketAddr,
    tokens: Tokens,
    stats: Arc<ListenerStats>,
    router: Router,
) -> anyhow::Result<(TcpListener, Router)> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the admin API on {addr}"))?;
    let router = router.layer(middleware::from_fn_with_state(
        (Arc::new(tokens), stats),
        require_token,
    ));
    Ok((listener, router))
}

async fn require_token(
    State((tokens, stats)): State<(Arc<Tokens>, Arc<ListenerStats>)>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(given) = given else {
        ListenerStats::count(&stats.unauthorized);
        stats.warn_limited(|| "refused a request without a bearer token (401)".into());
        return unauthorized("missing bearer token (Authorization: Bearer TOKEN)");
    };
    let Some(scope) = tokens.scope_of(given) else {
        ListenerStats::count(&stats.unauthorized);
        stats.warn_limited(|| "refused a request with a wrong bearer token (401)".into());
        return unauthorized("wrong bearer token");
    };
    match scope.allows(req.method(), req.uri().path(), req.uri().query()) {
        Ok(()) => next.run(req).await,
        Err(denied) => {
            ListenerStats::count(&stats.forbidden);
            log::warn!("admin API over TCP: refused (403): {denied}");
            ApiError::new(StatusCode::FORBIDDEN, denied.to_string()).into_response()
        }
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_owner_only_in_a_new_0700_directory() {
        let dir = std::env::temp_dir().join(format!("lbd-sock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = dir.join("run").join("lbd.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let socket = bind_unix(&path).unwrap();
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
            let e = bind_unix(&path).err().unwrap().to_string();
            assert!(e.contains("another lbd is serving"), "{e}");
            drop(socket);
            assert!(!path.exists(), "the socket is removed on drop");
        });
        fs::remove_dir_all(&dir).unwrap();
    }
}
