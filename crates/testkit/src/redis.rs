//! A throw-away `redis-server` on loopback, for the Redis store and fleet tests.

use std::process::Command;
use std::time::Duration;

use crate::process::Service;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts with a fresh port when the chosen one was taken in between.
const PORT_ATTEMPTS: usize = 5;

/// A `redis-server` on 127.0.0.1 with persistence off (`--save "" --appendonly no`); killed
/// when dropped.
///
/// The executable is `$HB402_REDIS_SERVER` if set, else `redis-server` on `PATH` (Debian package
/// `redis-server`). A missing server fails the test with that instruction: tests that need Redis
/// never skip.
#[derive(Debug)]
pub struct RedisServer {
    service: Service,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it accepts connections.
    pub async fn start() -> RedisServer {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match Self::start_on(crate::free_port()).await {
                Ok(server) => return server,
                Err(logs) => last = logs,
            }
        }
        panic!("redis-server could not bind a loopback port in {PORT_ATTEMPTS} attempts:\n{last}");
    }

    /// Kills the server and starts a new, empty one on the same port (persistence is off):
    /// clients see the connection drop and may reconnect.
    pub async fn restart(&mut self) {
        self.service.kill();
        match Self::start_on(self.port).await {
            Ok(server) => *self = server,
            Err(logs) => panic!(
                "redis-server did not restart on port {}:\n{logs}",
                self.port
            ),
        }
    }

    /// `Err(logs)` if the port was taken; panics on any other failure.
    async fn start_on(port: u16) -> Result<RedisServer, String> {
        let program = redis_server();
        let mut command = Command::new(&program);
        command.current_dir(std::env::temp_dir()).args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &std::env::temp_dir().to_string_lossy(),
            "--logfile",
            "",
            "--daemonize",
            "no",
        ]);
        if let Err(error) = Command::new(&program)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            panic!(
                "cannot run {program} ({error}): install the Debian package redis-server \
                 (`apt-get install redis-server`; .ci/run does this) or set HB402_REDIS_SERVER"
            );
        }
        let (mut service, ready) = Service::spawn(
            "redis-server",
            command,
            Box::new(|line: &str| {
                line.contains("Ready to accept connections")
                    .then(String::new)
            }),
        );
        match tokio::time::timeout(READY_TIMEOUT, ready).await {
            Ok(Ok(_)) => Ok(RedisServer { service, port }),
            Ok(Err(_)) => {
                // Exited: wait for its last lines before deciding why.
                service.kill();
                let logs = service.logs();
                if logs.contains("already in use") {
                    Err(logs)
                } else {
                    service.fail("exited before accepting connections")
                }
            }
            Err(_) => service.fail(&format!("not ready after {READY_TIMEOUT:?}")),
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Recent server log lines.
    pub fn logs(&self) -> String {
        self.service.logs()
    }

    /// Kills the server now; its port then refuses connections.
    pub fn kill(&mut self) {
        self.service.kill();
    }
}

fn redis_server() -> String {
    std::env::var("HB402_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}
