//! TLS and ACL users to the data stores, against real servers the test
//! starts on loopback ports with a certificate authority it makes (openssl):
//! a TLS-only redis-server that requires client certificates and has an ACL
//! user, and a Postgres (Debian's, which is built with SSL) that refuses
//! connections in the clear. Hopper's queue client pushes and claims over
//! TLS with the ACL user; a wrong password, a missing client certificate and
//! a server certificate from another CA are refused with clear errors; the
//! Postgres pool connects over TLS only. Everything started is stopped by
//! pid when the test ends.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use hopper_queue::{PushOptions, QueueClient, WorkerId};
use hopper_shared::{Config, QueueName, config::DbTimeouts, tls::TlsFiles};
use hopper_tests::{
    free_port,
    private_postgres::{as_postgres, chown_to_postgres},
};
use serde_json::json;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hopper-{what}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..10]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate `<name>.pem` / `<name>.key` signed by `ca`, for `usage`
/// (`serverAuth` with 127.0.0.1/localhost names, or `clientAuth`).
fn make_cert(dir: &Path, ca: &str, name: &str, usage: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    );
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n\
             subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// The test's PKI: CA `ca` with a server and a client certificate, and an
/// unrelated CA `other`.
fn pki() -> TempDir {
    let dir = TempDir::new("pki");
    for ca in ["ca", "other"] {
        openssl(
            &dir.0,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-subj",
                &format!("/CN=hopper test {ca}"),
            ],
        );
    }
    make_cert(&dir.0, "ca", "server", "serverAuth");
    make_cert(&dir.0, "ca", "client", "clientAuth");
    dir
}

fn file(dir: &TempDir, name: &str) -> String {
    dir.0.join(name).display().to_string()
}

