//! What Trcker's benchmark (`trcker-bench`) and fault run (`trcker-chaos`)
//! share: seeding a tenant over the admin API, and a local affiliate server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Seeded {
    /// The tenant's API key.
    pub key: String,
    /// The integration's postback secret.
    pub secret: String,
}

/// How the seeded affiliate hears of her conversions.
#[derive(Clone, Copy)]
pub enum Notify<'a> {
    /// Not at all.
    Nothing,
    /// A postback URL template, called by GET.
    Postback(&'a str),
    /// A signed webhook (a JSON event POSTed) to this URL.
    Webhook(&'a str),
}

/// Through the admin API (operator token `operator`): a tenant `tenant` with
/// program `pro` paying `commission`, affiliate `jane` (told of each conversion
/// as `notify` says) and an integration.
pub async fn seed(
    http: &reqwest::Client,
    base: &str,
    operator: &str,
    tenant: &str,
    commission: Value,
    notify: Notify<'_>,
) -> Seeded {
    let post = |path: &str, token: &str, body: Value| {
        let req = http
            .post(format!("{base}{path}"))
            .bearer_auth(token)
            .json(&body);
        async move {
            req.send()
                .await
                .expect("seed")
                .json::<Value>()
                .await
                .expect("seed json")
        }
    };
    let tenant = post(
        "/api/v1/tenants",
        operator,
        json!({"name": tenant, "slug": tenant}),
    )
    .await;
    let key = tenant["api_key"].as_str().expect("api key").to_owned();
    let program = post(
        "/api/v1/programs",
        &key,
        json!({"name": "Pro", "slug": "pro", "destination_url": "https://shop.example/pro",
               "commission": commission}),
    )
    .await;
    let mut jane = json!({"name": "Jane", "email": "jane@example.com", "slug": "jane"});
    if let Notify::Postback(url) = notify {
        jane["postback_url"] = json!(url);
    }
    let jane = post("/api/v1/affiliates", &key, jane).await;
    if let Notify::Webhook(url) = notify {
        let endpoint = post(
            "/api/v1/endpoints",
            &key,
            json!({"affiliate_id": jane["id"], "kind": "webhook", "url": url}),
        )
        .await;
        assert!(
            endpoint["secret"].is_string(),
            "webhook endpoint not made: {endpoint}"
        );
    }
    let integration = post(
        "/api/v1/integrations",
        &key,
        json!({"name": "Shop", "program_id": program["id"]}),
    )
    .await;
    Seeded {
        key,
        secret: integration["secret"].as_str().expect("secret").to_owned(),
    }
}

/// What an affiliate's server keys the calls it receives by.
#[derive(Clone, Copy)]
pub enum Key {
    /// A query parameter of the URL (`txn`, `conv`…): a postback.
    Query(&'static str),
    /// A string field of the JSON body (`txn_id`…): a webhook's event.
    JsonField(&'static str),
}

/// A local HTTP/1.1 server standing in for the affiliate: answers 200 on
/// keep-alive connections (reading any body its `content-length` announces),
/// counts the calls, and notes when each value of its key first arrived.
pub struct Affiliate {
    pub url: String,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    calls: Arc<AtomicU64>,
}

impl Affiliate {
    /// Starts the listener; `key` is what it keys calls by.
    pub async fn start(key: Key) -> Affiliate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let calls: Arc<AtomicU64> = Arc::default();
        let (record, count) = (seen.clone(), calls.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve_connection(sock, key, record.clone(), count.clone()));
            }
        });
        Affiliate { url, seen, calls }
    }

    /// Calls received, repeats included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Distinct values of the parameter received.
    pub fn distinct(&self) -> usize {
        self.seen.lock().expect("seen").len()
    }

    pub fn count_with_prefix(&self, prefix: &str) -> usize {
        let seen = self.seen.lock().expect("seen");
        seen.keys().filter(|k| k.starts_with(prefix)).count()
    }

    pub fn arrival(&self, txn: &str) -> Option<Instant> {
        self.seen.lock().expect("seen").get(txn).copied()
    }
}

async fn serve_connection(
    mut sock: tokio::net::TcpStream,
    key: Key,
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    calls: Arc<AtomicU64>,
) {
    let (pattern, ends): (String, &[char]) = match key {
        Key::Query(param) => (format!("{param}="), &[' ', '&']),
        Key::JsonField(field) => (format!("\"{field}\":\""), &['"']),
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // One request per loop: its head ends at the blank line, its body
        // after as many bytes as the head announces.
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let arrived = Instant::now();
        calls.fetch_add(1, Ordering::Relaxed);
        let request = match key {
            Key::Query(_) => head,
            Key::JsonField(_) => {
                String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned()
            }
        };
        buf.drain(..head_end + length);
        if let Some(value) = request
            .split(pattern.as_str())
            .nth(1)
            .and_then(|r| r.split(ends).next())
        {
            seen.lock()
                .expect("seen")
                .entry(value.to_owned())
                .or_insert(arrived);
        }
        if sock
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await
            .is_err()
        {
            return;
        }
    }
}
