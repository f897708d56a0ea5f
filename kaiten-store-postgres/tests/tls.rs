//! TLS against a PostgreSQL server the test starts itself, with a certificate authority and a
//! server certificate the test makes (`openssl`), the way hosted Postgres presents itself:
//! `sslmode=require` encrypts, `verify-full` checks the chain and the host name, and every
//! failure is a clear error. The server checks passwords (SCRAM), so a wrong one is tested too. The server is a throwaway cluster (`initdb`) on a free loopback port.
//!
//! Needs `openssl` and PostgreSQL's server binaries (`initdb`, `postgres`: `$KAITEN_TEST_PG_BINDIR`,
//! else the newest `/usr/lib/postgresql/*/bin`, else `PATH`). Without them the test says so and
//! returns, unless `CI` is set: then it fails.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{find_on_path, running_as_root, uses_tls};
use kaiten_store_postgres::PgStore;
use kaiten_sync::StoreError;

/// The superuser's password on the throwaway server (which, unlike the shared test server, checks
/// passwords over TCP).
const PASSWORD: &str = "kaiten-tls-test-secret";

/// Fails in CI, says how to enable the test elsewhere.
fn unavailable(why: &str) -> Option<TlsServer> {
    assert!(std::env::var_os("CI").is_none(), "CI is set but the TLS test cannot run: {why}");
    common::skip(why);
    None
}

/// The directory holding `initdb` and `postgres`.
fn server_bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("KAITEN_TEST_PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).or_else(|| find_on_path("initdb").and_then(|p| p.parent().map(Path::to_owned)))
}

/// The uid and gid of `postgres` (PostgreSQL refuses to run as root).
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

fn run(command: &mut Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A certificate authority (`<name>.crt`, `<name>.key`) made in `dir`.
fn make_ca(dir: &Path, name: &str) {
    run(
        Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
            .arg(format!("/CN=kaiten-sync test {name}"))
            .args(["-keyout", &format!("{name}.key"), "-out", &format!("{name}.crt")])
            .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"]),
        "openssl: make a CA",
    );
}

/// A server certificate for `localhost` only (not `127.0.0.1`), signed by the CA `ca`.
fn make_server_cert(dir: &Path, ca: &str) {
    run(
        Command::new("openssl").current_dir(dir).args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]),
        "openssl: make a server key",
    );
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n").unwrap();
    run(
        Command::new("openssl").current_dir(dir).args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]),
        "openssl: sign the server certificate",
    );
}

