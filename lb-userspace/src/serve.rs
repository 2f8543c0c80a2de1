//! Starts `lbd`'s listeners: the admin API on its unix socket (and on TCP when
//! configured), and the metrics endpoint; and stops them gracefully.
use std::sync::Arc;

use anyhow::Context as _;
use log::{error, info};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    api::{self, listen, DataPath, Shared},
    config::Config,
    metrics::{self, Metrics},
};

/// The running listeners; [`Servers::stop`] ends them.
pub struct Servers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Removes the socket file when dropped.
    _socket: listen::SocketFile,
    /// For the health prober (issue 3) to observe probe latencies into.
    pub metrics: Arc<Metrics>,
}

/// Binds every listener (so that a taken port or socket fails start-up with a clear
/// error) and serves them in the background.
pub async fn start<D: DataPath>(config: &Config, runtime: Shared<D>) -> anyhow::Result<Servers> {
    let (stop, stopped) = watch::channel(false);
    let router = api::router(runtime.clone());
    let mut tasks = Vec::new();

    let (unix, socket) = listen::bind_unix(&config.api.socket)?;
    info!("admin API on {} (owner only)", config.api.socket.display());
    let shutdown = until(stopped.clone());
    tasks.push(spawn(
        "admin API (unix socket)",
        axum::serve(unix, router.clone()).with_graceful_shutdown(shutdown),
    ));

    if let (Some(addr), Some(token_file)) = (config.api.listen, &config.api.token_file) {
        let token = listen::read_token(token_file)?;
        let (tcp, with_token) = listen::bind_tcp(addr, token, router).await?;
        info!("admin API on {addr} (bearer token required)");
        tasks.push(spawn(
            "admin API (TCP)",
            axum::serve(tcp, with_token).with_graceful_shutdown(until(stopped.clone())),
        ));
    }

    let metrics = Arc::new(Metrics::new(runtime.clone()));
    let addr = config.metrics.listen;
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint on {addr}"))?;
    info!("metrics on http://{addr}/metrics");
    tasks.push(spawn(
        "metrics",
        axum::serve(tcp, metrics::router(metrics.clone(), runtime))
            .with_graceful_shutdown(until(stopped)),
    ));
    Ok(Servers {
        stop,
        tasks,
        _socket: socket,
        metrics,
    })
}

impl Servers {
    /// Stops accepting, lets requests in flight finish, and removes the socket.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

fn spawn(
    what: &'static str,
    server: impl std::future::IntoFuture<Output = std::io::Result<()>, IntoFuture: Send>
        + Send
        + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = server.await {
            error!("{what}: {e}");
        }
    })
}
