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

/// Extra `redis-server` processes (Sentinels, Redis Cluster nodes) in a
/// private directory, killed on drop.
pub struct RedisProcs {
    pub dir: std::path::PathBuf,
    pub ports: Vec<u16>,
    children: Vec<Child>,
}

impl Drop for RedisProcs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn private_dir(test: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ow-redis-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RedisProcs {
    /// One Sentinel on a free port watching `master_port` as `name`
    /// (quorum 1).
    pub fn sentinel(test: &str, master_port: u16, name: &str) -> Self {
        let dir = private_dir(test);
        let port = free_port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\nsentinel monitor {name} 127.0.0.1 {master_port} 1\n",
                dir.display()
            ),
        )
        .unwrap();
        let child = Command::new(binary().expect("redis-server"))
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel starts");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until("the sentinel answers", || ping(addr));
        Self {
            dir,
            ports: vec![port],
            children: vec![child],
        }
    }

    /// A three-master Redis Cluster (no replicas), or `None` when redis-cli
    /// is missing (printed as SKIPPED unless CI requires it).
    pub fn cluster(test: &str) -> Option<Self> {
        let cli_ok = Command::new("redis-cli")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !cli_ok || binary().is_none() {
            if std::env::var("ONEWINDOW_CI_REQUIRE").is_ok_and(|v| v == "1") {
                panic!(
                    "{test}: redis-server and redis-cli are required (ONEWINDOW_CI_REQUIRE=1); run .ci/setup-redis.sh"
                );
            }
            eprintln!(
                "SKIPPED: {test}: redis-server or redis-cli not installed (.ci/setup-redis.sh)"
            );
            return None;
        }
        let dir = private_dir(test);
        let mut s = Self {
            dir: dir.clone(),
            ports: Vec::new(),
            children: Vec::new(),
        };
        for _ in 0..3 {
            let port = free_port();
            let child = Command::new(binary().expect("redis-server"))
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--protected-mode",
                    "no",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--dir",
                    &dir.display().to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts");
            s.children.push(child);
            s.ports.push(port);
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_until("a cluster node answers", || ping(addr));
        }
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(s.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        for p in s.ports.clone() {
            wait_until("cluster_state:ok on every node", || {
                Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
        }
        Some(s)
    }
}