/// A config for the queue client on `url` with these TLS files.
fn config(url: &str, extra: &[(&str, String)]) -> Result<Config, String> {
    let prefix = format!("tls-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut vars: Vec<(String, String)> = vec![
        ("REDIS_URL".into(), url.into()),
        ("HOPPER_KEY_PREFIX".into(), prefix),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Config::from_lookup(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_queue_runs_over_tls_with_an_acl_user_and_refuses_what_it_should() {
    let pki = pki();
    let data = TempDir::new("redis-tls");
    let port = free_port();
    let _server = Running(
        Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1"])
            .args(["--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &file(&pki, "server.pem")])
            .args(["--tls-key-file", &file(&pki, "server.key")])
            .args(["--tls-ca-cert-file", &file(&pki, "ca.pem")])
            .args(["--tls-auth-clients", "yes"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &data.0.display().to_string()])
            .args(["--user", "default", "off"])
            .args(["--user", "hopper", "on", ">s3cret", "~*", "&*", "+@all"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup)"),
    );
    let url = format!("rediss://hopper:s3cret@127.0.0.1:{port}");
    let tls = [
        ("HOPPER_REDIS_TLS_CA_FILE", file(&pki, "ca.pem")),
        ("HOPPER_REDIS_TLS_CERT_FILE", file(&pki, "client.pem")),
        ("HOPPER_REDIS_TLS_KEY_FILE", file(&pki, "client.key")),
    ];

    // The server takes a moment to listen: retry the good connection.
    let good = config(&url, &tls).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let q = loop {
        match QueueClient::connect(&good).await {
            Ok(q) => break q,
            Err(e) => {
                assert!(Instant::now() < deadline, "no TLS connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let queue = QueueName::new("t-tls").unwrap();
    let pushed = q
        .push(
            queue.clone(),
            &json!({"over": "tls"}),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let w = WorkerId::generate();
    q.register(queue.clone(), &w).await.unwrap();
    let mut conn = q
        .dedicated_connection(Duration::from_secs(1))
        .await
        .unwrap();
    let batch = q
        .claim(&mut conn, queue.clone(), &w, 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(batch.jobs.len(), 1);
    assert_eq!(batch.jobs[0].id, pushed.id);

    // Refusals, each named.
    let wrong_password = config(&url.replace("s3cret", "nope"), &tls).unwrap();
    let e = QueueClient::connect(&wrong_password).await.unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("pass"),
        "wrong password: {e}"
    );
    let no_client_cert = config(&url, &tls[..1]).unwrap();
    assert!(
        QueueClient::connect(&no_client_cert).await.is_err(),
        "the server requires a client certificate"
    );
    let other_ca = [
        ("HOPPER_REDIS_TLS_CA_FILE", file(&pki, "other.pem")),
        tls[1].clone(),
        tls[2].clone(),
    ];
    let e = QueueClient::connect(&config(&url, &other_ca).unwrap())
        .await
        .unwrap_err();
    assert!(
        e.to_string().to_lowercase().contains("certificate"),
        "a server certificate from another CA: {e}"
    );
    // TLS files with a URL in the clear: refused at start-up, named.
    let e = config(&format!("redis://127.0.0.1:{port}"), &tls).unwrap_err();
    assert!(e.contains("REDIS_URL"), "{e}");
    let e = config(
        &url,
        &[("HOPPER_REDIS_TLS_CERT_FILE", file(&pki, "client.pem"))],
    )
    .unwrap_err();
    assert!(e.contains("HOPPER_REDIS_TLS_KEY_FILE"), "{e}");
}

/// Debian's Postgres binaries (built with SSL; pgvector's wheel is not).
fn debian_postgres() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's postgresql package (scripts/setup tls)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("an initdb under /usr/lib/postgresql")
}

/// A private Postgres on `port` in `dir`: TLS with the test's server
/// certificate, connections in the clear refused. Stopped on drop.
struct TlsPostgres {
    bin: PathBuf,
    data: PathBuf,
}

impl TlsPostgres {
    fn start(pki: &TempDir, dir: &TempDir, port: u16) -> Self {
        let bin = debian_postgres();
        let data = dir.0.join("data");
        chown_to_postgres(&dir.0);
        let ok = as_postgres(&bin.join("initdb"))
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
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "initdb");
        for f in ["server.pem", "server.key", "ca.pem"] {
            std::fs::copy(pki.0.join(f), data.join(f)).unwrap();
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n\
             local all all trust\n",
        )
        .unwrap();
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'ca.pem'\nlisten_addresses = '127.0.0.1'\nport = {port}\n\
             unix_socket_directories = '{}'",
            dir.0.display()
        )
        .unwrap();
        drop(conf);
        chown_to_postgres(&dir.0);
        std::fs::set_permissions(
            data.join("server.key"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let pg = Self { bin, data };
        let ok = as_postgres(&pg.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&pg.data)
            .args(["-w", "-t", "30", "-l"])
            .arg(dir.0.join("log"))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "pg_ctl start: {}",
            std::fs::read_to_string(dir.0.join("log")).unwrap_or_default()
        );
        pg
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .status();
    }
}

#[tokio::test]
async fn the_postgres_pool_connects_over_tls_only() {
    let pki = pki();
    let dir = TempDir::new("pg-tls");
    let port = free_port();
    let _pg = TlsPostgres::start(&pki, &dir, port);
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres");
    let tls = TlsFiles {
        ca_file: Some(pki.0.join("ca.pem")),
        cert_file: Some(pki.0.join("client.pem")),
        key_file: Some(pki.0.join("client.key")),
    };
    let pool = hopper_shared::db::pool_for(&url, "public", 1, DbTimeouts::default(), &tls).unwrap();
    let client = pool.get().await.expect("a TLS connection");
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the connection is encrypted");

    // In the clear: refused by the server (hostnossl reject).
    let plain = hopper_shared::db::pool_for(
        &url,
        "public",
        1,
        DbTimeouts::default(),
        &TlsFiles::default(),
    )
    .unwrap();
    assert!(plain.get().await.is_err(), "no connection in the clear");
    // A server certificate from another CA: refused by the client.
    let other = TlsFiles {
        ca_file: Some(pki.0.join("other.pem")),
        ..TlsFiles::default()
    };
    let wrong =
        hopper_shared::db::pool_for(&url, "public", 1, DbTimeouts::default(), &other).unwrap();
    assert!(
        wrong.get().await.is_err(),
        "a server certificate from another CA is refused"
    );
    // sslmode=require alone (system roots): the self-signed CA is not trusted.
    let require = hopper_shared::db::pool_for(
        &format!("{url}?sslmode=require"),
        "public",
        1,
        DbTimeouts::default(),
        &TlsFiles::default(),
    )
    .unwrap();
    assert!(
        require.get().await.is_err(),
        "the test CA is not a system root"
    );
}