/// A throwaway PostgreSQL cluster serving TLS with the test's certificate; stopped and removed on
/// drop.
struct TlsServer {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl TlsServer {
    fn start() -> Option<TlsServer> {
        if find_on_path("openssl").is_none() {
            return unavailable("no openssl binary to make certificates with");
        }
        let Some(bindir) = server_bindir() else {
            return unavailable("no PostgreSQL server binaries (initdb); set KAITEN_TEST_PG_BINDIR");
        };
        let user = if running_as_root() {
            match postgres_user() {
                Some(ids) => Some(ids),
                None => return unavailable("running as root and there is no postgres user to run the server as"),
            }
        } else {
            None
        };
        let dir = std::env::temp_dir().join(common::unique_name("kaiten_tls"));
        std::fs::create_dir_all(&dir).unwrap();
        make_ca(&dir, "ca");
        make_ca(&dir, "other-ca");
        make_server_cert(&dir, "ca");
        let as_server_user = |command: &mut Command| {
            if let Some((uid, gid)) = user {
                command.uid(uid).gid(gid);
            }
        };
        if let Some((uid, gid)) = user {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                std::os::unix::fs::chown(entry.path(), Some(uid), Some(gid)).unwrap();
            }
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(dir.join("pwfile"), format!("{PASSWORD}\n")).unwrap();
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.join("pwfile"), Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .args(["--auth-local=trust", "--auth-host=scram-sha-256", "-U", "postgres", "--no-sync", "--locale=C"])
            .args(["-E", "UTF8", "--pwfile"])
            .arg(dir.join("pwfile"))
            .arg("-D")
            .arg(dir.join("data"));
        as_server_user(&mut initdb);
        run(&mut initdb, "initdb");

        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut postgres = Command::new(bindir.join("postgres"));
        postgres
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "ssl=on", "-c", "fsync=off", "-c"])
            .arg(format!("ssl_cert_file={}", dir.join("server.crt").display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", dir.join("server.key").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).unwrap());
        as_server_user(&mut postgres);
        let child = postgres.spawn().expect("start postgres");
        let mut server = TlsServer { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.log().contains("ready to accept connections") {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("the TLS test server exited ({status}): {}", server.log());
            }
            assert!(Instant::now() < deadline, "the TLS test server was not ready within 30 s: {}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    fn url(&self, host: &str, params: &str) -> String {
        self.url_with_password(PASSWORD, host, params)
    }

    fn url_with_password(&self, password: &str, host: &str, params: &str) -> String {
        format!("postgres://postgres:{password}@{host}:{}/postgres?{params}", self.port)
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        // Fast shutdown (SIGINT) ends the backends too; SIGKILL if it does not stop.
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn assert_tls_error(err: &StoreError, why: &str) {
    assert!(matches!(err, StoreError::Unavailable { .. }), "{why}: {err:?}");
    assert!(err.to_string().contains("TLS"), "{why}: the error names TLS: {err}");
}

#[tokio::test]
async fn tls_with_a_certificate_made_by_the_test() {
    let Some(server) = TlsServer::start() else { return };

    // require: encrypted, the certificate is not checked.
    let store = PgStore::connect(&server.url("127.0.0.1", "sslmode=require")).await.expect("sslmode=require");
    assert!(uses_tls(store).await, "sslmode=require connects over TLS");

    // verify-full with the test's CA and the name on the certificate: encrypted and verified; the
    // store works over it.
    let ca = server.path("ca.crt");
    let verified = server.url("localhost", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let store = PgStore::connect(&verified).await.expect("verify-full with the right CA and host name");
    kaiten_sync::Store::migrate(&store).await.expect("migrate over TLS");
    assert!(uses_tls(store).await);

    // verify-full refuses a host name the certificate does not carry (it names localhost only) ...
    let wrong_name = server.url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={ca}"));
    let err = PgStore::connect(&wrong_name).await.expect_err("127.0.0.1 is not on the certificate");
    assert_tls_error(&err, "wrong host name");

    // ... a certificate from another CA ...
    let other = server.path("other-ca.crt");
    let wrong_ca = server.url("localhost", &format!("sslmode=verify-full&sslrootcert={other}"));
    let err = PgStore::connect(&wrong_ca).await.expect_err("signed by another CA");
    assert_tls_error(&err, "untrusted CA");

    // ... and, with no root given, a private CA (not a public root).
    let err = PgStore::connect(&server.url("localhost", "sslmode=verify-full")).await.expect_err("private CA");
    assert_tls_error(&err, "no root certificate");

    // A root certificate file that does not exist is named.
    let missing = server.url("localhost", "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt");
    let err = PgStore::connect(&missing).await.expect_err("missing root file");
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(text.contains("sslrootcert file /nonexistent/ca.crt does not exist"), "{text}");
}

#[tokio::test]
async fn wrong_password_is_a_clear_error_without_the_password() {
    let Some(server) = TlsServer::start() else { return };
    let wrong = "not-the-Password-42";
    for params in ["sslmode=disable", "sslmode=require"] {
        let err = PgStore::connect(&server.url_with_password(wrong, "127.0.0.1", params))
            .await
            .expect_err("a wrong password is refused");
        let (text, debug) = (err.to_string(), format!("{err:?}"));
        assert!(matches!(err, StoreError::Unavailable { .. }), "{params}: {debug}");
        assert!(text.contains("authentication failed") && text.contains("postgres"), "{params}: {text}");
        assert!(!text.contains(wrong) && !debug.contains(wrong), "{params}: the password leaked: {debug}");
    }
    // The right one works, over TLS and without.
    let store = PgStore::connect(&server.url("127.0.0.1", "sslmode=disable")).await.expect("right password");
    assert!(!uses_tls(store).await);
}
