//! Brokers of a test's own, so it can kill and restart them without disturbing other tests:
//! Apache Kafka nodes (the reference, `scripts/dev/kafka/node.sh`: one node, or a KRaft cluster of
//! three) or, with `DP_BROKER=tansu`, a tansu 0.6.0 broker on sqlite storage.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use crate::common::free_port;

/// Which broker the tests run against (`DP_BROKER`, Kafka unless it says `tansu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Kafka,
    Tansu,
}

pub fn broker_kind() -> BrokerKind {
    match std::env::var("DP_BROKER").as_deref() {
        Ok("tansu") => BrokerKind::Tansu,
        _ => BrokerKind::Kafka,
    }
}

struct Node {
    id: usize,
    dir: PathBuf,
    port: u16,
    controller_port: u16,
    child: Option<Child>,
}

/// One broker, or a cluster of Kafka nodes, on free loopback ports, with its data in a
/// temporary directory that survives kills (so a restarted node recovers its log).
pub struct PrivateBroker {
    kind: BrokerKind,
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    voters: String,
    cluster_id: String,
}

impl PrivateBroker {
    /// One broker of the configured kind.
    pub async fn start() -> Self {
        Self::start_nodes(broker_kind(), 1).await
    }

    /// A KRaft cluster of `n` Kafka nodes, each broker and controller, replicating everything
    /// `n` ways (`min.insync.replicas` 2 from three nodes on). Kafka only.
    pub async fn cluster(n: usize) -> Self {
        Self::start_nodes(BrokerKind::Kafka, n).await
    }

    async fn start_nodes(kind: BrokerKind, n: usize) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dp-broker-")
            .tempdir()
            .unwrap();
        let nodes: Vec<Node> = (1..=n)
            .map(|id| Node {
                id,
                dir: dir.path().join(format!("node{id}")),
                port: free_port(),
                controller_port: free_port(),
                child: None,
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut b = PrivateBroker {
            kind,
            _dir: dir,
            nodes,
            voters,
            cluster_id: uuid::Uuid::new_v4().simple().to_string()[..22].to_string(),
        };
        for i in 0..n {
            b.spawn_node(i);
        }
        b.wait_ready(n, Duration::from_secs(90)).await;
        b
    }

    /// Bootstrap servers: every node.
    pub fn addr(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The node whose broker id is `id` (Kafka node ids are 1..=n).
    pub fn node_index(&self, id: i32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id as i32 == id)
            .unwrap_or_else(|| panic!("no node with id {id}"))
    }

    fn spawn_node(&mut self, i: usize) {
        std::fs::create_dir_all(&self.nodes[i].dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.nodes[i].dir.join("broker.log"))
            .unwrap();
        let node = &self.nodes[i];
        let mut c = match self.kind {
            BrokerKind::Kafka => {
                let mut c = Command::new(kafka_node_script());
                c.arg("run")
                    .arg(&node.dir)
                    .args(["--node-id", &node.id.to_string()])
                    .args(["--port", &node.port.to_string()])
                    .args(["--controller-port", &node.controller_port.to_string()])
                    .args(["--voters", &self.voters])
                    .args(["--cluster-id", &self.cluster_id])
                    .args(["--replication", &self.nodes.len().to_string()])
                    .args(["--heap", "512m"]);
                c
            }
            BrokerKind::Tansu => {
                let url = format!("tcp://127.0.0.1:{}", node.port);
                let mut c = Command::new(tansu_bin());
                c.args(["broker", "--listener-url", &url])
                    .args(["--advertised-listener-url", &url])
                    .args(["--storage-engine", "sqlite://tansu.db"])
                    // tansu resolves sqlite paths against its working directory.
                    .current_dir(&node.dir)
                    .env("NO_COLOR", "1");
                c
            }
        };
        let child = c
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.nodes[i].child = Some(child);
    }

    /// Wait until a metadata request answers with at least `brokers` live brokers.
    async fn wait_ready(&self, brokers: usize, within: Duration) {
        let addr = self.addr();
        let deadline = Instant::now() + within;
        loop {
            let a = addr.clone();
            let live = tokio::task::spawn_blocking(move || live_brokers(&a))
                .await
                .unwrap();
            if live >= brokers {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "private broker: {live} of {brokers} node(s) up after {within:?}\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `kill -9` node `i` (its data stays).
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `kill -9` every node.
    pub fn kill(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }

    /// Start node `i` again on its data and ports, and wait until every node is up.
    pub async fn restart_node(&mut self, i: usize) {
        self.spawn_node(i);
        self.wait_ready(self.nodes.len(), Duration::from_secs(90))
            .await;
    }

    /// Start every killed node again and wait until all are up.
    pub async fn restart(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].child.is_none() {
                self.spawn_node(i);
            }
        }
        self.wait_ready(self.nodes.len(), Duration::from_secs(90))
            .await;
    }

    /// The last lines of every node's log (for failure messages).
    pub fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(n.dir.join("broker.log")).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- node {} ---\n{}",
                    n.id,
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How many brokers a metadata request to `addr` lists (0 if none answers).
fn live_brokers(addr: &str) -> usize {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("log_level", "0")
        .create()
    {
        Ok(c) => c,
        Err(_) => return 0,
    };
    consumer
        .fetch_metadata(None, Duration::from_secs(2))
        .map(|md| md.brokers().len())
        .unwrap_or(0)
}

fn kafka_node_script() -> PathBuf {
    std::env::var("DP_KAFKA_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dev/kafka/node.sh"))
}

fn tansu_bin() -> PathBuf {
    let path = std::env::var("DP_TANSU_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(&std::env::var("HOME").unwrap_or_default())
                .join(".cache/dicom-pipeline/tools/tansu-0.6.0/bin/tansu")
        });
    assert!(
        path.is_file(),
        "tansu binary not found at {}: run through DP_BROKER=tansu scripts/test.sh (it sets DP_TANSU_BIN)",
        path.display()
    );
    path
}
