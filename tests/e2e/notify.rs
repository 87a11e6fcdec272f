//! Notifications: one affiliate's endpoint that hangs cannot hold up other
//! affiliates' notifications, gets at most a bounded number of calls at once,
//! and hears of every conversion once it answers again; a huge response body
//! is not read past the excerpt kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{AffiliateServer, TestApp};
use crate::on_both_databases;

/// An affiliate's server that holds every request open until released.
struct HangingServer {
    url: String,
    in_flight: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
    /// Requests that ended before release (the caller gave up).
    abandoned: Arc<AtomicUsize>,
    answered: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    release: tokio::sync::watch::Sender<bool>,
}

impl HangingServer {
    async fn start() -> HangingServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (release, released) = tokio::sync::watch::channel(false);
        let server = HangingServer {
            url,
            in_flight: Arc::default(),
            most_at_once: Arc::default(),
            abandoned: Arc::default(),
            answered: Arc::default(),
            release,
        };
        let (in_flight, most, abandoned, answered) = (
            server.in_flight.clone(),
            server.most_at_once.clone(),
            server.abandoned.clone(),
            server.answered.clone(),
        );
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (in_flight, most, abandoned, answered) = (
                    in_flight.clone(),
                    most.clone(),
                    abandoned.clone(),
                    answered.clone(),
                );
                let mut released = released.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    let mut rest = [0u8; 1];
                    let closed_early = tokio::select! {
                        _ = released.wait_for(|r| *r) => false,
                        // The client hung up (its timeout) before release.
                        _ = sock.read(&mut rest) => true,
                    };
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if closed_early {
                        abandoned.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    if let Some(cid) = request
                        .split("conv=")
                        .nth(1)
                        .and_then(|r| r.split([' ', '&']).next())
                    {
                        answered.lock().expect("lock").insert(cid.to_owned());
                    }
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        )
                        .await;
                });
            }
        });
        server
    }
}

