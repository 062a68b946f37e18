//! A real `redis-server` per test, on a free loopback port, without
//! persistence, so a test can kill and restart it. When the binary is
//! missing the test prints "SKIPPED: ..." and returns, unless
//! `ONEWINDOW_CI_REQUIRE=1` (then it fails).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

fn binary() -> Option<String> {
    let bin = std::env::var("ONEWINDOW_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()
        .filter(|s| s.success())
        .map(|_| bin)
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts a server, or `None` (after printing why) when the binary is
    /// missing and CI does not require it.
    pub fn start(test: &str) -> Option<Self> {
        let Some(_) = binary() else {
            if std::env::var("ONEWINDOW_CI_REQUIRE").is_ok_and(|v| v == "1") {
                panic!(
                    "{test}: redis-server is required (ONEWINDOW_CI_REQUIRE=1) but not installed; run .ci/setup-redis.sh"
                );
            }
            eprintln!(
                "SKIPPED: {test}: redis-server not installed (apt-get install redis-server, or .ci/setup-redis.sh)"
            );
            return None;
        };
        let mut s = Self {
            port: free_port(),
            child: None,
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let bin = binary().expect("redis-server");
        let child = Command::new(bin)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        // Wait until it answers PING (startup, not behaviour under test).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ping(self.addr()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL: no goodbye to clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}
