//! The control plane client against the strict fake (`tests/stack/fake_apicp.py`), which
//! validates every request against the published OpenAPI contract.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use agent_core::control_plane::types::{
    AgentMetricsModel, ApiDocument, ApiMetrics, ApiStatus, ApiType, Heartbeat, Runtime, RuntimeTransactionMetrics,
};
use agent_core::control_plane::{ControlPlane, Credentials, CredentialsSource, HttpControlPlane, Upserted};
use agent_core::error::AgentError;
use serde_json::{Value, json};

const USER: &str = "agent";
const PASSWORD: &str = "fake-secret";

/// A fake control plane process, ended on drop.
struct Fake {
    child: Child,
    url: String,
}

impl Fake {
    fn start() -> Self {
        Self::spawn(&[])
    }

    /// The fake over HTTPS, with a certificate of a throwaway private CA whose root is written to
    /// `tls_dir/ca.pem`.
    fn start_tls(tls_dir: &std::path::Path) -> Self {
        Self::spawn(&["--tls-dir".as_ref(), tls_dir.as_os_str()])
    }

    fn spawn(extra: &[&std::ffi::OsStr]) -> Self {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = std::env::var_os("AGENT_TEST_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join(".local/venv/bin/python"));
        assert!(python.exists(), "{} is missing: run `make setup` first", python.display());
        let mut child = Command::new(python)
            .arg(repo.join("tests/stack/fake_apicp.py"))
            .args(["--port", "0", "--username", USER, "--password", PASSWORD])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the fake control plane");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let url = line.trim().rsplit(' ').next().unwrap().to_owned();
        assert!(url.starts_with("http"), "unexpected banner: {line}");
        Self { child, url }
    }

    fn client(&self, password: &str, timeout: Duration) -> HttpControlPlane {
        let credentials = Credentials { username: USER.into(), password: password.into() };
        HttpControlPlane::new(&self.url, credentials, timeout, None).unwrap()
    }

    /// The fake's test hooks under `/_fake/` (no authentication).
    async fn hook(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = reqwest::Client::new().request(method, format!("{}/_fake/{path}", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap().json().await.unwrap_or(Value::Null)
    }

    async fn state(&self) -> Value {
        self.hook(reqwest::Method::GET, "state", None).await
    }

    /// A fault on the next `count` matching requests.
    async fn fault(&self, method: &str, path: &str, status: u16, delay_ms: u64, count: u32) {
        let fault = json!({"method": method, "path": path, "status": status, "count": count, "delay_ms": delay_ms});
        self.hook(reqwest::Method::POST, "faults", Some(fault)).await;
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime(name: &str) -> Runtime {
    Runtime {
        id: Some(format!("111122223333_eu-west-1_{name}")),
        name: name.into(),
        description: Some("test runtime".into()),
        tags: vec!["aws".into()],
        runtime_type: "AWS_API_GATEWAY".into(),
        deployment_type: "PUBLIC_CLOUD".into(),
        region: Some("eu-west-1".into()),
        location: None,
        heartbeat_interval: Some(60),
        capacity: None,
    }
}

fn document(id: &str, name: &str) -> ApiDocument {
    ApiDocument {
        id: id.into(),
        name: name.into(),
        description: None,
        tags: vec!["team:core".into()],
        api_type: ApiType::Rest,
        status: Some(ApiStatus::Active),
        version: Some("dep1".into()),
        version_set_id: Some("api1".into()),
        runtime_api_id: Some("api1".into()),
        attributes: Default::default(),
        policies_count: Some(1),
    }
}

async fn registered(fake: &Fake, name: &str) -> (HttpControlPlane, String) {
    let client = fake.client(PASSWORD, Duration::from_secs(5));
    client.ensure_runtime_type("AWS_API_GATEWAY").await.unwrap();
    let id = client.register_runtime(&runtime(name)).await.unwrap();
    (client, id)
}

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("agent-{label}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn a_control_plane_behind_a_private_ca_is_trusted_through_the_ca_bundle_only() {
    let tls_dir = TempDir::new("private-ca");
    let fake = Fake::start_tls(&tls_dir.0);
    assert!(fake.url.starts_with("https://"), "{}", fake.url);
    let credentials = || Credentials { username: USER.into(), password: PASSWORD.into() };
    let ca_bundle = std::fs::read(tls_dir.0.join("ca.pem")).unwrap();

    // Verification is never off: the system's roots do not know the private CA.
    let untrusting = HttpControlPlane::new(&fake.url, credentials(), Duration::from_secs(5), None).unwrap();
    let error = untrusting.register_runtime(&runtime("prod")).await.unwrap_err();
    assert_eq!(error.error_type(), "ControlPlaneUnavailable", "{error}");
    assert!(!error.to_string().contains(PASSWORD), "{error}");

    // With APICP_CA_BUNDLE's roots the same server is trusted, over the one rustls/aws-lc-rs stack.
    let trusting = HttpControlPlane::new(&fake.url, credentials(), Duration::from_secs(5), Some(&ca_bundle)).unwrap();
    trusting.ensure_runtime_type("AWS_API_GATEWAY").await.unwrap();
    let id = trusting.register_runtime(&runtime("prod")).await.unwrap();
    assert_eq!(id, "111122223333_eu-west-1_prod");
}

#[tokio::test]
async fn a_ca_bundle_that_is_not_pem_is_a_configuration_error() {
    let tls_dir = TempDir::new("broken-bundles");
    let fake = Fake::start_tls(&tls_dir.0);
    let key = std::fs::read(tls_dir.0.join("server-key.pem")).unwrap();
    let ca = std::fs::read_to_string(tls_dir.0.join("ca.pem")).unwrap();
    // The CA's certificate with its body cut short: still PEM, no longer a certificate.
    let body_start = ca.find('\n').unwrap() + 1;
    let truncated = format!("{}{}\n-----END CERTIFICATE-----\n", &ca[..body_start], &ca[body_start..body_start + 64]);
    let broken: [(&str, &[u8]); 4] = [
        ("bad base64", b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"),
        ("a private key", &key),
        ("an empty file", b""),
        ("a truncated certificate", truncated.as_bytes()),
    ];
    for (what, bundle) in broken {
        let credentials = Credentials { username: USER.into(), password: PASSWORD.into() };
        let error = match HttpControlPlane::new(&fake.url, credentials, Duration::from_secs(5), Some(bundle)) {
            Err(error) => error,
            // Accepted at build: the first request must not pass as an outage either.
            Ok(client) => client.register_runtime(&runtime("prod")).await.unwrap_err(),
        };
        assert_eq!(error.error_type(), "InvalidConfig", "{what}: {error}");
        assert!(error.to_string().contains("APICP_CA_BUNDLE"), "{what}: {error}");
    }
}

#[tokio::test]
async fn registration_answers_the_same_runtime_on_201_and_409() {
    let fake = Fake::start();
    let client = fake.client(PASSWORD, Duration::from_secs(5));
    client.ensure_runtime_type("AWS_API_GATEWAY").await.unwrap();
    client.ensure_runtime_type("AWS_API_GATEWAY").await.unwrap();
    let first = client.register_runtime(&runtime("prod")).await.unwrap();
    let again = client.register_runtime(&runtime("prod")).await.unwrap();
    assert_eq!(first, "111122223333_eu-west-1_prod");
    assert_eq!(again, first);
    let state = fake.state().await;
    assert_eq!(state["runtimes"].as_object().unwrap().len(), 1);
    assert_eq!(state["runtimeTypes"].as_array().unwrap().len(), 1, "the type is created once");
}

#[tokio::test]
async fn a_request_outside_the_contract_is_invalid_input_with_the_services_details() {
    let fake = Fake::start();
    let (client, _) = registered(&fake, "prod").await;
    let mut too_long = runtime("dev");
    too_long.name = "n".repeat(51);
    let error = client.register_runtime(&too_long).await.unwrap_err();
    assert_eq!(error.error_type(), "InvalidInput");
    assert!(error.to_string().contains("name"), "{error}");
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized_and_never_echoed() {
    let fake = Fake::start();
    let client = fake.client("wrong-password", Duration::from_secs(5));
    let error = client.register_runtime(&runtime("prod")).await.unwrap_err();
    assert_eq!(error.error_type(), "Unauthorized");
    let message = error.to_string();
    assert!(!message.contains("wrong-password"), "{message}");
    assert_eq!(
        message,
        format!(
            "control plane refused the credentials: POST {}/api/assetcatalog/v2/runtimes answered 401 for user \"{USER}\"",
            fake.url
        )
    );
}

#[tokio::test]
async fn a_metrics_post_whose_answer_is_lost_is_told_apart_from_one_never_sent() {
    let fake = Fake::start();
    let (_, runtime_id) = registered(&fake, "prod").await;
    let client = fake.client(PASSWORD, Duration::from_millis(500));
    let metrics = AgentMetricsModel {
        timestamp: 1_700_000_000_000,
        runtime_transaction_metrics: RuntimeTransactionMetrics {
            api_metrics: ApiMetrics::default(),
            metrics_by_status_code: Default::default(),
        },
        api_transaction_metrics_list: vec![],
    };
    // The fake stores the report, then answers after the client has given up.
    fake.fault("POST", "/metrics", 0, 1500, 1).await;
    let lost = client.send_metrics(&runtime_id, &metrics).await.unwrap_err();
    assert!(matches!(lost, AgentError::DeliveryUnknown(_)), "{lost:?}");
    assert_eq!(lost.error_type(), "ControlPlaneUnavailable");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(fake.state().await["metrics"].as_array().unwrap().len(), 1, "stored although unanswered");

    // Nothing listens: the request provably never left.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let credentials = Credentials { username: USER.into(), password: PASSWORD.into() };
    let unreachable = HttpControlPlane::new(&url, credentials, Duration::from_millis(500), None).unwrap();
    let refused = unreachable.send_metrics(&runtime_id, &metrics).await.unwrap_err();
    assert!(matches!(refused, AgentError::ControlPlaneUnavailable(_)), "{refused:?}");
}

#[tokio::test]
async fn upsert_creates_then_updates_and_delete_is_idempotent() {
    let fake = Fake::start();
    let (client, runtime_id) = registered(&fake, "prod").await;
    assert_eq!(client.upsert_api(&runtime_id, &document("api1_prod", "pets")).await.unwrap(), Upserted::Created);
    assert_eq!(client.upsert_api(&runtime_id, &document("api1_prod", "pets v2")).await.unwrap(), Upserted::Updated);
    let state = fake.state().await;
    assert_eq!(state["apis"][&runtime_id]["api1_prod"]["name"], "pets v2");
    assert!(client.delete_api(&runtime_id, "api1_prod").await.unwrap());
    assert!(!client.delete_api(&runtime_id, "api1_prod").await.unwrap(), "already gone is not an error");
}

/// A secret that holds `passwords[n]` at its n-th read (the last one from then on).
struct RotatingSecret {
    passwords: Vec<&'static str>,
    reads: Arc<AtomicUsize>,
}

impl CredentialsSource for RotatingSecret {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = agent_core::Result<Credentials>> + Send + '_>> {
        let read = self.reads.fetch_add(1, Ordering::SeqCst).min(self.passwords.len() - 1);
        let credentials = Credentials { username: USER.into(), password: self.passwords[read].into() };
        Box::pin(async move { Ok(credentials) })
    }
}

#[tokio::test]
async fn a_rotated_secret_is_read_again_after_a_401_and_the_request_repeated_once() {
    let fake = Fake::start();
    let reads = Arc::new(AtomicUsize::new(0));
    let secret = RotatingSecret { passwords: vec!["before-rotation", PASSWORD], reads: reads.clone() };
    let client = HttpControlPlane::new(&fake.url, secret, Duration::from_secs(5), None).unwrap();

    client.ensure_runtime_type("AWS_API_GATEWAY").await.unwrap();
    client.register_runtime(&runtime("prod")).await.unwrap();

    assert_eq!(reads.load(Ordering::SeqCst), 2, "read at first use and once after the 401, then kept");
}

#[tokio::test]
async fn credentials_refused_again_after_a_reread_are_unauthorized_without_a_repeat() {
    let fake = Fake::start();
    let reads = Arc::new(AtomicUsize::new(0));
    let secret = RotatingSecret { passwords: vec!["wrong"], reads: reads.clone() };
    let client = HttpControlPlane::new(&fake.url, secret, Duration::from_secs(5), None).unwrap();

    let error = client.ensure_runtime_type("AWS_API_GATEWAY").await.unwrap_err();

    assert_eq!(error.error_type(), "Unauthorized");
    assert_eq!(reads.load(Ordering::SeqCst), 2);
    let requests = fake.hook(reqwest::Method::GET, "requests", None).await;
    assert_eq!(requests.as_array().unwrap().len(), 1, "unchanged credentials are not sent again");
}

#[tokio::test]
async fn a_runtime_type_created_by_a_concurrent_registration_is_taken_as_it_is() {
    let fake = Fake::start();
    // The first creation waits before it is processed, so the second one lists no type and creates it first: the
    // first is then answered 400 (a duplicate name) and finds the type there.
    fake.fault("POST", "/runtimes/types$", 0, 600, 1).await;
    let (first, second) =
        (fake.client(PASSWORD, Duration::from_secs(5)), fake.client(PASSWORD, Duration::from_secs(5)));
    let (slow, fast) = tokio::join!(first.ensure_runtime_type("AWS_API_GATEWAY"), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        second.ensure_runtime_type("AWS_API_GATEWAY").await
    });

    fast.unwrap();
    slow.unwrap();
    let requests = fake.hook(reqwest::Method::GET, "requests", None).await;
    let posts = requests.as_array().unwrap().iter().filter(|r| r["method"] == "POST").count();
    assert_eq!(posts, 2, "both created the type: {requests}");
    assert_eq!(fake.state().await["runtimeTypes"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn listing_follows_every_page() {
    let fake = Fake::start();
    let (client, runtime_id) = registered(&fake, "prod").await;
    for i in 0..520 {
        client.upsert_api(&runtime_id, &document(&format!("api{i:04}_prod"), "pets")).await.unwrap();
    }
    let mut ids = client.list_api_ids(&runtime_id).await.unwrap();
    ids.sort();
    let expected: Vec<String> = (0..520).map(|i| format!("api{i:04}_prod")).collect();
    // The fake caps pages at 100, below the 500 asked for, as the contract allows.
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn heartbeats_and_metrics_are_accepted_for_registered_runtimes_only() {
    let fake = Fake::start();
    let (client, runtime_id) = registered(&fake, "prod").await;
    client
        .send_heartbeats(&[Heartbeat { runtime_id: runtime_id.clone(), created: 1_700_000_000_000, active: 1 }])
        .await
        .unwrap();
    let metrics = AgentMetricsModel {
        timestamp: 1_700_000_000_000,
        runtime_transaction_metrics: RuntimeTransactionMetrics {
            api_metrics: ApiMetrics { transaction_count: 3.0, ..ApiMetrics::default() },
            metrics_by_status_code: Default::default(),
        },
        api_transaction_metrics_list: vec![],
    };
    client.send_metrics(&runtime_id, &metrics).await.unwrap();
    let state = fake.state().await;
    assert_eq!(state["heartbeats"].as_array().unwrap().len(), 1);
    assert_eq!(state["metrics"][0]["body"]["runtimeTransactionMetrics"]["apiMetrics"]["transactionCount"], 3.0);
    let unknown = Heartbeat { runtime_id: "nobody".into(), created: 1, active: 1 };
    assert_eq!(client.send_heartbeats(&[unknown]).await.unwrap_err().error_type(), "InvalidInput");
}

#[tokio::test]
async fn server_errors_throttling_and_timeouts_are_retryable() {
    let fake = Fake::start();
    let (_, runtime_id) = registered(&fake, "prod").await;
    let client = fake.client(PASSWORD, Duration::from_millis(500));
    let cases = [(503, 0, "ControlPlaneUnavailable"), (429, 0, "Throttled"), (0, 1500, "ControlPlaneUnavailable")];
    for (status, delay_ms, expected) in cases {
        // Three attempts within the task, then the error is the state machine's to retry.
        fake.fault("POST", "/apis", status, delay_ms, 3).await;
        let error = client.upsert_api(&runtime_id, &document("api1_prod", "pets")).await.unwrap_err();
        assert_eq!(error.error_type(), expected, "status {status} delay {delay_ms}");
        assert!(error.is_retryable());
        fake.fault("POST", "/apis", status, delay_ms, 2).await;
        client.upsert_api(&runtime_id, &document("api1_prod", "pets")).await.expect("the third attempt passes");
    }
}
