//! A name server for tests: answers A queries for names it was given, over UDP on a
//! loopback port, with the DNS wire format of `hickory-proto`. The answers can be changed
//! while it runs, as a headless Service's records change when pods come and go.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The name server, serving until dropped.
pub struct FakeDns {
    addr: SocketAddr,
    records: Arc<Mutex<BTreeMap<String, Vec<Ipv4Addr>>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A name in the form the table keys it by: lowercase, with the root's dot.
fn key(name: &str) -> String {
    let mut name = name.to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

impl FakeDns {
    /// Starts answering on `127.0.0.1:0`.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = socket.local_addr()?;
        let records: Arc<Mutex<BTreeMap<String, Vec<Ipv4Addr>>>> = Arc::default();
        let table = Arc::clone(&records);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let reply = answer(&table, &query);
                if let Ok(bytes) = reply.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        Ok(Self {
            addr,
            records,
            task,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes `name` resolve to `ips` (none: the name does not exist).
    pub fn set(&self, name: &str, ips: &[Ipv4Addr]) {
        let mut records = self.records.lock().expect("fake DNS table");
        if ips.is_empty() {
            records.remove(&key(name));
        } else {
            records.insert(key(name), ips.to_vec());
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(table: &Mutex<BTreeMap<String, Vec<Ipv4Addr>>>, query: &Message) -> Message {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.authoritative = true;
    let mut found = false;
    for q in &query.queries {
        reply.add_query(q.clone());
        let ips = table
            .lock()
            .expect("fake DNS table")
            .get(&key(&q.name().to_ascii()))
            .cloned();
        if let Some(ips) = ips {
            found = true;
            if q.query_type() == RecordType::A {
                for ip in ips {
                    let name: Name = q.name().clone();
                    reply.add_answer(Record::from_rdata(name, 1, RData::A(A(ip))));
                }
            }
        }
    }
    if !found {
        reply.metadata.response_code = ResponseCode::NXDomain;
    }
    reply
}
