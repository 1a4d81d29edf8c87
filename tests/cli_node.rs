//! `tessera node` on its own: what its errors name, and how it stops.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_tessera");

/// A fresh folder for `name` with certificates for edge0, edge1 and the coordinator.
fn cluster_dir(name: &str) -> PathBuf {
    let dir = common::scratch("cli_node", name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let nodes = ["edge0", "edge1", "coordinator"].map(String::from);
    transport::certs::generate(&dir.join("certs"), &nodes).expect("certificates");
    dir
}

/// Writes `dir/edge0.toml` with `certs` and the `extra` lines.
fn node_file(dir: &Path, certs: &str, extra: &str) -> PathBuf {
    let path = dir.join("edge0.toml");
    let text = format!(
        "name = \"edge0\"\ntier = \"edge\"\nlisten = \"127.0.0.1:0\"\ncerts = \"{certs}\"\npeers = [\"coordinator\"]\n{extra}"
    );
    std::fs::write(&path, text).expect("node file");
    path
}

/// Runs `tessera node --config FILE` from `cwd`, expecting it to fail at once.
fn node_fails(cwd: &Path, file: &Path) -> String {
    let out: Output = Command::new(EXE)
        .args(["node", "--config"])
        .arg(file)
        .current_dir(cwd)
        .output()
        .expect("tessera node");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

/// The daemon has no `--backend` flag: a GPU that does not open points at
/// the config file's `backend` field, naming the file.
#[test]
fn a_gpu_that_does_not_open_points_at_the_config_files_backend_field() {
    let dir = cluster_dir("adapter");
    let file = node_file(
        &dir,
        &dir.join("certs").display().to_string(),
        "backend = \"gpu\"\nadapter = \"no-such-adapter-anywhere\"\n",
    );
    let e = node_fails(&dir, &file);
    assert!(
        e.contains(&format!("backend = \"cpu\" in {}", file.display())),
        "{e}"
    );
    assert!(!e.contains("--backend"), "{e}");
    assert!(e.contains("(without `adapter`)"), "{e}");
    // Followed halfway (the adapter kept), the file says what is left.
    let file = node_file(
        &dir,
        &dir.join("certs").display().to_string(),
        "backend = \"cpu\"\nadapter = \"no-such-adapter-anywhere\"\n",
    );
    let e = node_fails(&dir, &file);
    assert!(
        e.contains("field `adapter` (no-such-adapter-anywhere) picks a GPU adapter"),
        "{e}"
    );
}

/// A compute lock that cannot be opened stops the daemon at start-up,
/// naming the file and field; before, a warning was logged and every job
/// ran without the lock it was asked to take.
#[test]
fn a_compute_lock_that_cannot_be_opened_is_a_config_error() {
    let dir = cluster_dir("badlock");
    let file = node_file(
        &dir,
        &dir.join("certs").display().to_string(),
        "backend = \"cpu\"\ncompute_lock = \"no/such/folder/x.lock\"\n",
    );
    let e = node_fails(&dir, &file);
    assert!(
        e.contains(&format!("{}: field `compute_lock`", file.display())),
        "{e}"
    );
    assert!(e.contains("no/such/folder/x.lock"), "{e}");
}

/// A host name where the daemon binds an address is refused naming the
/// file and field and saying what is wanted; serde alone said "invalid
/// socket address syntax".
#[test]
fn a_host_name_to_listen_on_is_refused_saying_an_ip_address_is_wanted() {
    let dir = cluster_dir("hostname");
    let file = dir.join("edge0.toml");
    std::fs::write(
        &file,
        "name = \"edge0\"\ntier = \"edge\"\nlisten = \"localhost:7000\"\ncerts = \"certs\"\npeers = [\"coordinator\"]\nbackend = \"cpu\"\n",
    )
    .expect("node file");
    let e = node_fails(&dir, &file);
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(e.contains("listen"), "{e}");
    assert!(e.contains("not an IP address and port"), "{e}");
}

/// A key copied from another node is refused when the certificates are
/// loaded (before calibration), naming both files; before, it surfaced
/// after calibration as `cannot listen on ADDR: tls: keys may not be
/// consistent: KeyMismatch`.
#[test]
fn a_key_of_another_node_is_refused_naming_the_certificate_and_key_files() {
    let dir = cluster_dir("keymismatch");
    let certs = dir.join("certs");
    std::fs::copy(certs.join("edge1.key"), certs.join("edge0.key")).expect("copy key");
    let file = node_file(
        &dir,
        &certs.display().to_string(),
        "backend = \"cpu\"\ncalibrate = true\n",
    );
    let e = node_fails(&dir, &file);
    for f in ["edge0.pem", "edge0.key"] {
        let path = certs.join(f).display().to_string();
        assert!(e.contains(&path), "{path} not in {e}");
    }
    assert!(!e.contains("listen"), "{e}");
}

/// `certs = "certs"` is the folder beside the config file, wherever the
/// daemon is started from (before, it was looked up in the current
/// directory: `certs/ca.pem: No such file or directory`). The daemon then
/// stops on SIGTERM (and on SIGHUP, which killed it on the spot) with exit
/// status 0, saying which signal it got.
#[test]
fn relative_paths_are_taken_from_the_config_files_folder() {
    for signal in ["TERM", "HUP"] {
        a_node_started_elsewhere_stops_cleanly_on(signal);
    }
}

fn a_node_started_elsewhere_stops_cleanly_on(signal: &str) {
    use std::io::{BufRead, Read};
    let dir = cluster_dir(&format!("relative-{signal}"));
    let file = node_file(&dir, "certs", "backend = \"cpu\"\ncalibrate = false\n");
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("cwd");
    let mut child = Command::new(EXE)
        .args(["node", "--config"])
        .arg(&file)
        .current_dir(&elsewhere)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tessera node");
    let out = child.stdout.take().expect("stdout");
    let first = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains(" listening on "));
    if first.is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().expect("node output");
        panic!(
            "the node did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let status = child.wait().expect("wait");
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    assert!(status.success(), "SIG{signal}: {status:?}\n{log}");
    assert!(
        log.contains(&format!("SIG{signal}: closing connections")),
        "{log}"
    );
}

/// Every field `NodeConfig` accepts is listed by `tessera node --help` and
/// in the README's node.toml example (the README lacked
/// `max_model_bytes`, `calibrate` and `compute_lock`; `--help` listed none).
#[test]
fn node_help_and_the_readme_list_every_config_field() {
    let root = env!("CARGO_MANIFEST_DIR");
    let src = std::fs::read_to_string(format!("{root}/src/cluster/config.rs")).expect("config.rs");
    let body = src
        .split("pub struct NodeConfig {")
        .nth(1)
        .and_then(|s| s.split("\n}").next())
        .expect("NodeConfig");
    let fields: Vec<&str> = body
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub ")?.split(':').next())
        .filter(|f| *f != "file")
        .collect();
    assert!(fields.len() >= 12, "{fields:?}");
    let help = Command::new(EXE)
        .args(["node", "--help"])
        .output()
        .expect("tessera node --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    let example = readme
        .split("`node.toml` (")
        .nth(1)
        .and_then(|s| s.split("```toml").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README's node.toml example");
    for f in fields {
        let line = format!("{f} = ");
        assert!(help.contains(&line), "--help lacks {f}: {help}");
        assert!(example.contains(&line), "README example lacks {f}");
    }
}

/// A listen or metrics port already in use fails at start-up, naming it,
/// before the calibration (which took seconds first, on a GPU, before).
#[test]
fn a_port_in_use_is_refused_before_the_calibration() {
    let dir = cluster_dir("ports");
    let certs = dir.join("certs").display().to_string();
    let taken_tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp port");
    let tcp = taken_tcp.local_addr().expect("addr");
    let file = node_file(
        &dir,
        &certs,
        &format!("backend = \"cpu\"\nmetrics = \"{tcp}\"\n"),
    );
    let e = node_fails(&dir, &file);
    assert!(e.contains(&format!("cannot serve metrics on {tcp}")), "{e}");
    assert!(!e.contains("calibrated"), "calibrated first: {e}");

    let taken_udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp port");
    let udp = taken_udp.local_addr().expect("addr");
    let text = std::fs::read_to_string(&file).expect("node file");
    let text = text
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{udp}\""))
        .replace(&format!("metrics = \"{tcp}\"\n"), "");
    std::fs::write(&file, text).expect("node file");
    let e = node_fails(&dir, &file);
    assert!(e.contains(&format!("cannot listen on {udp}")), "{e}");
    assert!(!e.contains("calibrated"), "calibrated first: {e}");
}

/// `tessera certs` for a node that has a certificate already says it
/// replaced it, and under which CA.
#[test]
fn certs_says_which_node_certificates_it_replaced() {
    let dir = common::scratch("cli_node", "recert");
    let _ = std::fs::remove_dir_all(&dir);
    let certs = |nodes: &str| {
        let out = Command::new(EXE)
            .args(["certs", "--out"])
            .arg(&dir)
            .args(["--nodes", nodes])
            .output()
            .expect("tessera certs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = certs("edge0,edge1");
    assert!(first.contains("wrote a cluster CA"), "{first}");
    assert!(!first.contains("replaced"), "{first}");
    let second = certs("edge1,edge2");
    assert!(second.contains("signed with the existing CA"), "{second}");
    assert!(
        second.contains("replaced the certificate and key of edge1 "),
        "{second}"
    );
    assert!(!second.contains("edge2 ("), "{second}");
}

/// Every metric the endpoint serves is listed in the README, for whoever
/// writes the alerts.
#[test]
fn the_readme_lists_every_metric() {
    let root = env!("CARGO_MANIFEST_DIR");
    let m = tessera::cluster::metrics::Metrics::default();
    let text = m.render("n");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    assert!(names.len() >= 8, "{text}");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).expect("README");
    for n in names {
        assert!(readme.contains(&format!("`{n}`")), "README lacks {n}");
    }
}

/// A cluster file given to `tessera node`, a node's file given to `tessera
/// plan`, and a model size limit of 0 are refused saying what is wrong, not
/// with a field the parser did not know.
#[test]
fn swapped_files_and_a_zero_model_limit_are_refused_by_what_they_are() {
    let dir = cluster_dir("swapped");
    let cluster = dir.join("cluster.toml");
    // A one-edge cluster file with `address`.
    let one_edge = |address: &str| {
        let text = format!(
            "[[nodes]]\nname = \"edge0\"\ntier = \"edge\"\naddress = \"{address}\"\ngflops = 1.0\n"
        );
        std::fs::write(&cluster, text).expect("cluster file");
        cluster.clone()
    };
    // `tessera plan` on `file`, expected to fail: its stderr.
    let plan_fails = |file: &Path| {
        let out = Command::new(EXE)
            .args(["plan", "--model", "default", "--cluster"])
            .arg(file)
            .output()
            .expect("tessera plan");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = node_fails(&dir, &one_edge("127.0.0.1:7300"));
    assert!(err.contains("this is a cluster file"), "{err}");
    let file = node_file(&dir, "certs", "max_model_bytes = 0\n");
    let err = node_fails(&dir, &file);
    assert!(err.contains("must be above 0"), "{err}");
    let err = plan_fails(&node_file(&dir, "certs", ""));
    assert!(err.contains("this is a node's file"), "{err}");
    let err = plan_fails(&one_edge("127.0.0.1:0"));
    assert!(err.contains("port 0 names no node"), "{err}");
    let err = plan_fails(&one_edge("0.0.0.0:7300"));
    assert!(err.contains("names every interface"), "{err}");
}

/// A daemon that waits at start-up for a compute lock another process
/// holds says so, and a SIGTERM then stops it cleanly (exit 0): it was
/// silent, and killed by the signal (exit 143).
#[test]
fn a_daemon_waiting_for_the_compute_lock_says_so_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = cluster_dir("lock-wait");
    let lock_path = dir.join("compute.lock");
    let held = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .expect("lock file");
    held.lock().expect("held by the test");
    let file = node_file(
        &dir,
        "certs",
        "backend = \"cpu\"\ncompute_lock = \"compute.lock\"\n",
    );
    let mut child = Command::new(EXE)
        .args(["node", "--config"])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tessera node");
    let err = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(err).lines().map_while(Result::ok);
    let waiting = lines
        .by_ref()
        .find(|l| l.contains("compute lock: waiting for its holder"));
    assert!(waiting.is_some(), "the daemon did not say it waits");
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
    let rest: Vec<String> = lines.collect();
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status:?}: {rest:?}");
    assert!(
        rest.iter()
            .any(|l| l.contains("SIGTERM while the executor started")),
        "{rest:?}"
    );
    drop(held);
}
