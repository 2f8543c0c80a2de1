//! `lbctl` against an lbd that accepts and never answers (stopped in a debugger,
//! overloaded, wedged): it gives up within its timeout, names the socket and the
//! timeout, and exits 75. No root needed.
use std::{
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

use lb_tests::{lbctl::RUN_BOUND, lbctl_path, output_within, Lbctl};

/// A socket that accepts every connection and never reads or answers; stops on drop.
struct Mute {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Vec<UnixStream>>>,
}

impl Mute {
    fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("lbctl-mute-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join("lbd.sock")).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            held
        });
        Self {
            dir,
            stop,
            thread: Some(thread),
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("lbd.sock")
    }

    /// Connections it accepted.
    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap().len()
    }
}

impl Drop for Mute {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn expected(socket: &Path, timeout: &str, flag: &str) -> String {
    format!(
        "lbctl: lbd did not answer on {} within {timeout} ({flag}): it may be stopped or \
         overloaded\n",
        socket.display()
    )
}

#[test]
fn lbctl_gives_up_on_an_lbd_that_never_answers() {
    let mute = Mute::start("flag");
    let out = Lbctl::new(&mute.socket()).run(&["--timeout", "1s", "health"]);
    assert_eq!(out.code, Some(75), "{out:?}");
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        expected(&mute.socket(), "1s", "--timeout, LBCTL_TIMEOUT")
    );
    assert_eq!(mute.stop(), 1, "lbctl connected once");

    // The same from the environment, as a script would set it.
    let mute = Mute::start("env");
    let mut cmd = Command::new(lbctl_path());
    cmd.env("LBCTL_TIMEOUT", "700ms")
        .env("LBD_SOCKET", mute.socket())
        .args(["backend", "list"]);
    let out = output_within(cmd, RUN_BOUND).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(75), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        expected(&mute.socket(), "700ms", "--timeout, LBCTL_TIMEOUT")
    );
}
