//! Identifiers. Every id is a short type prefix and a UUIDv7, so ids sort by creation time; the
//! merge rule ("the older profile survives") leans on that order.

use uuid::Uuid;

/// A new time-ordered id with a prefix such as `prf` or `ws`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

/// A new time-ordered id that is also a capability (a delivery's id names its unsubscribe, open and
/// click links): the millisecond as 48 bits, then 80 random bits. A UUIDv7 from `uuid` keeps a
/// counter in its random part within a millisecond, which would leave a neighbour's id about 2^32
/// guesses from one's own; here ids of one millisecond share nothing but the time.
pub fn new_sortable_secret_id(prefix: &str) -> String {
    use rand::RngCore;
    let millis = u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or_default();
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    rand::rng().fill_bytes(&mut bytes[6..]);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// A new random id with a prefix; for values that must not reveal when they were made.
pub fn new_random_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation() {
        let first = new_id("prf");
        let second = new_id("prf");
        assert!(first < second, "{first} should sort before {second}");
        assert!(first.starts_with("prf_"));
        assert_eq!(first.len(), 4 + 32);
    }

    #[test]
    fn secret_ids_sort_by_millisecond_and_share_nothing_else() {
        let ids: Vec<String> = (0..1000).map(|_| new_sortable_secret_id("dlv")).collect();
        assert!(ids.iter().all(|id| id.len() == 4 + 32 && id.starts_with("dlv_")));
        assert!(ids.windows(2).all(|pair| pair[0][..16] <= pair[1][..16]), "time first");
        // Ids of one millisecond differ in their random 80 bits, not by a counter.
        let (a, b) = (&ids[0], &ids[1]);
        if a[..16] == b[..16] {
            let differing = a[16..].chars().zip(b[16..].chars()).filter(|(x, y)| x != y).count();
            assert!(differing > 4, "{a} {b}");
        }
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
