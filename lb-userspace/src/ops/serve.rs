//! Starts `lbd`'s listeners: the admin API on its unix socket (and on TCP when
//! configured), and the metrics endpoint, each within its connection limits (see
//! `crate::ops::listeners`); and stops them gracefully.
use std::sync::Arc;

use anyhow::Context as _;
use log::info;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    kernel::trace::Tracer,
    model::config::Config,
    ops::api::{self, listen, tokens::Tokens},
    ops::events,
    ops::listeners::{self, stats::ListenerStats},
    ops::metrics::{self, Metrics},
    ops::shared::{DataPath, Shared},
    ops::trace,
};

/// The running listeners; [`Servers::stop`] ends them.
pub struct Servers {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Removes the socket file when dropped.
    _socket: listen::SocketFile,
    /// For the health prober to observe probe latencies into.
    pub metrics: Arc<Metrics>,
}

/// Binds every listener (so that a taken port or socket fails start-up with a clear
/// error) and serves them in the background.
pub async fn start<D: DataPath>(
    config: &Config,
    runtime: Shared<D>,
    tracer: Option<Arc<Tracer>>,
) -> anyhow::Result<Servers> {
    let (stop, stopped) = watch::channel(false);
    let mut router = api::router(runtime.clone()).merge(events::route::router(
        runtime.events().clone(),
        stopped.clone(),
        events::route::followers_cap(config.api.connections.max),
    ));
    if let Some(tracer) = &tracer {
        router = router.merge(trace::route::router(
            runtime.clone(),
            tracer.clone(),
            stopped.clone(),
        ));
    }
    let mut tasks = Vec::new();
    if let Some(hook) = &config.events.hook {
        let log = runtime.events();
        tasks.push(events::hook::start(hook.clone(), log, stopped.clone()));
    }

    let mut all_stats = Vec::new();
    let mut listener_stats = |name: &'static str, cap: u32| {
        let stats = Arc::new(ListenerStats::new(name, cap));
        all_stats.push(stats.clone());
        stats
    };
    let api_limits = &config.api.connections;

    let (unix, socket) = listen::bind_unix(&config.api.socket)?;
    info!("admin API on {} (owner only)", config.api.socket.display());
    tasks.push(tokio::spawn(listeners::serve(
        unix,
        router.clone(),
        api_limits.clone(),
        listener_stats("admin_unix", api_limits.max),
        stopped.clone(),
    )));

    if let Some(addr) = config.api.listen {
        let tokens = Tokens::read(&config.api)?;
        let stats = listener_stats("admin_tcp", api_limits.max);
        let (tcp, with_token) = listen::bind_tcp(addr, tokens, stats.clone(), router).await?;
        info!(
            "admin API on {addr} (bearer token required; {} registration token(s))",
            config.api.registration_tokens.len()
        );
        tasks.push(tokio::spawn(listeners::serve(
            tcp,
            with_token,
            api_limits.clone(),
            stats,
            stopped.clone(),
        )));
    }

    let limits = &config.metrics.connections;
    let stats = listener_stats("metrics", limits.max);
    let metrics = Arc::new(Metrics::serving(runtime.clone(), all_stats, tracer));
    let addr = config.metrics.listen;
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the metrics endpoint on {addr}"))?;
    info!("metrics on http://{addr}/metrics");
    tasks.push(tokio::spawn(listeners::serve(
        tcp,
        metrics::router(metrics.clone(), runtime),
        limits.clone(),
        stats,
        stopped,
    )));
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