async fn hanging_endpoint_does_not_hold_up_others(app: &TestApp) {
    const SLOW_CONVERSIONS: usize = 40;
    let slow = HangingServer::start().await;
    let fast = AffiliateServer::start(200).await;
    let a = app.quickstart_setup("slowco", &fast.url).await;
    // Slowco's affiliate answers through the hanging server.
    let (status, body) = app
        .api(
            reqwest::Method::PATCH,
            &format!("/api/v1/affiliates/{}", a.affiliate_id),
            Some(&a.tenant.key),
            Some(serde_json::json!({
                "postback_url": format!("{}/pb?conv={{conversion_id}}", slow.url)
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let b = app.quickstart_setup("fastco", &fast.url).await;

    let click = app.click_id("/api/r/slowco/pro?via=jane").await;
    for i in 0..SLOW_CONVERSIONS {
        let (status, body) = app
            .postback(&format!(
                "/api/postback/slowco/pro?secret={}&click_id={click}&amount=10&txn_id=s{i}",
                a.secret
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Wait until slowco's endpoint holds as many calls as it will get.
    let deadline = Instant::now() + Duration::from_secs(20);
    while slow.in_flight.load(Ordering::SeqCst)
        < trcker_services::pipeline::notify::PER_ENDPOINT_CONCURRENCY
    {
        assert!(
            Instant::now() < deadline,
            "slowco's endpoint was never called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Fastco's conversion is notified while slowco's calls still hang.
    let click_b = app.click_id("/api/r/fastco/pro?via=jane").await;
    let (status, _) = app
        .postback(&format!(
            "/api/postback/fastco/pro?secret={}&click_id={click_b}&amount=50&txn_id=f1",
            b.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = fast.next().await;
    assert!(got.contains(&format!("cid={click_b}")), "{got}");
    assert_eq!(
        slow.abandoned.load(Ordering::SeqCst),
        0,
        "fastco was notified only after slowco's calls timed out"
    );
    assert!(slow.in_flight.load(Ordering::SeqCst) > 0);
    assert_eq!(
        slow.most_at_once.load(Ordering::SeqCst),
        trcker_services::pipeline::notify::PER_ENDPOINT_CONCURRENCY,
        "calls in flight to one endpoint are bounded"
    );

    // Once slowco's endpoint answers, every conversion reaches it, once each.
    let _ = slow.release.send(true);
    let deadline = Instant::now() + Duration::from_secs(60);
    while slow.answered.lock().expect("lock").len() < SLOW_CONVERSIONS {
        assert!(
            Instant::now() < deadline,
            "slowco's affiliate heard of {} of {SLOW_CONVERSIONS} conversions",
            slow.answered.lock().expect("lock").len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
on_both_databases!(hanging_endpoint_does_not_hold_up_others);

/// The workers of the process that queued a job are told at once (on SQLite
/// that is how they wake; PostgreSQL also has LISTEN/NOTIFY).
async fn queued_jobs_are_announced_to_the_process_workers(app: &TestApp) {
    use trcker_services::pipeline::{attribute::AttributeJob, notify::NotifyJob};
    use trcker_storage::queue::Job;
    let services = app.services();
    let mut attribute = services.queue.pushed().subscribe(AttributeJob::QUEUE);
    let mut notify = services.queue.pushed().subscribe(NotifyJob::QUEUE);
    let fast = AffiliateServer::start(200).await;
    let a = app.quickstart_setup("pushco", &fast.url).await;
    let click = app.click_id("/api/r/pushco/pro?via=jane").await;
    let (status, body) = app
        .postback(&format!(
            "/api/postback/pushco/pro?secret={}&click_id={click}&amount=10&txn_id=p1",
            a.secret
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (name, rx) in [("attribute", &mut attribute), ("notify", &mut notify)] {
        tokio::time::timeout(Duration::from_secs(30), rx.changed())
            .await
            .unwrap_or_else(|_| panic!("no {name} job was announced"))
            .expect("queue dropped");
    }
    let got = fast.next().await;
    assert!(got.contains(&format!("cid={click}")), "{got}");
}
on_both_databases!(queued_jobs_are_announced_to_the_process_workers);

/// An affiliate's server that answers 200 with a 10 MB body, sent slowly
/// (reading it whole would take longer than a call may), and counts what it
/// managed to send before the caller hung up.
async fn huge_body_server() -> (String, Arc<AtomicUsize>, tokio::sync::oneshot::Receiver<()>) {
    const BODY: usize = 10 * 1024 * 1024;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    let counter = sent.clone();
    tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else {
            return;
        };
        let mut buf = vec![0u8; 4096];
        let _ = sock.read(&mut buf).await;
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BODY}\r\n\r\n");
        if sock.write_all(head.as_bytes()).await.is_ok() {
            let chunk = vec![b'x'; 64 * 1024];
            while counter.load(Ordering::SeqCst) < BODY {
                if sock.write_all(&chunk).await.is_err() {
                    break;
                }
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let _ = closed_tx.send(());
    });
    (url, sent, closed)
}

/// A response body is read up to the excerpt kept and no further: the
/// attempt is recorded at once, and the connection closed long before the
/// body's end.
async fn large_response_body_is_not_read_past_the_limit(app: &TestApp) {
    use trcker_services::pipeline::notify::EXCERPT_BYTES;
    use trcker_storage::entities::notification_attempt;
    use trcker_storage::sea_orm::EntityTrait;
    let (url, sent, closed) = huge_body_server().await;
    let s = app.quickstart_setup("bigco", &url).await;
    let (status, trace) = app
        .post(
            &format!("/api/v1/integrations/{}/test-fire", s.integration_id),
            &s.tenant.key,
            serde_json::json!({"affiliate_id": s.affiliate_id, "amount": "50"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{trace}");
    assert_eq!(trace["notifications"][0]["status"], "delivered", "{trace}");
    assert_eq!(
        trace["notifications"][0]["last_status_code"], 200,
        "{trace}"
    );
    tokio::time::timeout(Duration::from_secs(5), closed)
        .await
        .expect("the connection is dropped once the excerpt is read")
        .expect("server");
    let sent = sent.load(Ordering::SeqCst);
    assert!(
        sent < 10 * 1024 * 1024 / 2,
        "{sent} bytes of the body were sent before the caller hung up"
    );
    let attempts = notification_attempt::Entity::find()
        .all(&app.services().store.conn)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 1);
    let excerpt = attempts[0].response_excerpt.clone().unwrap_or_default();
    assert_eq!(
        excerpt.len(),
        EXCERPT_BYTES,
        "the excerpt is the body's start"
    );
    assert!(excerpt.bytes().all(|b| b == b'x'));
}
on_both_databases!(large_response_body_is_not_read_past_the_limit);
