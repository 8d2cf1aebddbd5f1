//! Child processes: long-running services that die with their owner, and bounded script runs.
//!
//! Pipes are drained by plain threads (not tasks), so a service keeps running whatever tokio
//! runtime — if any — its owner happens to live in.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Lines of output kept per service for diagnostics.
const TAIL_LINES: usize = 400;

/// The most recent output lines of a child.
#[derive(Debug, Default)]
pub(crate) struct LogTail {
    lines: VecDeque<String>,
    dropped: usize,
}

impl LogTail {
    fn push(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if self.dropped > 0 {
            out.push_str(&format!("[{} earlier lines dropped]\n", self.dropped));
        }
        for line in &self.lines {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// A long-running child process, killed (SIGKILL) and reaped on drop.
#[derive(Debug)]
pub(crate) struct Service {
    name: &'static str,
    child: Option<Child>,
    log: Arc<Mutex<LogTail>>,
}

/// Reports the first stdout line for which the probe returns `Some`.
pub(crate) type ReadyProbe = Box<dyn Fn(&str) -> Option<String> + Send>;

impl Service {
    /// Spawns `command` with stdin closed and both output streams captured. The returned
    /// receiver yields the probe's value for the first matching stdout line; it fails if the
    /// child closes stdout (exits) before such a line.
    pub(crate) fn spawn(
        name: &'static str,
        mut command: Command,
        probe: ReadyProbe,
    ) -> (Service, oneshot::Receiver<String>) {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name} ({command:?}): {error}"));
        let log = Arc::new(Mutex::new(LogTail::default()));
        let (ready_tx, ready_rx) = oneshot::channel();

        let stdout = child.stdout.take().expect("piped stdout");
        let stdout_log = Arc::clone(&log);
        thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                let mut ready_tx = Some(ready_tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if ready_tx.is_some()
                        && let Some(value) = probe(&line)
                        && let Some(tx) = ready_tx.take()
                    {
                        let _ = tx.send(value);
                    }
                    lock(&stdout_log).push(line);
                }
            })
            .expect("spawn stdout drain thread");

        let stderr = child.stderr.take().expect("piped stderr");
        let stderr_log = Arc::clone(&log);
        thread::Builder::new()
            .name(format!("{name}-stderr"))
            .spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    lock(&stderr_log).push(line);
                }
            })
            .expect("spawn stderr drain thread");

        (
            Service {
                name,
                child: Some(child),
                log,
            },
            ready_rx,
        )
    }

    /// The recent output (stdout and stderr interleaved by arrival).
    pub(crate) fn logs(&self) -> String {
        lock(&self.log).render()
    }

    /// The process id while the child has not been killed.
    pub(crate) fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the child is still alive.
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the child and waits for it to exit. Idempotent.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics with `what` and the child's recent output.
    pub(crate) fn fail(&mut self, what: &str) -> ! {
        let name = self.name;
        self.kill();
        panic!("{name}: {what}\n--- {name} output ---\n{}", self.logs());
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

fn lock(log: &Mutex<LogTail>) -> std::sync::MutexGuard<'_, LogTail> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `node <script> <args>` from the kit's JavaScript directory with an optional stdin,
/// killing it after `timeout`. Returns its stdout; panics (with stderr) if it fails.
pub(crate) async fn run_node(
    script: &str,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> String {
    crate::js::ensure_js();
    let mut command = Command::new(crate::js::node());
    command
        .arg(Path::new(script))
        .args(&args)
        .current_dir(crate::js::js_dir());
    let shown = format!("node {script} {}", args.join(" "));
    let finished = match run(command, shown.clone(), stdin, timeout).await {
        Ok(finished) => finished,
        Err(message) => panic!("{message}"),
    };
    if finished.success {
        finished.stdout
    } else {
        panic!(
            "`{shown}` failed ({})\n--- stderr ---\n{}\n--- stdout ---\n{}",
            finished.status, finished.stderr, finished.stdout
        )
    }
}

/// How a bounded run ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Whether it exited with status 0.
    pub(crate) success: bool,
    /// The exit status, for messages.
    pub(crate) status: String,
    /// Everything it wrote to stdout.
    pub(crate) stdout: String,
    /// Everything it wrote to stderr.
    pub(crate) stderr: String,
}

/// Runs `command` on the blocking pool with an optional stdin, killing it after `timeout`.
/// `Err` if it cannot start or does not finish in time (with its stderr so far); `shown` names
/// it in messages.
pub(crate) async fn run(
    command: Command,
    shown: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Finished, String> {
    let handle = tokio::task::spawn_blocking(move || run_blocking(command, &shown, stdin, timeout));
    match handle.await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

fn run_blocking(
    mut command: Command,
    shown: &str,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Finished, String> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|error| format!("cannot run `{shown}`: {error}"))?;

    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = stderr.join().unwrap_or_default();
                return Err(format!(
                    "`{shown}` did not finish within {timeout:?}\n--- stderr ---\n{stderr}"
                ));
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(error) => return Err(format!("waiting for `{shown}`: {error}")),
        }
    };
    Ok(Finished {
        success: status.success(),
        status: status.to_string(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
