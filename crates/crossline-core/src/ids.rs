//! Identifiers. Every id is a short type prefix and a UUIDv7, so ids sort by creation time; the
//! merge rule ("the older profile survives") leans on that order.

use uuid::Uuid;

/// A new time-ordered id with a prefix such as `prf` or `ws`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
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
}
