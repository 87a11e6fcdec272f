//! Notification events and Standard Webhooks signatures.
//!
//! A webhook is signed per the Standard Webhooks specification: the
//! signature is `v1,` and the base64 of HMAC-SHA256 over
//! `{webhook-id}.{webhook-timestamp}.{body}`, keyed by the secret's bytes
//! (the secret is shown as `whsec_` and their base64). During a rotation's
//! overlap both secrets sign and `webhook-signature` carries both,
//! separated by a space.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::status::ConversionStatus;

/// What an endpoint is told of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// A conversion was made (with whatever status it was made with).
    Created,
    /// A pending conversion was approved.
    Approved,
    /// A pending conversion was rejected.
    Rejected,
    /// An approved conversion was refunded or charged back.
    Reversed,
    /// A payout covering the conversion's commission was paid.
    Paid,
}

impl Event {
    pub const ALL: [Event; 5] = [
        Event::Created,
        Event::Approved,
        Event::Rejected,
        Event::Reversed,
        Event::Paid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::Created => "created",
            Event::Approved => "approved",
            Event::Rejected => "rejected",
            Event::Reversed => "reversed",
            Event::Paid => "paid",
        }
    }

    /// The webhook `type` of the event.
    pub fn webhook_type(self) -> &'static str {
        match self {
            Event::Created => "conversion.created",
            Event::Approved => "conversion.approved",
            Event::Rejected => "conversion.rejected",
            Event::Reversed => "conversion.reversed",
            Event::Paid => "conversion.paid",
        }
    }

    pub fn parse(s: &str) -> Option<Event> {
        Event::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The event of a conversion reaching `status`, given the status it was
    /// made with.
    pub fn of_status(status: ConversionStatus, created: Option<ConversionStatus>) -> Event {
        if created == Some(status) || status == ConversionStatus::Pending {
            return Event::Created;
        }
        match status {
            ConversionStatus::Pending | ConversionStatus::Approved => Event::Approved,
            ConversionStatus::Rejected => Event::Rejected,
            ConversionStatus::Refunded | ConversionStatus::Chargeback => Event::Reversed,
        }
    }
}

/// A retry delay of about `base_secs`: within 10% of it either way, so
/// that the retries of deliveries that failed together spread out.
pub fn jittered(base_secs: i64) -> i64 {
    use rand::Rng;
    let spread = base_secs / 10;
    if spread == 0 {
        return base_secs;
    }
    base_secs + rand::rng().random_range(-spread..=spread)
}

/// A set of events, stored as their names joined by commas.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Events(Vec<Event>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event '{0}' (one of created, approved, rejected, reversed, paid)")]
pub struct UnknownEvent(pub String);

impl Events {
    pub fn all() -> Events {
        Events(Event::ALL.to_vec())
    }

    pub fn of(events: impl IntoIterator<Item = Event>) -> Events {
        let mut v: Vec<Event> = events.into_iter().collect();
        v.sort();
        v.dedup();
        Events(v)
    }

    /// The events a new postback endpoint is told of unless it says: every
    /// event when its template carries `{status}` (or a reversal template is
    /// set), else only `created`, so that a tracker that cannot tell a
    /// refund from a sale never hears of a refund as another sale.
    pub fn default_for_postback(template: &str, reversal_template: bool) -> Events {
        if template.contains("{status}") || reversal_template {
            Events::all()
        } else {
            Events::of([Event::Created])
        }
    }

    pub fn parse_names<S: AsRef<str>>(names: &[S]) -> Result<Events, UnknownEvent> {
        let mut v = Vec::new();
        for n in names {
            let n = n.as_ref().trim();
            v.push(Event::parse(n).ok_or_else(|| UnknownEvent(n.to_owned()))?);
        }
        Ok(Events::of(v))
    }

    /// Reads the stored form; unknown names (none are written) are skipped.
    pub fn from_stored(s: &str) -> Events {
        Events::of(s.split(',').filter_map(|n| Event::parse(n.trim())))
    }

    pub fn to_stored(&self) -> String {
        self.names().join(",")
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|e| e.as_str()).collect()
    }

    pub fn contains(&self, e: Event) -> bool {
        self.0.contains(&e)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A webhook secret: 32 random-looking bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret([u8; 32]);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(..)")
    }
}

impl WebhookSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> WebhookSecret {
        WebhookSecret(bytes)
    }

    /// The secret of one endpoint: an HMAC of its id and salt under a key
    /// only Trcker's processes hold.
    pub fn derive(master: &str, endpoint_id: &str, salt: &str) -> WebhookSecret {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(master.as_bytes()).expect("HMAC takes any key length");
        mac.update(format!("trcker webhook secret\0{endpoint_id}\0{salt}").as_bytes());
        WebhookSecret(mac.finalize().into_bytes().into())
    }

    /// As shown to the receiver: `whsec_` and the bytes' base64.
    pub fn reveal(&self) -> String {
        format!("whsec_{}", STANDARD.encode(self.0))
    }

    /// The `v1,` signature of one attempt's message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &str) -> String {
        sign_with(&self.0, msg_id, timestamp, body)
    }
}

fn sign_with(key: &[u8], msg_id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The `webhook-signature` header of an attempt: one signature per secret
/// that signs now (the current one, and the previous during an overlap).
pub fn signature_header(
    secrets: &[&WebhookSecret],
    msg_id: &str,
    timestamp: i64,
    body: &str,
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector published with the Standard Webhooks specification.
    #[test]
    fn signs_the_specification_test_vector() {
        let key = STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        assert_eq!(
            sign_with(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn retry_delays_spread_within_ten_percent() {
        let delays: std::collections::BTreeSet<i64> = (0..200).map(|_| jittered(3600)).collect();
        assert!(
            delays.iter().all(|d| (3240..=3960).contains(d)),
            "{delays:?}"
        );
        assert!(delays.len() > 20, "spread out: {delays:?}");
        assert_eq!(jittered(5), 5);
    }

    #[test]
    fn events_of_statuses() {
        use ConversionStatus::*;
        assert_eq!(Event::of_status(Approved, Some(Approved)), Event::Created);
        assert_eq!(Event::of_status(Pending, Some(Pending)), Event::Created);
        assert_eq!(Event::of_status(Approved, Some(Pending)), Event::Approved);
        assert_eq!(Event::of_status(Rejected, Some(Pending)), Event::Rejected);
        assert_eq!(Event::of_status(Refunded, Some(Approved)), Event::Reversed);
        assert_eq!(
            Event::of_status(Chargeback, Some(Approved)),
            Event::Reversed
        );
        // Made refunded (a refund that arrived first) is its creation.
        assert_eq!(Event::of_status(Refunded, Some(Refunded)), Event::Created);
    }

    #[test]
    fn status_blind_templates_hear_only_of_creation() {
        assert_eq!(
            Events::default_for_postback("https://t.example/pb?c={click_id}", false).names(),
            ["created"]
        );
        assert_eq!(
            Events::default_for_postback("https://t.example/pb?s={status}", false),
            Events::all()
        );
        assert_eq!(
            Events::default_for_postback("https://t.example/pb?c={click_id}", true),
            Events::all()
        );
        let e = Events::parse_names(&["reversed", "created", "created"]).expect("events");
        assert_eq!(e.to_stored(), "created,reversed");
        assert_eq!(Events::from_stored("created,reversed"), e);
        assert!(Events::parse_names(&["refunded"]).is_err());
    }
}
